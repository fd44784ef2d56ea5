"""The planner: script, LSTM predictions or live control -> batches of ``ws`` on the engine's device.

The planner owns the latent space (Z, W or W+), the identity and truncation: what leaves it is ``ws
[B, num_ws, w_dim]`` ready for an engine, and nothing downstream maps, truncates or edits latents again.

A *plan* is a ``Schedule`` (keyframes, segments, interpolation mode) placed at a global frame index. A fixed
script is planned whole, exactly as the ``video`` job always planned it. The LSTM is planned a few emotions at a
time and continued from the last latent. A live control change re-plans what is left from the latent of the
last planned frame, with its velocity, so the path goes on without a jump (``Schedule(continues=True,
start_velocity=...)``); the frames already planned stay as they are (the streamer's look-ahead bounds them).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..models.emotion_cnn import EMOTIONS
from ..models.stylegan2 import Generator, z_from_seed
from ..pipeline.interpolate import MODES, Schedule, build_segments
from ..pipeline.keyframes import ScriptItem, check_directions, keyframe_targets, ws_from_keyframe_latents
from ..pipeline.sequence import EmotionSampler, check_temperature

LSTM_CHUNK = 8  # emotions planned at a time when following the LSTM
CONTROL_FIELDS = ("emotion", "intensity", "transition", "speed", "seed", "identity", "temperature", "pause",
                  "follow_lstm")


@dataclass
class PlannedBatch:
    """Frames ``[first, first + B)``: their ``ws`` on the device, what each moves to, and the control generation
    they reflect. ``latents`` are the keyframe-space latents (Z or W), for smoothness measurements."""

    first: int
    ws: torch.Tensor  # [B, num_ws, w_dim]
    latents: torch.Tensor  # [B, *S]
    emotions: list[str | None]
    generation: int

    def __len__(self) -> int:
        return len(self.emotions)


@dataclass
class _Plan:
    schedule: Schedule
    start: int  # global index of the schedule's first frame
    items: list[ScriptItem]  # one per segment, coefficients resolved
    speed: float  # script seconds per stream second when planned
    open_ended: bool = False  # after the last frame, hold the last keyframe until told otherwise
    bounds: np.ndarray = field(default=None)  # cumulative frame ends per segment

    def __post_init__(self) -> None:
        self.bounds = np.cumsum([s.frames for s in self.schedule.segments])

    @property
    def end(self) -> int:
        return self.start + self.schedule.num_frames


@dataclass(frozen=True)
class StreamSettings:
    """What shapes the path; live control changes these. ``coefficient`` is the intensity."""

    fps: float = 30.0
    interp: str = "smooth"
    transition: float = 0.5
    coefficient: float = 3.0
    speed: float = 1.0
    truncation_psi: float = 0.7
    temperature: float = 0.8
    seconds: float = 1.0  # seconds per emotion the LSTM predicts

    def validate(self) -> "StreamSettings":
        for name in ("fps", "speed", "seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("transition", "coefficient", "truncation_psi"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if self.transition < 0:
            raise ConfigError(f"transition must be >= 0 seconds, got {self.transition}")
        if self.interp not in MODES:
            raise ConfigError(f"interp must be one of {MODES}, got {self.interp!r}")
        check_temperature(self.temperature)
        return self


class Planner:
    """Turns a script, the LSTM or explicit latents into ``PlannedBatch``es, and applies live control.

    Exactly one source: ``items`` (a script), ``sampler`` (the LSTM; ``predict`` emotions, or endless when None),
    ``latents`` (explicit ``ws [N, num_ws, w_dim]``, rendered as given), or none (hold the identity until a
    control arrives; endless). ``G`` provides the mapping network (its synthesis is never called here).
    Thread-safe: ``control`` may be called from any thread while another plans.
    """

    def __init__(self, G: Generator, directions=None, *, settings: StreamSettings = StreamSettings(),
                 items: Sequence[ScriptItem] | None = None, sampler: EmotionSampler | None = None,
                 predict: int | None = None, latents: torch.Tensor | None = None, seed: int = 0,
                 identity: torch.Tensor | None = None, endless: bool = False,
                 device: str | torch.device = "cpu"):
        self.G, self.directions = G, directions
        self.settings = settings.validate()
        self.device = torch.device(device)
        sources = [s for s in (items, sampler, latents) if s is not None]
        if len(sources) > 1:
            raise ConfigError("give one source: a script, the LSTM, or latents")
        if settings.interp == "slerp" and directions is not None and directions.space != "z":
            raise ConfigError(f"slerp interpolates Z latents; these directions are in {directions.space!r} "
                              "(use linear or smooth)")
        if (items is not None or sampler is not None) and directions is None:
            raise ConfigError("a script or the LSTM needs directions")
        if predict is not None and predict < 1:
            raise ConfigError(f"predict must be >= 1, got {predict}")
        if items is not None:
            if not items:
                raise ConfigError("the script is empty")
            check_directions(G, directions, [i.emotion for i in items])
        elif directions is not None:
            check_directions(G, directions, [])
        self.space = directions.space if directions is not None else "w+"
        self.sampler, self.predict_left = sampler, predict
        self.endless = endless or (items is None and latents is None and (sampler is None or predict is None))
        self.follow_lstm = sampler is not None
        self.latents = None if latents is None else latents.to(self.device, torch.float32)
        self.lock = threading.Lock()
        self.generation = 0
        self.next_frame = 0
        self.paused = False
        self._held: list[ScriptItem] = []  # what is left of the path while paused
        self._last: torch.Tensor | None = None  # keyframe-space latents of the last two planned frames
        self._set_identity(seed=seed, identity=identity)
        self.plan: _Plan | None = None
        if items is not None:
            self.plan = self._make_plan(self._resolve(items), start=0, continues=False)
        elif sampler is not None:  # a finite prediction is planned whole, like a script
            self.plan = self._make_plan(self._from_lstm(), start=0, continues=False)

    # -- identity and keyframes ---------------------------------------------------------------------------

    def _set_identity(self, *, seed: int | None = None, identity: torch.Tensor | None = None) -> None:
        """The identity keyframe in the planner's space: z ``[1, z_dim]`` or ws ``[1, num_ws, w_dim]``."""
        G = self.G
        if identity is not None:
            ident = torch.as_tensor(identity, dtype=torch.float32)
            if self.space == "z":
                if ident.numel() != G.z_dim:
                    raise ConfigError(f"identity must be a z of {G.z_dim} values for Z directions, got shape "
                                      f"{list(ident.shape)}")
                self.identity = ident.reshape(1, G.z_dim).to(self.device)
            elif ident.numel() == G.w_dim:
                self.identity = ident.reshape(1, 1, G.w_dim).expand(1, G.num_ws, G.w_dim).contiguous().to(self.device)
            elif ident.numel() == G.num_ws * G.w_dim:
                self.identity = ident.reshape(1, G.num_ws, G.w_dim).to(self.device)
            else:
                raise ConfigError(f"identity must be w [{G.w_dim}] or ws [{G.num_ws}, {G.w_dim}], got shape "
                                  f"{list(ident.shape)}")
            return
        if seed is None or not 0 <= int(seed) < 2 ** 32:
            raise ConfigError(f"seed must be in 0..{2 ** 32 - 1}, got {seed!r}")
        z = z_from_seed(int(seed), G.z_dim).to(self.device)
        if self.space == "z":
            self.identity = z
        else:
            with torch.no_grad():
                self.identity = G.mapping(z, truncation_psi=self.settings.truncation_psi)

    def _targets(self, items: Sequence[ScriptItem]) -> torch.Tensor:
        """The keyframe of each item: ``[len(items), *S]`` (emotion None: the identity)."""
        if self.directions is None:
            return self.identity.expand(len(items), *self.identity.shape[1:])
        return keyframe_targets(self.identity, self.directions, items)

    def _resolve(self, items: Sequence[ScriptItem]) -> list[ScriptItem]:
        c = self.settings.coefficient if self.directions is not None else 0.0
        return [i if i.coefficient is not None else replace(i, coefficient=c) for i in items]

    def _from_lstm(self) -> list[ScriptItem]:
        """The next emotions from the LSTM: all that are left of ``predict``, or a chunk of an endless stream."""
        n = LSTM_CHUNK if self.predict_left is None else self.predict_left
        ids = [self.sampler.next(self.settings.temperature) for _ in range(n)]
        if self.predict_left is not None:
            self.predict_left -= n
        return self._resolve([ScriptItem(EMOTIONS[i], self.settings.seconds) for i in ids])

    def _make_plan(self, items: list[ScriptItem], *, start: int, continues: bool, live: bool = False) -> _Plan:
        """A schedule from the identity (start) or from the last planned latent (continues) through ``items``.
        An item of infinite seconds is the last: its transition is planned, then the stream holds on it."""
        s = self.settings
        items = self._resolve(items)
        open_ended = bool(items) and math.isinf(items[-1].seconds)
        if open_ended:
            items = items[:-1] + [replace(items[-1], seconds=max(s.transition, 1 / s.fps) * s.speed)]
        targets = self._targets(items)
        if continues:
            first = self._last[-1:]
            velocity = (self._last[-1] - self._last[0]) if len(self._last) > 1 else None
        else:
            first, velocity = self.identity, None
        keys = torch.cat([first, targets])
        durations = [i.seconds / s.speed for i in items]
        if live:
            # What is left of an item after a live change may be under a frame at a new speed: re-planned items
            # are whole frames, at least one each (cumulative rounding of fractional ones could give zero).
            durations = [max(1, round(d * s.fps)) / s.fps for d in durations]
        segments = build_segments(durations, s.fps, s.transition)
        schedule = Schedule(keys, segments, s.interp, continues=continues, start_velocity=velocity)
        return _Plan(schedule, start, list(items), s.speed, open_ended=open_ended)

    # -- what is left, and live control ---------------------------------------------------------------------

    def _remainder(self) -> list[ScriptItem]:
        """The items still ahead of ``next_frame``: the current one shortened to what is left of it."""
        if self.paused:
            return list(self._held)
        plan, f = self.plan, self.next_frame
        if plan is None:
            return []
        if f >= plan.end:
            return [replace(plan.items[-1], seconds=math.inf)] if plan.open_ended else self._more()
        k = int(np.searchsorted(plan.bounds, f - plan.start, side="right"))
        frames_left = plan.start + int(plan.bounds[k]) - f
        item = plan.items[k]
        if plan.open_ended and k == len(plan.items) - 1:
            left = math.inf
        else:
            left = frames_left / self.settings.fps * plan.speed
        return [replace(item, seconds=left)] + plan.items[k + 1:]

    def control(self, **changes) -> int:
        """Apply live changes (``CONTROL_FIELDS``); returns the generation whose frames reflect them.

        ``emotion``: in an endless stream, go to it and hold (no longer following the LSTM); in a finite one, the
        current item moves to it for what is left of its time, and the script goes on; ``follow_lstm``: follow
        the LSTM again; ``intensity``: the coefficient, for every emotion ahead; ``transition`` (seconds), ``speed``
        (script time per second), ``temperature`` (LSTM sampling); ``seed`` or ``identity`` (a z, w or ws): a
        new face; ``pause``: hold the latent on screen, and resume from it.
        """
        unknown = sorted(set(changes) - set(CONTROL_FIELDS))
        if unknown:
            raise ConfigError(f"unknown control fields {unknown}; known: {', '.join(CONTROL_FIELDS)}")
        with self.lock:
            s = self.settings
            new = {}
            for name, field_name in (("intensity", "coefficient"), ("transition", "transition"),
                                     ("speed", "speed"), ("temperature", "temperature")):
                if changes.get(name) is not None:
                    new[field_name] = float(changes[name])
            settings = replace(s, **new).validate()
            emotion = changes.get("emotion")
            if emotion is not None:
                from ..pipeline.directions import emotion_id

                if self.directions is None:
                    raise ConfigError("this stream has no directions; emotions cannot be controlled")
                emotion = EMOTIONS[emotion_id(emotion, where="control emotion")]
                check_directions(self.G, self.directions, [emotion])
            if changes.get("follow_lstm") and self.sampler is None:
                raise ConfigError("follow_lstm needs a stream started with an LSTM")
            # All or nothing: a change that fails (a bad seed, a plan that cannot be made) leaves the stream as it was.
            saved = (self.settings, self.identity, self.follow_lstm, self.plan, self.paused, list(self._held),
                     self.generation, self.predict_left)
            try:
                return self._apply(changes, settings, new, emotion)
            except BaseException:
                (self.settings, self.identity, self.follow_lstm, self.plan, self.paused, self._held,
                 self.generation, self.predict_left) = saved
                raise

    def _apply(self, changes: dict, settings: StreamSettings, new: dict, emotion: str | None) -> int:
        """``control``'s changes, checked already; called with the lock held."""
        remainder = self._remainder()
        self.settings = settings
        if changes.get("seed") is not None or changes.get("identity") is not None:
            self._set_identity(seed=changes.get("seed"), identity=changes.get("identity"))
        if emotion is not None and self.endless:  # a live stream: go there and hold until told otherwise
            remainder, self.follow_lstm = [ScriptItem(emotion, math.inf)], False
        elif emotion is not None and remainder:  # a finite video: the current item changes, the rest stays
            remainder[0] = replace(remainder[0], emotion=emotion)
        elif changes.get("follow_lstm"):
            self.follow_lstm = True
            if self.endless:  # a live stream drops what it was doing; a finite one follows after its script
                remainder = []
        if "coefficient" in new:
            remainder = [replace(i, coefficient=settings.coefficient) for i in remainder]
        self.generation += 1
        pause = changes.get("pause")
        if pause:
            self._held, self.paused = remainder, True
            return self.generation
        self.paused = False if pause is not None else self.paused
        if self.paused:
            self._held = remainder
            return self.generation
        self._replan(remainder)
        return self.generation

    def _replan(self, remainder: list[ScriptItem]) -> None:
        """Plan ``remainder`` from the last planned latent; with nothing ahead, an endless stream glides back to
        the identity and holds it, a finite one ends."""
        if not remainder and self.follow_lstm and (self.predict_left is None or self.predict_left > 0):
            remainder = self._from_lstm()
        if not remainder and self.endless:
            remainder = [ScriptItem(None, math.inf, 0.0)]
        if not remainder:
            self.plan = None
            return
        self.plan = self._make_plan(remainder, start=self.next_frame, continues=self._last is not None, live=True)

    # -- batches ---------------------------------------------------------------------------------------------

    @property
    def finite_frames(self) -> int | None:
        """Frames in all, when the source is finite and nothing has changed it (a script, a predicted count,
        explicit latents); None for an endless stream."""
        if self.latents is not None:
            return len(self.latents)
        if self.endless or self.generation or self.plan is None:
            return None
        return self.plan.end

    def skip(self, frames: int) -> int:
        """Realtime mode fell behind: the next ``frames`` frames are not rendered (the path does not wait).
        Returns how many were skipped (fewer at the end of a finite source)."""
        with self.lock:
            start = self.next_frame
            target = start + frames
            while self.next_frame < target:
                if self._next_locked(min(256, target - self.next_frame), need_ws=False) is None:
                    break
            return self.next_frame - start

    def next_batch(self, size: int) -> PlannedBatch | None:
        """The next ``size`` frames (fewer only at the end of a finite source), or None when it is done. A batch
        runs on across plan boundaries (a control, the next LSTM chunk), so engines see one batch size."""
        with self.lock:
            parts = []
            while sum(len(p) for p in parts) < size:
                part = self._next_locked(size - sum(len(p) for p in parts))
                if part is None:
                    break
                parts.append(part)
            if len(parts) <= 1:
                return parts[0] if parts else None
            return PlannedBatch(parts[0].first, torch.cat([p.ws for p in parts]),
                                torch.cat([p.latents for p in parts]), [e for p in parts for e in p.emotions],
                                parts[-1].generation)

    def _next_locked(self, size: int, *, need_ws: bool = True) -> PlannedBatch | None:
        first = self.next_frame
        if self.latents is not None:  # explicit ws, rendered as given
            if first >= len(self.latents):
                return None
            ws = self.latents[first:first + size]
            self.next_frame += len(ws)
            return PlannedBatch(first, ws, ws, [None] * len(ws), self.generation)
        plan = self.plan
        if self.paused or plan is None:
            if plan is None and not self.paused and not self.endless:
                return None
            still = self._last[-1:] if self._last is not None else self.identity
            latents, emotions = still.expand(size, *still.shape[1:]), [None] * size
        elif first >= plan.end and plan.open_ended:  # hold the last keyframe until told otherwise
            keys = plan.schedule.keyframes
            latents, emotions = keys[-1:].expand(size, *keys.shape[1:]), [plan.items[-1].emotion] * size
        elif first >= plan.end:
            self._replan(self._more())
            if self.plan is None:
                return None
            return self._next_locked(size, need_ws=need_ws)
        else:
            lo = first - plan.start
            hi = min(lo + size, plan.schedule.num_frames)
            latents = plan.schedule.latents(lo, hi)
            emotions = [plan.items[k].emotion for k in plan.schedule.index.segment[lo:hi]]
        self._last = (latents[-2:] if self._last is None else torch.cat([self._last, latents[-2:]])[-2:]).clone()
        self.next_frame += len(latents)
        ws = None
        if need_ws:
            ws = ws_from_keyframe_latents(self.G, latents, self.space, self.settings.truncation_psi)
            if ws.ndim == 2:  # a W identity without directions
                ws = ws[:, None].expand(-1, self.G.num_ws, -1)
        return PlannedBatch(first, ws, latents, emotions, self.generation)

    def _more(self) -> list[ScriptItem]:
        """After a plan ends: more LSTM predictions when following an endless LSTM, else nothing."""
        if self.follow_lstm and self.sampler is not None and (self.predict_left is None or self.predict_left > 0):
            return self._from_lstm()
        return []
