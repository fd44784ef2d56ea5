"""The frame schedule: for frame i, which keyframe pair it lies between and where (t), and the latents.

A video is a list of segments, one per script item: a transition from the previous keyframe into this item's
keyframe, then a hold on it. Frame counts come from cumulative times (``round(end * fps) - round(start * fps)``),
so durations add up exactly (``happy:1,surprise:1.5,neutral:0.5`` at 10 fps is 30 frames). Within a segment
of ``n`` frames whose transition takes ``m <= n`` frames, frame ``j`` has ``t = min(1, (j + 1) / m)``: the
previous segment's last frame is ``t = 0`` (the previous keyframe) and frame ``m - 1`` is ``t = 1`` (this
keyframe), exactly. The first segment has no previous frame, so it uses ``t = min(1, j / (m - 1))``: frame 0
is the identity keyframe and frame ``m - 1`` the first emotion's.

Modes: ``linear`` (the method's morphing), ``slerp`` (great-circle, for Z latents), ``smooth`` (cubic Hermite:
Catmull-Rom tangents where the path moves through a keyframe, zero tangents where it stops to hold, so the
velocity is continuous, C1, at every keyframe). Latents are produced lazily in batches of any size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError

MODES = ("linear", "slerp", "smooth")


@dataclass(frozen=True)
class Segment:
    frames: int  # frames in this segment (transition + hold)
    transition: int  # frames of the transition, 1 <= transition <= frames


def build_segments(durations: Sequence[float], fps: float, transition: float) -> list[Segment]:
    """Segments for script durations (seconds) at ``fps``; each transition lasts ``transition`` seconds (at
    most the segment, at least one frame)."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps}")
    if not (transition >= 0 and math.isfinite(transition)):
        raise ConfigError(f"transition must be a finite number of seconds >= 0, got {transition}")
    bad = [d for d in durations if not (d > 0 and math.isfinite(d))]
    if bad:
        raise ConfigError(f"durations must be positive seconds, got {bad}")
    segments, start = [], 0.0
    for d in durations:
        n = round((start + d) * fps) - round(start * fps)
        start += d
        if n < 1:
            raise ConfigError(f"a {d} s item is shorter than one frame at {fps} fps")
        segments.append(Segment(n, max(1, min(n, round(transition * fps)))))
    return segments


@dataclass(frozen=True)
class FrameIndex:
    """Per frame: the segment k (between keyframes k and k+1 of the keyframe list) and t in [0, 1]."""

    segment: np.ndarray  # [F] int
    t: np.ndarray  # [F] float


def frame_index(segments: Sequence[Segment], *, continues: bool = False) -> FrameIndex:
    """``continues``: keyframe 0 is a frame already shown (a live re-plan), so the first segment starts one step
    after it, like every later segment, instead of opening on it."""
    seg, ts = [], []
    for k, s in enumerate(segments):
        j = np.arange(s.frames)
        seg.append(np.full(s.frames, k))
        if k == 0 and s.transition > 1 and not continues:
            ts.append(np.minimum(1.0, j / (s.transition - 1)))  # the video opens on the identity itself
        else:
            ts.append(np.minimum(1.0, (j + 1) / s.transition))
    return FrameIndex(np.concatenate(seg), np.concatenate(ts))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle interpolation of the last dimension (norms interpolated linearly); ``t`` broadcasts."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    dot = (ua * ub).sum(-1, keepdim=True)
    omega = torch.acos(dot.clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so
    near = dot > 1 - 1e-6  # nearly parallel: plain lerp (antipodal inputs have no unique great circle)
    direction = torch.where(near, (1 - t) * ua + t * ub, direction)
    return direction * ((1 - t) * na + t * nb)


class Schedule:
    """Latents for every frame of a video, from keyframes ``[K+1, ...]`` (K0 is where the video starts).

    ``continues`` and ``start_velocity`` serve live re-planning: keyframe 0 is the latent on screen, already shown,
    and ``start_velocity`` (latent units per frame, like the tangents) is how it was moving, so the smooth path
    leaves it without a kink.
    """

    def __init__(self, keyframes: torch.Tensor, segments: Sequence[Segment], mode: str = "linear", *,
                 continues: bool = False, start_velocity: torch.Tensor | None = None):
        if mode not in MODES:
            raise ConfigError(f"interpolation mode must be one of {MODES}, got {mode!r}")
        if keyframes.shape[0] != len(segments) + 1:
            raise ConfigError(f"{len(segments)} segments need {len(segments) + 1} keyframes, got {keyframes.shape[0]}")
        self.keyframes, self.segments, self.mode = keyframes, list(segments), mode
        self.index = frame_index(segments, continues=continues)
        self.tangents = self._tangents() if mode == "smooth" else None
        if self.tangents is not None and start_velocity is not None:
            self.tangents[0] = start_velocity.to(self.tangents.dtype)
        # Transition length of each frame's segment, once (the Hermite form scales tangents by it).
        self._transition = torch.as_tensor([s.transition for s in self.segments], dtype=keyframes.dtype,
                                           device=keyframes.device)
        # The whole schedule on the keyframes' device once: a batch slices it (no host-to-device copy, and no
        # sync, per batch or per skipped frame).
        self._segment = torch.as_tensor(self.index.segment, device=keyframes.device)
        self._t = torch.as_tensor(self.index.t, dtype=keyframes.dtype, device=keyframes.device)

    @property
    def num_frames(self) -> int:
        return len(self.index.t)

    def _tangents(self) -> torch.Tensor:
        """Per keyframe, the velocity (latent units per frame): zero at the ends and where the path holds, the
        Catmull-Rom chord elsewhere, scaled by the frames on both sides so velocity is continuous."""
        k = self.keyframes
        v = torch.zeros_like(k)
        for i in range(1, len(k) - 1):
            before, after = self.segments[i - 1], self.segments[i]
            holds = before.frames > before.transition  # the path rests on keyframe i before moving on
            if not holds:
                v[i] = (k[i + 1] - k[i - 1]) / (before.transition + after.transition)
        return v

    def latents(self, start: int, stop: int) -> torch.Tensor:
        """Interpolated latents of frames ``[start, stop)``: ``[stop - start, ...]`` like one keyframe."""
        from .. import ops

        seg, t = self._segment[start:stop], self._t[start:stop]
        a, b = self.keyframes[seg], self.keyframes[seg + 1]
        if self.mode == "slerp":
            t = t.reshape((-1,) + (1,) * (a.ndim - 1))
            # t = 0 and t = 1 are the keyframes themselves, bit for bit (a + (b - a) need not round to b).
            return torch.where(t == 1, b, torch.where(t == 0, a, slerp(a, b, t)))
        if self.mode == "linear":
            return ops.fused_lerp(self.keyframes, seg, t)
        return ops.fused_lerp(self.keyframes, seg, t, tangents=self.tangents, span=self._transition[seg])

    def batches(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first frame, latents [B, ...])`` for consecutive batches; nothing is computed ahead."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, self.num_frames, batch_size):
            yield start, self.latents(start, min(start + batch_size, self.num_frames))


def latent_acceleration(latents: torch.Tensor) -> float:
    """Root mean square of the second difference's norm along frames (``[F, ...]``): 0 for constant velocity.

    RMS rather than the mean norm: a velocity jump concentrated in one frame (linear morphing at a keyframe)
    weighs more than the same change spread over a transition, which is what makes motion look jerky.
    """
    if latents.shape[0] < 3:
        return 0.0
    flat = latents.reshape(latents.shape[0], -1).double()
    return float((flat[2:] - 2 * flat[1:-1] + flat[:-2]).square().sum(dim=1).mean().sqrt())
