"""The engine cache: built plans keyed by everything they depend on; the key, not the file, decides validity.

Key: the ONNX file's SHA-256, backend and its version, GPU name and compute capability, precision, batch
profile. Each entry is ``<name>-<digest>.plan`` plus a JSON sidecar holding the key and the plan's own SHA-256.
``load`` returns None (and removes the entry) when the sidecar's key differs or the plan's hash does not match:
a mismatched or corrupt plan is rebuilt, never trusted. Writes go to a temporary name and are renamed in place.

The same folder keeps ``backend="auto"``'s measured choices (``choices/<digest>.json``, written by
``selection.py``), keyed by a ``ChoiceKey``: the machine, the model's hash, batch, precision, the candidates and the
library versions. A choice file whose key differs or that does not parse is dropped, and the choice measured again.

The cache folder is ``$STYLEMOTION_CACHE_DIR``, else ``~/.cache/stylemotion`` (read here and only here).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import EngineError


def default_cache_dir() -> Path:
    env = os.environ.get("STYLEMOTION_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stylemotion"


def gpu_identity(device: str | torch.device = "cuda") -> tuple[str, str]:
    """``(name, "major.minor")`` of the CUDA device, or ``("cpu", "0.0")``."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return "cpu", "0.0"
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


@dataclass(frozen=True)
class CacheKey:
    name: str  # the network, e.g. "synthesis"
    onnx_sha256: str
    backend: str
    backend_version: str
    gpu: str
    compute_capability: str
    precision: str
    profile: tuple[int, int, int]  # min, opt, max batch

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ChoiceKey:
    """Everything ``backend="auto"``'s measured choice depends on."""

    machine: str  # CPU model name and a digest of its flags, or GPU name and compute capability
    threads: int  # CPU threads the engines run with
    model_sha256: str  # the generator's weights and config (and the ONNX file's content, when one is given)
    batch: int
    precision: str  # as asked: "default", "fp32", "fp16", "bf16"
    candidates: tuple[str, ...]  # the engines measured, in the order offered
    versions: tuple[tuple[str, str], ...]  # (distribution, version) of torch, openvino, onnxruntime, tensorrt

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):  # unnamed where the OS allows: a kill leaves nothing
                pass
        except OSError as exc:
            raise EngineError(f"{self.root}: the engine cache folder is not writable ({exc}); set "
                              "STYLEMOTION_CACHE_DIR to a writable folder") from exc

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        stem = f"{key.name}-{key.backend}-{key.precision}-{key.digest()}"
        return self.root / f"{stem}.plan", self.root / f"{stem}.json"

    def load(self, key: CacheKey) -> bytes | None:
        plan, sidecar = self.paths(key)
        if not plan.exists() or not sidecar.exists():
            return None
        try:
            meta = json.loads(sidecar.read_text())
            data = plan.read_bytes()
        except (OSError, ValueError):
            meta, data = None, b""
        valid = (isinstance(meta, dict) and meta.get("key") == json.loads(json.dumps(asdict(key)))
                 and meta.get("plan_sha256") == hashlib.sha256(data).hexdigest())
        if not valid:
            self.remove(key)
            return None
        return data

    def store(self, key: CacheKey, data: bytes) -> Path:
        plan, sidecar = self.paths(key)
        with atomic_path(plan) as tmp:
            tmp.write_bytes(data)
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps({"key": asdict(key), "plan_sha256": hashlib.sha256(data).hexdigest(),
                                       "bytes": len(data)}, indent=2))
        return plan

    def remove(self, key: CacheKey) -> None:
        for p in self.paths(key):
            p.unlink(missing_ok=True)

    def choice_path(self, key: ChoiceKey) -> Path:
        return self.root / "choices" / f"{key.digest()}.json"

    def load_choice(self, key: ChoiceKey) -> dict | None:
        """The record stored for ``key`` (its ``"choice"``), or None: absent, unreadable, or stored under another key
        (then removed). The record's content is the caller's to check (``selection.choice_from_record``)."""
        path = self.choice_path(key)
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            meta = None
        if not (isinstance(meta, dict) and meta.get("key") == json.loads(json.dumps(asdict(key)))
                and isinstance(meta.get("choice"), dict)):
            self.remove_choice(key)
            return None
        return meta["choice"]

    def store_choice(self, key: ChoiceKey, choice: dict) -> Path:
        path = self.choice_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"key": asdict(key), "choice": choice}, indent=2))
        return path

    def remove_choice(self, key: ChoiceKey) -> None:
        self.choice_path(key).unlink(missing_ok=True)

    def choices(self) -> list[dict]:
        """Every stored choice (``{"path", "key", "choice"}``; ``"error"`` for a file that does not parse)."""
        out = []
        for path in sorted(p for p in (self.root / "choices").glob("*.json") if not p.name.startswith(".")):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                meta = None
            if isinstance(meta, dict) and isinstance(meta.get("key"), dict) and isinstance(meta.get("choice"), dict):
                out.append({"path": str(path), "key": meta["key"], "choice": meta["choice"]})
            else:
                out.append({"path": str(path), "key": {}, "choice": {}, "error": "not a choice record"})
        return out

    def entries(self) -> list[dict]:
        out = []
        for sidecar in sorted(p for p in self.root.glob("*.json") if not p.name.startswith(".")):  # not temporaries
            try:
                meta = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                meta = None
            if isinstance(meta, dict) and isinstance(meta.get("key"), dict):
                out.append({"plan": str(sidecar.with_suffix(".plan")), **meta})
            else:
                out.append({"plan": str(sidecar.with_suffix(".plan")), "key": {}, "error": "not an engine sidecar"})
        return out
