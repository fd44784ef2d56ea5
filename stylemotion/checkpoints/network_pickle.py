"""stylegan2-ada-pytorch / stylegan3 network pickles (``.pkl``), read without running any code from the file.

An official pickle stores each network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where
``meta`` holds the class's Python *source* (``module_src``), its name, and the module's ``__dict__`` state
(parameters, buffers, submodules, ``_init_kwargs``). The official loader executes that source. This unpickler
never does: it maps an allow-list of globals to inert replacements (a ``PersistentObject`` record for networks,
tensor rebuilders that only build tensors, plain dicts) and refuses every other global, so a pickle that asks for
``os.system``, ``builtins.eval`` or any class outside the list fails before anything runs.

This module is the only place in stylemotion that unpickles anything itself.
"""
from __future__ import annotations

import collections
import copyreg
import io
import pickle
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError


class _Frozen(type):
    """Metaclass of the classes the unpickler hands out: a pickle's BUILD cannot set attributes on them."""

    def __setattr__(cls, name, value):
        raise UnsafeCheckpointError(f"the pickle tried to set {cls.__name__}.{name}")

    def __delattr__(cls, name):
        raise UnsafeCheckpointError(f"the pickle tried to delete {cls.__name__}.{name}")


class Guarded(metaclass=_Frozen):
    """Wraps a callable handed to an unpickler. ``GLOBAL`` pushes the object itself, and ``BUILD`` on it would
    set attributes (``__defaults__``, ``__code__``) of a function shared by the whole process; the wrapper has
    no attributes to set and refuses ``__setstate__``."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"the pickle tried to modify {self._fn.__name__}")

    def __setattr__(self, name, value):
        raise UnsafeCheckpointError(f"the pickle tried to set {name} on {self._fn.__name__}")


class PersistentObject(metaclass=_Frozen):
    """What a persistent network in an official pickle describes: class name and state, never its code."""

    __slots__ = ("class_name", "state", "version")

    def __init__(self, class_name: str, state: dict, version: Any = None):
        object.__setattr__(self, "class_name", class_name)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "version", version)

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"the pickle tried to modify persistent object {self.class_name!r}")

    def __setattr__(self, name, value):
        raise UnsafeCheckpointError(f"the pickle tried to set {name} on persistent object {self.class_name!r}")

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"

    def children(self) -> list[tuple[str, "PersistentObject"]]:
        modules = self.state.get("_modules") or {}
        if not isinstance(modules, dict):
            raise CheckpointError(f"persistent object {self.class_name!r}: _modules is not a dict")
        return [(str(k), v) for k, v in modules.items() if isinstance(v, PersistentObject)]

    def tensors(self, prefix: str = "", _seen: frozenset = frozenset()) -> dict[str, torch.Tensor]:
        """Flattened ``name -> tensor`` over parameters, persistent buffers and submodules (state-dict order)."""
        if id(self) in _seen:
            raise CheckpointError(f"module {prefix.rstrip('.') or self.class_name!r} contains itself")
        seen = _seen | {id(self)}
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            values = self.state.get(group) or {}
            if not isinstance(values, dict):
                raise CheckpointError(f"module {prefix.rstrip('.') or self.class_name!r}: {group} is not a dict")
            for name, value in values.items():
                if value is not None and not (group == "_buffers" and name in skip):
                    out[prefix + str(name)] = value
        for name, child in self.children():
            out.update(child.tensors(prefix + name + ".", seen))
        return out

    def submodule_classes(self, _seen: frozenset = frozenset()) -> set[str]:
        if id(self) in _seen:
            raise CheckpointError(f"persistent object {self.class_name!r} contains itself")
        names = {self.class_name}
        for _, child in self.children():
            names |= child.submodule_classes(_seen | {id(self)})
        return names


class EasyDict(dict, metaclass=_Frozen):
    """Stand-in for ``dnnlib.EasyDict`` (a dict with attribute access); plain data."""


def _persistent_record(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafeCheckpointError("persistent object with unexpected metadata (expected type='class' and a class_name)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"persistent object {meta['class_name']!r} has no state dict")
    return PersistentObject(meta["class_name"], dict(state), meta.get("version"))


_LEGACY_STORAGE_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
                         "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                         "BoolStorage": 1}


def _check_storage_sizes(data: bytes) -> None:
    """A legacy ``torch.save`` blob declares each storage's element count in its persistent id, and torch
    allocates that much before reading: check the declared bytes against the blob's length first (make fuzz
    found a 140 KB pickle that made torch allocate 3.4 GB). The blob is four pickles (magic number, protocol,
    system info, the storage reference) and the raw data; the first four are read with an unpickler that builds
    nothing but plain values and records the persistent ids."""
    pids: list = []

    class Probe(pickle._Unpickler):  # the pure-Python unpickler: its memo is a dict, not an array
        def find_class(self, module: str, name: str):
            if module == "torch" and name in _LEGACY_STORAGE_BYTES:
                return name
            raise UnsafeCheckpointError(f"a storage blob asks for {module}.{name}, which is not allowed")

        def persistent_load(self, pid):
            pids.append(pid)
            return None

    f = io.BytesIO(data)
    for _ in range(4):
        Probe(f).load()
    declared = 0
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _LEGACY_STORAGE_BYTES
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"a storage reference that is not (storage, type, key, location, size): {pid!r:.200}")
        declared += pid[4] * _LEGACY_STORAGE_BYTES[pid[1]]
    if declared > len(data):
        raise CheckpointError(f"a tensor storage declares {declared} bytes but its blob holds {len(data)}")


def _storage_from_bytes(data: bytes):
    # Tensors pickled with ``pickle`` keep their storage as a legacy ``torch.save`` blob; torch reads that
    # blob with its own restricted (weights-only) unpickler, once the sizes it declares fit in the blob.
    if not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"a storage blob that is a {type(data).__name__}, not bytes")
    _check_storage_sizes(data)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafeCheckpointError(f"a parameter rebuilt from a {type(data).__name__}, not a tensor")
    return data


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError(f"numpy scalar of dtype {dtype!r} refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _numpy_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"numpy dtype {spec!r} holds Python objects; refused")
    return dtype


def _numpy_reconstruct(cls, shape, dtype_code):
    # numpy arrays pickle as _reconstruct(ndarray, ...) then BUILD with (version, shape, dtype, fortran, data);
    # the dtype comes through _numpy_dtype, which refuses object dtypes.
    if cls is not _NDARRAY_MARKER:
        raise UnsafeCheckpointError(f"numpy array class {cls!r} refused")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _ndarray_called(*args, **kwargs):
    raise UnsafeCheckpointError("the pickle called numpy.ndarray directly; only _reconstruct may build arrays")


_NDARRAY_MARKER = Guarded(_ndarray_called)  # stands for numpy.ndarray, which _numpy_reconstruct accepts

_PLAIN_TYPES = (EasyDict, collections.OrderedDict, dict, list, object)


def _copyreg_reconstructor(cls, base, state):
    if cls not in _PLAIN_TYPES or base not in (object, dict, list):
        raise UnsafeCheckpointError(f"copyreg reconstruction of {cls!r} refused")
    return copyreg._reconstructor(cls, base, state)


_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

# Classes are immutable built-in types or _Frozen; every function is Guarded. Nothing here imports, evaluates
# or opens anything, and nothing a pickle receives can be modified for the rest of the process.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Guarded(_persistent_record),
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("copyreg", "_reconstructor"): Guarded(_copyreg_reconstructor),
    ("torch.storage", "_load_from_bytes"): Guarded(_storage_from_bytes),
    ("torch._utils", "_rebuild_tensor"): Guarded(torch._utils._rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): Guarded(torch._utils._rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): Guarded(_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): Guarded(_parameter),
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "dtype"): Guarded(_numpy_dtype),
    ("numpy", "ndarray"): _NDARRAY_MARKER,
    ("numpy.core.multiarray", "scalar"): Guarded(_numpy_scalar),
    ("numpy._core.multiarray", "scalar"): Guarded(_numpy_scalar),
    ("numpy.core.multiarray", "_reconstruct"): Guarded(_numpy_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): Guarded(_numpy_reconstruct),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals above; everything else raises UnsafeCheckpointError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        raise UnsafeCheckpointError(f"the pickle asks for {module}.{name}, which is not allowed "
                                    "(only network data is read; nothing in the file may run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"persistent id {pid!r} in a plain pickle is not supported")


def check_opcodes(data: bytes, *, where: str) -> None:
    """Walk the pickle's opcodes (pure Python, nothing built) before unpickling: every length an opcode claims
    must fit in the bytes that remain, and every memo index in the file's length. CPython's C unpickler spent a minute of CPU on a 139 KB file whose
    BINBYTES claimed 1.6 GB inside a frame (found by make fuzz; tests/fuzz/regressions/)."""
    import pickletools

    try:
        for op, arg, _ in pickletools.genops(data):
            # The C unpickler keeps its memo in an array as long as the largest index stored: a file numbers its
            # memo entries one by one, so an index beyond the file's length is a lie (make fuzz found a 140 KB
            # pickle whose LONG_BINPUT made the unpickler allocate 3.4 GB).
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int) and not 0 <= arg <= len(data):
                raise ValueError(f"memo index {arg} in a pickle of {len(data)} bytes")
    except Exception as exc:  # pickletools raises ValueError (and others) on malformed opcodes
        raise CheckpointError(f"{where}: cannot read the network pickle ({exc}); is the file truncated or "
                              "corrupt?") from None


def read_network_pickle(f: BinaryIO, *, where: str) -> Any:
    """Unpickle an official network pickle with the restricted unpickler, after ``check_opcodes``."""
    data = f.read()
    check_opcodes(data, where=where)
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{where}: {exc}") from None
    except CheckpointError:
        raise
    except Exception as exc:  # a truncated or corrupt pickle fails in many ways
        raise CheckpointError(f"{where}: cannot read the network pickle ({type(exc).__name__}: {exc}); "
                              "is the file truncated or corrupt?") from exc


def generator_record(data: Any, *, where: str, key: str = "G_ema") -> tuple[dict, dict[str, torch.Tensor]]:
    """``(init_kwargs, official-layout tensors)`` of the network under ``key`` (``G_ema``) in a loaded pickle."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a dict with {key!r} at the top of the pickle, "
                              f"got {type(data).__name__}")
    if key not in data:
        raise CheckpointError(f"{where}: no {key!r} in the pickle (keys: {sorted(map(str, data))})")
    net = data[key]
    if not isinstance(net, PersistentObject):
        raise CheckpointError(f"{where}: {key!r} is not a persistent network object ({type(net).__name__})")
    if net.class_name != "Generator":
        raise CheckpointError(f"{where}: {key!r} is a {net.class_name!r}, expected 'Generator'")
    try:
        classes = net.submodule_classes()
        tensors = net.tensors()
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {key!r}: {exc}") from None
    if "SynthesisInput" in classes:
        raise CheckpointError(f"{where}: {key!r} is a StyleGAN3 (alias-free) generator; only StyleGAN2 is supported")
    args = net.state.get("_init_args") or ()
    if args:
        raise CheckpointError(f"{where}: {key!r} was built with positional arguments {args!r}; expected keywords only")
    kwargs = net.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: {key!r} has no _init_kwargs; cannot tell its architecture")
    return _plain(kwargs), tensors


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
