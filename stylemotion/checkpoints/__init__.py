"""Every generator weight format. The restricted unpickler lives here (network_pickle.py) and only here."""
from .builtin import BUILTIN_CONFIGS, random_generator
from .loader import WRITABLE_FORMATS, CheckpointInfo, detect_format, load_generator, save_generator
from .network_pickle import RestrictedUnpickler
from .official import generator_from_state_dict, infer_config, state_dict_from_generator
from .rosinality import official_from_rosinality, rosinality_from_official

__all__ = [
    "BUILTIN_CONFIGS", "WRITABLE_FORMATS", "CheckpointInfo", "RestrictedUnpickler", "detect_format",
    "generator_from_state_dict", "infer_config", "load_generator", "official_from_rosinality", "random_generator",
    "rosinality_from_official", "save_generator", "state_dict_from_generator",
]
