"""Engines: one interface (``run(ws) -> images``, ``info``) over PyTorch, ONNX Runtime and TensorRT."""
from .base import Engine, EngineInfo
from .factory import open_engine

__all__ = ["Engine", "EngineInfo", "open_engine"]
