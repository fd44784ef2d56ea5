"""stylemotion: facial-expression videos from a StyleGAN2 latent space.

Imports nothing optional: no GPU, TensorRT, onnxruntime or Ray is needed to ``import stylemotion``.
"""
from .checkpoints import BUILTIN_CONFIGS, CheckpointInfo, detect_format, load_generator, save_generator
from .errors import (CheckpointError, ConfigError, ExportError, InputError, MissingDependencyError, ShapeError,
                     StylemotionError, UnsafeCheckpointError)
from .models.stylegan2 import Generator, GeneratorConfig

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_CONFIGS", "CheckpointError", "CheckpointInfo", "ConfigError", "ExportError", "Generator", "GeneratorConfig",
    "InputError", "MissingDependencyError", "ShapeError", "StylemotionError", "UnsafeCheckpointError",
    "__version__", "detect_format", "load_generator", "save_generator",
]
