"""The per-frame arithmetic around the generator, behind one door: keyframe interpolation, float images to
bytes, and the distance between consecutive frames (ACD).

Each op takes ``impl="auto" | "reference" | "cpu" | "cuda"``. ``reference`` is plain PyTorch on the inputs'
device and is the specification; ``cpu`` and ``cuda`` are the cpp_ext kernels (``cpp_ext/``), which the tests hold
to the reference (``fused_lerp`` and ``to_uint8`` bit for bit in float32, ``acd`` to 1e-6). ``auto`` runs the
kernel when it is built for the inputs' device and the inputs suit it, else the reference (said once in the
log); ``cpu`` / ``cuda`` fail with a clear error when that kernel is not built. ``implementation(op, device)``
says what ``auto`` runs (recorded in the runtime's stats); ``available()`` says what is built and why not.

Shapes: keyframes ``[K, *S]`` (``S`` = ``[num_ws, w_dim]`` for W/W+ latents, ``[z_dim]`` for Z), per-frame
keyframe indices ``index [N]`` (int64: frame i lies between keyframes ``index[i]`` and ``index[i] + 1``) and
positions ``t [N]``; images ``[N, 3, H, W]`` float in about [-1, 1]; frames ``[N, H, W, 3]`` uint8.
"""
from __future__ import annotations

import functools
import logging

import torch

from .errors import ConfigError
from .models.stylegan2 import images_to_uint8

log = logging.getLogger(__name__)

IMPLS = ("auto", "reference", "cpu", "cuda")
OPS = ("fused_lerp", "to_uint8", "acd")


def _status() -> dict:
    """``extension.status()``, imported at first use: ``import stylemotion`` must not import the extension module,
    so that ``python -m stylemotion.extension`` runs it fresh (runpy warns about a module imported before)."""
    from . import extension

    return extension.status()


def available() -> dict:
    """What is built: ``{"reference": True, "cpu": bool, "cuda": bool, "library": path, "why": {...}}``."""
    st = _status()
    return {"reference": True, "cpu": st["cpu"], "cuda": st["cuda"], "library": st["library"], "why": st["why"]}


@functools.lru_cache(maxsize=None)
def _say_fallback(kind: str, why: str) -> None:
    log.info("cpp_ext %s kernels unavailable (%s): stylemotion.ops runs the PyTorch references", kind, why)


def _choose(op: str, impl: str, device: torch.device, suits: bool) -> str:
    if impl not in IMPLS:
        raise ConfigError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference":
        return "reference"
    kind = "cuda" if device.type == "cuda" else "cpu"
    st = _status()
    if impl == "auto":
        if st[kind] and suits:
            return kind
        if not st[kind]:
            _say_fallback(kind, st["why"].get(kind, "not built"))
        return "reference"
    if impl != kind:
        raise ConfigError(f"{op}(impl={impl!r}) needs inputs on {impl}, got {device}")
    if not st[kind]:
        raise ConfigError(f"{op}(impl={impl!r}): the {kind} kernels are not available: "
                          f"{st['why'].get(kind, 'not built')}")
    if not suits:
        raise ConfigError(f"{op}(impl={impl!r}): the kernel does not take these dtypes (float32/float16 values, "
                          "int64 index; see stylemotion.ops)")
    return kind


def implementation(op: str, device: str | torch.device = "cpu") -> str:
    """What ``impl="auto"`` runs for ``op`` on ``device`` (for float32 inputs)."""
    if op not in OPS:
        raise ConfigError(f"unknown op {op!r}; ops: {OPS}")
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return kind if _status()[kind] else "reference"


def fused_lerp(keyframes: torch.Tensor, index: torch.Tensor, t: torch.Tensor, *,
               tangents: torch.Tensor | None = None, span: torch.Tensor | None = None,
               w_avg: torch.Tensor | None = None, psi: float | None = None,
               out_dtype: torch.dtype | None = None, impl: str = "auto") -> torch.Tensor:
    """Latents ``[N, *S]`` between keyframes ``index`` and ``index + 1`` at ``t``, in one pass.

    Without ``tangents``: linear, ``a + t * (b - a)``. With ``tangents [K, *S]`` (velocity per frame at each
    keyframe) and ``span [N]`` (the frames of each frame's transition): the cubic Hermite curve whose end
    velocities are ``tangents * span``. ``t == 0`` and ``t == 1`` return the keyframes themselves, bit for bit.
    ``w_avg [D]`` and ``psi``: truncation ``w_avg + psi * (x - w_avg)`` after it; ``out_dtype``: float32 (default)
    or float16, cast in the same pass.
    """
    if tangents is not None and span is None:
        raise ConfigError("fused_lerp: tangents need span (the transition length of each frame)")
    if (w_avg is None) != (psi is None):
        raise ConfigError("fused_lerp: truncation needs both w_avg and psi")
    suits = (keyframes.dtype in (torch.float32, torch.float16) and out_dtype in (None, torch.float32, torch.float16)
             and index.dtype == torch.int64)
    which = _choose("fused_lerp", impl, keyframes.device, suits)
    if which != "reference":  # the kernel computes in float32 and writes the reference's dtype
        return torch.ops.stylemotion.fused_lerp(keyframes, index, t, tangents, span, w_avg,
                                                float(psi if psi is not None else 1.0), out_dtype or keyframes.dtype)
    a, b = keyframes[index], keyframes[index + 1]
    t = t.to(keyframes.dtype).reshape((-1,) + (1,) * (a.ndim - 1))
    if tangents is None:
        between = a + t * (b - a)
    else:
        m = span.to(keyframes.dtype).reshape(t.shape)
        va, vb = tangents[index] * m, tangents[index + 1] * m
        t2 = t * t
        t3 = t2 * t
        between = (2 * t3 - 3 * t2 + 1) * a + (t3 - 2 * t2 + t) * va + (-2 * t3 + 3 * t2) * b + (t3 - t2) * vb
    out = torch.where(t == 1, b, torch.where(t == 0, a, between))
    if w_avg is not None:
        w = w_avg.to(out.dtype)
        out = w + psi * (out - w)
    return out if out_dtype is None else out.to(out_dtype)


def to_uint8(images: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``images [N, 3, H, W]`` float32/float16 -> ``frames [N, H, W, 3]`` uint8 on the same device: exactly the
    official ``(x * 127.5 + 128).clamp(0, 255)`` truncated, in float32."""
    suits = images.dtype in (torch.float32, torch.float16) and images.ndim == 4
    which = _choose("to_uint8", impl, images.device, suits)
    if which != "reference":
        return torch.ops.stylemotion.to_uint8(images)
    return images_to_uint8(images.float())


def acd(frames: torch.Tensor, *, previous: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """L2 distances between consecutive frames, float64: ``[N - 1]``, or ``[N]`` when ``previous`` (the frame
    before ``frames[0]``, e.g. the last of the previous batch) is given. ``frames [N, ...]`` float32 or uint8."""
    if previous is not None and previous.numel() * max(frames.shape[0], 1) != frames.numel():
        raise ConfigError(f"acd: previous must be one frame like frames[0] {list(frames.shape[1:])}, got "
                          f"{list(previous.shape)}")
    suits = frames.dtype in (torch.float32, torch.uint8)
    which = _choose("acd", impl, frames.device, suits)
    if which != "reference":
        return torch.ops.stylemotion.acd(frames, previous)
    seq = frames.reshape(frames.shape[0], -1 if frames.shape[0] else 0).double()
    if previous is not None:
        seq = torch.cat([previous.reshape(1, -1).double(), seq])
    return (seq[1:] - seq[:-1]).norm(dim=1)
