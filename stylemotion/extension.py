"""Finding, building and loading cpp_ext (the C++/CUDA kernels behind ``stylemotion.ops``), and its command:
``python -m stylemotion.extension build|status`` builds it, or says what is built and what ``impl="auto"`` runs.

The extension is optional: without it every op runs its PyTorch reference. ``build()`` compiles it with
``torch.utils.cpp_extension`` (g++ and ninja; nvcc too when PyTorch has CUDA) into a build folder, under a name that
hashes the sources, the PyTorch version and the CUDA flag, so a stale build is never loaded. ``status()`` loads the
build for this configuration if there is one and says what is available and, if not, why. Nothing here builds
implicitly: ``make test`` builds it, and so do ``python -m stylemotion.extension build`` and
``STYLEMOTION_BUILD_EXT=1 pip install -e .``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parents[1] / "cpp_ext"
CPU_SOURCES = ("bindings.cpp", "cpu_ops.cpp", "winograd_cpu.cpp")
CUDA_SOURCES = ("fused_lerp.cu", "to_uint8.cu", "acd.cu")
HEADERS = ("ops.h",)
DEFAULT_BUILD_DIR = Path(__file__).resolve().parents[1] / "build" / "cpp_ext"
# Exact float32 results need each operation rounded on its own: no a * b + c contracted into an FMA. -fopenmp:
# at::parallel_for is an OpenMP loop compiled into the extension; without the flag it runs on one thread.
CFLAGS = ["-O3", "-ffp-contract=off", "-std=c++17", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
CUDA_FLAGS = ["-O3", "-std=c++17", "--fmad=false"]


def _wants_cuda() -> bool:
    return torch.version.cuda is not None and torch.cuda.is_available()


def library_name(cuda: bool) -> str:
    """``stylemotion_ext_<hash>``: the sources, PyTorch's version and the CUDA flag decide which build fits."""
    digest = hashlib.sha256()
    for name in CPU_SOURCES + HEADERS + (CUDA_SOURCES if cuda else ()):
        path = SOURCE_DIR / name
        digest.update(name.encode() + (path.read_bytes() if path.exists() else b"missing"))
    digest.update(f"{torch.__version__}|cuda={cuda}|{CFLAGS}|{LDFLAGS}|{CUDA_FLAGS}".encode())
    return f"stylemotion_ext_{digest.hexdigest()[:12]}"


def build(*, cuda: bool | None = None, build_dir: str | os.PathLike | None = None, verbose: bool = False) -> Path:
    """Compile the extension (CPU kernels, plus CUDA kernels when ``cuda``; default: when PyTorch sees a GPU) and
    return the library's path. Raises ConfigError when the sources are missing or the compiler fails."""
    from torch.utils import cpp_extension

    cuda = _wants_cuda() if cuda is None else cuda
    missing = [n for n in CPU_SOURCES + HEADERS + (CUDA_SOURCES if cuda else ()) if not (SOURCE_DIR / n).exists()]
    if missing:
        raise ConfigError(f"{SOURCE_DIR}: cpp_ext sources missing: {missing} (an installed copy without the "
                          "repository's cpp_ext/ folder cannot build the extension)")
    name = library_name(cuda)
    folder = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    sources = [str(SOURCE_DIR / n) for n in CPU_SOURCES + (CUDA_SOURCES if cuda else ())]
    defines = ["-DSTYLEMOTION_WITH_CUDA"] if cuda else []
    try:
        cpp_extension.load(name=name, sources=sources, extra_cflags=CFLAGS + defines, extra_ldflags=list(LDFLAGS),
                           extra_cuda_cflags=CUDA_FLAGS + defines, extra_include_paths=[str(SOURCE_DIR)],
                           build_directory=str(folder), is_python_module=False, with_cuda=cuda, verbose=verbose)
    except (RuntimeError, OSError, ImportError) as exc:  # compiler errors come back as RuntimeError
        raise ConfigError(f"building cpp_ext failed ({type(exc).__name__}: {str(exc)[-2000:]})") from exc
    status.cache_clear()
    return folder / f"{name}.so"


def _register_fakes() -> None:
    """Shape-only kernels, so the ops trace under torch.compile."""
    lib = "stylemotion::"

    @torch.library.register_fake(lib + "fused_lerp")
    def _(keyframes, index, t, tangents, span, w_avg, psi, out_dtype):
        return keyframes.new_empty((index.shape[0],) + tuple(keyframes.shape[1:]),
                                   dtype=out_dtype or torch.float32)

    @torch.library.register_fake(lib + "to_uint8")
    def _(images):
        n, c, h, w = images.shape
        return images.new_empty((n, h, w, c), dtype=torch.uint8)

    @torch.library.register_fake(lib + "acd")
    def _(frames, previous):
        pairs = frames.shape[0] if previous is not None else max(frames.shape[0] - 1, 0)
        return frames.new_empty((pairs,), dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def status(build_dir: str | None = None) -> dict:
    """``{"cpu": bool, "cuda": bool, "library": path or None, "why": {kind: reason}}``, loading the build that
    fits this PyTorch (the CUDA build when PyTorch sees a GPU and one exists, else the CPU build)."""
    folder = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    why = {}
    for cuda in ([True, False] if _wants_cuda() else [False]):
        name = library_name(cuda)
        path = folder / name / f"{name}.so"
        if not path.exists():
            why["cuda" if cuda else "cpu"] = f"not built (no {path}; run `python -m stylemotion.extension build`)"
            continue
        try:
            torch.ops.load_library(str(path))
            _register_fakes()
        except (OSError, RuntimeError) as exc:
            why["cuda" if cuda else "cpu"] = f"{path} does not load ({exc})"
            continue
        if not cuda:
            why.setdefault("cuda", "PyTorch has no CUDA device here" if not _wants_cuda() else why.get("cuda", ""))
        return {"cpu": True, "cuda": cuda, "library": str(path), "why": why}
    why.setdefault("cuda", "PyTorch has no CUDA device here")
    return {"cpu": False, "cuda": False, "library": None, "why": why}


def main(argv=None) -> int:
    """``python -m stylemotion.extension build|status``: build cpp_ext (``--cuda``: its CUDA kernels too), then print
    what ``stylemotion.ops`` has; exit status 2 when the build fails."""
    from . import ops
    from .errors import StylemotionError

    p = argparse.ArgumentParser(prog="python -m stylemotion.extension",
                                description="Build cpp_ext, or say what is built and what impl='auto' runs.")
    p.add_argument("command", choices=["build", "status"])
    p.add_argument("--cuda", action="store_true", default=None, help="also build the CUDA kernels")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.command == "build":
        try:
            path = build(cuda=args.cuda, verbose=args.verbose)
        except StylemotionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"built {path}")
    print(json.dumps(ops.available(), indent=2))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: one status() cache, one load of the library.
    from stylemotion.extension import main as _main

    sys.exit(_main())
