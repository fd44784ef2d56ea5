"""stylemotion's own generator format: safetensors (official key layout) with the JSON config in its metadata."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError
from ..models.stylegan2 import GeneratorConfig

FORMAT_NAME = "stylemotion.generator"
FORMAT_VERSION = "1"


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Tensors plus string metadata, written under a temporary name and renamed when complete."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)``; any failure is a CheckpointError naming the file."""
    from safetensors import safe_open

    where = str(path)
    try:
        with safe_open(where, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for missing, truncated or corrupt files
        raise CheckpointError(f"{where}: cannot read the safetensors file ({type(exc).__name__}: {exc}); "
                              "is it truncated or corrupt?") from exc
    return tensors, metadata


def write_native(path: str | Path, tensors: dict[str, torch.Tensor], config: GeneratorConfig) -> Path:
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": json.dumps(config.to_dict())}
    return write_safetensors(path, tensors, metadata)


def read_native(path: str | Path) -> tuple[dict[str, torch.Tensor], GeneratorConfig]:
    where = str(path)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where}: safetensors metadata 'format' is {metadata.get('format')!r}, expected "
                              f"{FORMAT_NAME!r} (a generator written by stylemotion.save_generator)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {metadata.get('format_version')!r} is not supported "
                              f"(this stylemotion reads {FORMAT_VERSION!r})")
    try:
        config = GeneratorConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{where}: metadata 'config' is missing or invalid ({exc})") from exc
    return tensors, config
