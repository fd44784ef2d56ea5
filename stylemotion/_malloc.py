"""Keep freed memory for reuse (glibc), so that a steady stream of forward passes page-faults nothing.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold (at most 32 MiB)
with a fresh ``mmap`` and gives it back with ``munmap`` when freed, and trims the heap's top; a 256x256 forward
pass of config-f allocates about 1 GiB of such blocks, so each pass faults in 270,000 zeroed pages: about 0.8 s
of kernel time on 2 cores, 40% of the wall time (measured with ``getrusage``; bench/results). Graph runtimes
(ONNX Runtime's arena, OpenVINO's memory manager) do not pay this; eager PyTorch does, so the CPU engine asks
glibc to keep what it frees (``M_MMAP_MAX=0``, a 1 GiB trim threshold, a 64 MiB top pad).

The cost is the usual one of an arena: the process keeps its peak memory instead of returning it between
passes. Process-wide, applied once; ``STYLEMOTION_MALLOC=default`` leaves malloc as it is. A no-op where the C
library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
_state: dict[str, bool] = {}


def retain_freed_memory() -> bool:
    """Apply the policy (once per process); True when it is in force."""
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get("STYLEMOTION_MALLOC", "retain") != "default" and platform.system() == "Linux" \
            and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            applied = all(libc.mallopt(opt, value) == 1 for opt, value in
                          ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20)))
        except (OSError, AttributeError):
            applied = False
    _state["applied"] = applied
    return applied
