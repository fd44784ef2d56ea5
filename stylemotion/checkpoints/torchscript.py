"""Read the tensors of a TorchScript archive without loading its code.

``torch.jit.load`` compiles and runs the TorchScript code stored in the archive (``code/``). We only want the
weights, so this reader opens the zip, unpickles ``<prefix>/data.pkl`` with a restricted unpickler (script
classes become inert records, storages are read from ``<prefix>/data/<key>``) and returns the tensors by their
attribute path (``features.0.weight``). Any other global in the pickle is refused.
"""
from __future__ import annotations

import collections
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .network_pickle import Guarded

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class ScriptObject:
    """An instance of a TorchScript class, reduced to its attribute dict."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"__state__": state}


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise UnsafeCheckpointError("tensor rebuilt from something that is not a storage")
    size, stride, offset = tuple(int(v) for v in size), tuple(int(v) for v in stride), int(offset)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise CheckpointError(f"tensor view size {size} / stride {stride} / offset {offset} is invalid")
    numel = math.prod(size)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if numel else offset
    # A weight never holds more elements than its storage; refusing that also stops a tiny file from
    # expanding into a huge clone through stride-0 views.
    if numel > storage.numel() or (numel and last >= storage.numel()):
        raise CheckpointError(f"tensor view of {numel} elements (last index {last}) does not fit its storage "
                              f"of {storage.numel()}")
    return storage.as_strided(size, stride, offset).clone()


def _identity_list(values):
    return list(values)


def _restore_type_tag(value, type_str=None):
    return value


_GUARDED = {"rebuild": Guarded(_rebuild_tensor), "list": Guarded(_identity_list), "tag": Guarded(_restore_type_tag)}


def is_torchscript_archive(path: str | Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names)


class _ScriptUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, where: str):
        import io

        super().__init__(io.BytesIO(data))
        self.zf, self.prefix, self.where = zf, prefix, where
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            if key not in self.classes:
                self.classes[key] = type(name, (ScriptObject,), {"qualname": key})
            return self.classes[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _GUARDED["rebuild"]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return _GUARDED["list"]
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return _GUARDED["tag"]
        raise UnsafeCheckpointError(f"{self.where}: the TorchScript data asks for {module}.{name}, which is not "
                                    "allowed (only weights are read; nothing in the file may run)")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise UnsafeCheckpointError(f"{self.where}: unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        try:
            raw = self.zf.read(f"{self.prefix}/data/{key}")
        except KeyError as exc:
            raise CheckpointError(f"{self.where}: storage {key!r} is missing from the archive") from exc
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) < numel * itemsize:
            raise CheckpointError(f"{self.where}: storage {key!r} holds {len(raw)} bytes, expected {numel * itemsize}")
        return torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype)


def read_torchscript_tensors(path: str | Path) -> "collections.OrderedDict[str, torch.Tensor]":
    """Every tensor attribute in a TorchScript archive, by dotted path, in the order they are stored."""
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise CheckpointError(f"{where}: expected one data.pkl in the TorchScript archive, found {len(pkl)}")
            prefix = pkl[0][: -len("/data.pkl")]
            root = _ScriptUnpickler(zf.read(pkl[0]), zf, prefix, where).load()
    except UnsafeCheckpointError as exc:
        if str(exc).startswith(where):
            raise
        raise UnsafeCheckpointError(f"{where}: {exc}") from None
    except CheckpointError as exc:
        if str(exc).startswith(where):
            raise
        raise CheckpointError(f"{where}: {exc}") from None
    except Exception as exc:
        raise CheckpointError(f"{where}: cannot read the TorchScript archive ({type(exc).__name__}: {exc}); "
                              "is it truncated or corrupt?") from exc
    return _collect(root, where)


def _collect(root: Any, where: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """Tensors by dotted path, depth first in stored order; iterative, and refusing cycles."""
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    stack: list[tuple[Any, str, frozenset]] = [(root, "", frozenset())]
    while stack:
        obj, prefix, seen = stack.pop()
        if isinstance(obj, torch.Tensor):
            out[prefix.rstrip(".")] = obj
            continue
        if isinstance(obj, ScriptObject):
            obj = getattr(obj, "state", {})
        if isinstance(obj, dict):
            items = [(f"{prefix}{k}.", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(f"{prefix}{i}.", v) for i, v in enumerate(obj)]
        else:
            continue
        if id(obj) in seen:
            raise CheckpointError(f"{where}: the archive's data contains itself at {prefix.rstrip('.') or 'the root'}")
        inner = seen | {id(obj)}
        stack.extend((v, p, inner) for p, v in reversed(items))
    return out
