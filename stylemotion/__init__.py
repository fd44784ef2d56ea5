"""stylemotion: facial-expression videos from a StyleGAN2 latent space.

Imports nothing optional: no GPU, TensorRT, onnxruntime or Ray is needed to ``import stylemotion``.
"""
from .checkpoints import BUILTIN_CONFIGS, CheckpointInfo, detect_format, load_generator, save_generator
from .errors import (CheckpointError, ConfigError, ExportError, InputError, MissingDependencyError, ShapeError,
                     StylemotionError, UnsafeCheckpointError)
from .engines import Engine, EngineInfo, open_engine
from .models.stylegan2 import Generator, GeneratorConfig
from .pipeline.directions import Directions, load_directions
from .runtime import EngineOptions, Frame, StreamConfig, Streamer, StreamSettings, StreamSource, stream

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_CONFIGS", "CheckpointError", "CheckpointInfo", "ConfigError", "ExportError", "Generator", "GeneratorConfig",
    "InputError", "MissingDependencyError", "ShapeError", "StylemotionError", "UnsafeCheckpointError",
    "__version__", "detect_format", "load_generator", "save_generator",
    "Directions", "Engine", "EngineInfo", "EngineOptions", "Frame", "StreamConfig", "StreamSettings", "StreamSource",
    "Streamer", "load_directions", "open_engine", "stream",
]
