"""Many live streams, one engine: continuous batching of whatever frames are due.

A ``Hub`` owns an engine and a render thread. Each ``HubStream`` has its own planner (identity, script, LSTM,
controls), its own clock and its own frame order. The render thread collects, from every stream, the frames that
are due within the look-ahead plus the measured render time, up to the engine's batch, renders them in one call,
and hands each stream its frames in order. A stream's frames are what it would render alone (its latents do not
depend on the others; only the batch they ride in does). Frames that could no longer be ready in time are skipped
and counted, per stream, so one stream falling behind never delays the others.

Rendered frames wait in the stream's queue until their due time; ``HubStream.latest(now)`` returns the newest frame
that is due (the server's publisher encodes it once for every viewer).

Overload (streams asking for more frames than the engine renders) degrades every stream's fps fairly, by weighted
fair shares: each collect serves first the stream whose served fraction (frames rendered over frames due, in the last
``SHARE_WINDOW`` seconds) divided by its weight is lowest, the weight being 2 for a stream with viewers and 1 for one
without. Streams of equal weight get equal fractions; a watched stream gets up to twice the fraction of an unwatched
one; a stream that needs less than its share leaves the rest to the others; none starves. What could not be rendered
in time is skipped and counted per stream (``dropped_behind``), and ``snapshot()['share']`` shows the fraction.
``capacity_fps`` (measured at start at the largest batch, then from full batches) and ``demand_fps`` tell a server
whether one more stream fits (``admits``), so that it refuses a new session (503) instead of slowing every stream.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import ops
from ..errors import ConfigError
from .capture import buckets, holding, prepare
from .plan import Planner
from .streamer import Stats, _percentiles

log = logging.getLogger(__name__)
STALL = 1.0  # seconds without a shown frame after which a late frame is shown rather than dropped
SHARE_WINDOW = 2.0  # seconds over which a stream's served fraction is measured (the fair-share policy)
WATCHED_WEIGHT = 2.0  # a stream with viewers counts this much against one without


@dataclass
class HubFrame:
    index: int
    due: float  # perf_counter time at which it is shown
    image: np.ndarray  # [H, W, 3] uint8
    emotion: str | None
    generation: int


class HubStream:
    """One live stream in a hub: its planner, clock, rendered frames waiting for their time, and stats."""

    def __init__(self, stream_id: str, planner: Planner, fps: float, start: float):
        self.id, self.planner, self.fps, self.t0 = stream_id, planner, float(fps), start
        self.lock = threading.Lock()
        self.ready: collections.deque[HubFrame] = collections.deque()
        self.stats = Stats()
        self.closed = False
        self._share = 1.0  # the served fraction at the last collect (for snapshot)
        self._pending_controls: list[tuple[int, float]] = []
        self.shown: HubFrame | None = None
        self.on_frame = None  # optional callable(HubFrame), called in the render thread for every rendered frame
        self.viewers = 0  # set by the server: viewers now (a watched stream weighs more under overload)
        self._served: collections.deque[float] = collections.deque()  # when frames were picked (render thread)

    def served_fraction(self, now: float) -> float:
        """Frames picked for rendering over frames due in the last ``SHARE_WINDOW`` seconds (or since the stream's
        clock started), at most 1. Render thread only (it owns ``_served``)."""
        while self._served and self._served[0] < now - SHARE_WINDOW:
            self._served.popleft()
        span = min(SHARE_WINDOW, now - self.t0)
        if span <= 0:
            return 0.0
        return min(1.0, len(self._served) / (span * self.fps))

    def weight(self) -> float:
        return WATCHED_WEIGHT if self.viewers > 0 else 1.0

    def due(self, index: int) -> float:
        return self.t0 + index / self.fps

    def control(self, **changes) -> int:
        received = time.perf_counter()
        generation = self.planner.control(**changes)
        with self.lock:
            self._pending_controls.append((generation, received))
        return generation

    def latest(self, now: float | None = None, max_late: float = 0.25) -> HubFrame | None:
        """The newest rendered frame that is due by ``now`` (older due frames are passed over: a live stream shows
        the present), or None when nothing new is due. Frames later than ``max_late`` past due count as dropped,
        except that a stream never freezes: when nothing was shown for ``STALL`` seconds (an engine slower than
        real time, a machine under load), the newest late frame is shown, so the stream slows down instead of
        stopping (the soak found viewers of new sessions waiting 30 s for a first frame on a loaded machine)."""
        now = time.perf_counter() if now is None else now
        newest = late = None
        with self.lock:
            while self.ready and self.ready[0].due <= now:
                frame = self.ready.popleft()
                if newest is not None or now - frame.due > max_late:
                    with self.stats.lock:
                        self.stats.dropped_late += 1
                    if now - frame.due > max_late:
                        late = frame
                        continue
                newest = frame
            last = self.stats.last_delivery
            if newest is None and late is not None and now - (last if last is not None else self.t0) > STALL:
                newest = late
                with self.stats.lock:
                    self.stats.dropped_late -= 1  # shown after all
            if newest is None:
                return None
            self.shown = newest
            reflected = [c for c in self._pending_controls if newest.generation >= c[0]]
            for c in reflected:
                self._pending_controls.remove(c)
        with self.stats.lock:
            self.stats.delivered += 1
            self.stats.first_delivery = self.stats.first_delivery or now
            self.stats.last_delivery = now
            self.stats.lateness.append(max(0.0, now - newest.due))
            self.stats.control.extend(now - c[1] for c in reflected)
        return newest

    def next_due(self) -> float | None:
        with self.lock:
            return self.ready[0].due if self.ready else None

    def wait_hint(self) -> float:
        """How long a reader may sleep before asking ``latest`` again: until the next rendered frame is due, or half
        a frame's interval when none is rendered yet. Readers must not spin: every wake-up takes the GIL from the
        render thread between its operators (polling every 2 ms measured 2.5x slower frames on 2 CPU cores)."""
        nxt = self.next_due()
        half = 0.5 / self.fps
        if nxt is None:
            return half
        return min(max(nxt - time.perf_counter(), 0.0), half)

    def snapshot(self) -> dict:
        s = self.stats
        with s.lock:
            span = (s.last_delivery - s.first_delivery) if s.delivered > 1 else 0.0
            return {"id": self.id, "target_fps": self.fps, "frames": s.delivered,
                    "fps": (s.delivered - 1) / span if span > 0 else float("nan"),
                    "dropped": s.dropped_behind + s.dropped_late, "dropped_behind": s.dropped_behind,
                    "dropped_late": s.dropped_late, "latency_ms": _percentiles(s.latency),
                    "lateness_ms": _percentiles(s.lateness),
                    "control_latency_ms": {**_percentiles(s.control), "count": len(s.control)},
                    "queue": len(self.ready), "emotion": self.shown.emotion if self.shown else None,
                    "share": self._share, "viewers": self.viewers,
                    "generation": self.planner.generation}


class Hub:
    """One engine serving many ``HubStream``s. ``open(planner, fps)`` adds a stream, ``close(id)`` ends it."""

    def __init__(self, engine, *, max_batch: int | None = None, lookahead: float = 0.25, max_streams: int = 16):
        info = engine.info
        self.engine = engine
        self.max_batch = min(max_batch or (16 if info.device.startswith("cuda") else 4), info.max_batch)
        if not (lookahead >= 0 and math.isfinite(lookahead)):
            raise ConfigError(f"lookahead must be a finite number of seconds >= 0, got {lookahead}")
        if max_streams < 1:
            raise ConfigError(f"max_streams must be >= 1, got {max_streams}")
        self.lookahead, self.max_streams = lookahead, max_streams
        self.streams: dict[str, HubStream] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._render_estimate = 0.0
        self._last_full: float | None = None  # when the last batch, if it was full, was delivered
        self.batches, self.batched_frames = 0, 0
        self.error: str | None = None  # the last render failure (shown in /stats), None when none happened
        self.render_errors = 0  # batches that failed to render (their frames are skipped, the loop goes on)
        self.buckets: tuple[int, ...] = ()  # the batch sizes the engine captured at start()
        self.capacity_fps = math.inf  # frames per second the engine renders at the largest batch (start(), then
        # full batches); inf until measured
        self._thread: threading.Thread | None = None

    def start(self) -> "Hub":
        info = self.engine.info
        # Every batch bucket the render loop can form is captured now, before any stream is admitted: nothing
        # captures later, while sessions, controls and uploads use the device from other threads.
        self.buckets = prepare(self.engine, buckets(self.max_batch))
        ws = torch.zeros(1, info.num_ws, info.w_dim, device=info.device)
        for _ in range(2):  # warm up and time one frame before any clock runs
            t = time.perf_counter()
            with holding(self.engine):
                frames = ops.to_uint8(self.engine.run(ws))
            frames.cpu()
            self._render_estimate = time.perf_counter() - t
        full = ws.expand(self.max_batch, -1, -1).contiguous()
        best = math.inf
        for _ in range(3):  # the capacity at the largest batch (the best of three: the first may be cold)
            t = time.perf_counter()
            with holding(self.engine):
                ops.to_uint8(self.engine.run(full)).cpu()
            best = min(best, time.perf_counter() - t)
        self.capacity_fps = self.max_batch / max(best, 1e-9)
        self._thread = threading.Thread(target=self._loop, name="stylemotion-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:  # waits for the batch in the engine (a thread killed inside it aborts Python)
            self._thread.join(timeout=60.0)

    def open(self, planner: Planner, fps: float, *, stream_id: str | None = None) -> HubStream:
        if not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"fps must be a positive number, got {fps}")
        with self.lock:
            if len(self.streams) >= self.max_streams:
                raise CapacityError(f"the hub serves at most {self.max_streams} streams")
            sid = stream_id or f"s{next(self._ids)}"
            if sid in self.streams:
                raise ConfigError(f"stream {sid!r} exists")
            start = time.perf_counter() + self.lookahead + self._render_estimate
            stream = HubStream(sid, planner, fps, start)
            self.streams[sid] = stream
            return stream

    def close(self, stream_id: str) -> None:
        with self.lock:
            stream = self.streams.pop(stream_id, None)
        if stream is None:
            raise KeyError(stream_id)
        stream.closed = True

    @property
    def demand_fps(self) -> float:
        """Frames per second that the open streams ask for together."""
        with self.lock:
            return sum(s.fps for s in self.streams.values())

    def admits(self, fps: float, headroom: float = 0.9) -> bool:
        """Whether one more stream at ``fps`` fits: the demand with it stays within ``headroom`` of the measured
        capacity."""
        return self.demand_fps + fps <= headroom * self.capacity_fps

    def stats(self) -> dict:
        with self.lock:
            streams = list(self.streams.values())
        info = self.engine.info
        return {"streams": len(streams), "batches": self.batches, "error": self.error,
                "capacity_fps": self.capacity_fps if math.isfinite(self.capacity_fps) else None,
                "demand_fps": sum(s.fps for s in streams),
                "render_errors": self.render_errors, "buckets": list(self.buckets), "detail": info.detail,
                "mean_batch": self.batched_frames / self.batches if self.batches else 0.0,
                "render_ms": self._render_estimate * 1e3,
                "engine": {"backend": info.backend, "precision": info.precision, "device": info.device},
                "ops": {op: ops.implementation(op, info.device) for op in ops.OPS}}

    # -- the render thread -----------------------------------------------------------------------------------

    def _collect(self, now: float) -> list[tuple[HubStream, object]]:
        """Every frame, from every stream, due within the look-ahead plus the render time: round-robin, one frame
        per stream per pass, up to the batch size (no stream starves the others). Once a frame is picked the engine
        runs anyway, so frames due up to one frame period later ride along in the same call: streams whose clocks
        are out of phase still share engine calls instead of taking turns."""
        horizon = self.lookahead + self._render_estimate
        with self.lock:
            streams = list(self.streams.values())
        ride_along = max((1.0 / s.fps for s in streams), default=0.0)
        picked: list[tuple[HubStream, object]] = []
        for s in streams:
            s._share = s.served_fraction(now)
        # The fair-share order (see the module's docstring): least served for its weight first.
        active = sorted(streams, key=lambda s: s._share / s.weight())
        while active and len(picked) < self.max_batch:
            still = []
            for stream in active:
                if len(picked) >= self.max_batch:
                    break
                reach = horizon + (ride_along if picked else 0.0)
                nxt = stream.planner.next_frame
                ahead = stream.due(nxt) - now
                if ahead > reach:
                    continue
                if ahead < self._render_estimate - 1.0 / stream.fps:  # cannot be ready in time: skip ahead
                    skipped = stream.planner.skip(math.ceil((now + self._render_estimate - stream.t0) * stream.fps)
                                                  - nxt)
                    with stream.stats.lock:
                        stream.stats.dropped_behind += skipped
                    nxt = stream.planner.next_frame
                    if stream.due(nxt) - now > reach:
                        continue
                planned = stream.planner.next_batch(1)
                if planned is None:  # a finite script ended: the stream holds its last frame
                    continue
                picked.append((stream, planned))
                stream._served.append(now)
                still.append(stream)
            active = still
        return picked

    def _loop(self) -> None:
        try:
            self._render_loop()
        except BaseException as exc:  # a fault outside rendering: reported in /stats and the log
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the hub's render loop stopped")

    def _render_loop(self) -> None:
        """Collect due frames, launch their batch, and deliver the batch before it. On CUDA a batch's uint8 frames
        go to pinned host memory on a copy stream after an event, and the next batch is planned and launched
        before this one is waited for: the GPU renders batch k+1 while batch k crosses to the host (no blocking
        copy into a fresh pageable buffer, no idle GPU between batches)."""
        cuda = self.engine.info.device.startswith("cuda")
        device = torch.device(self.engine.info.device)
        copy_stream = torch.cuda.Stream(device) if cuda else None
        failures = 0  # in a row
        pending = None  # the launched batch not delivered yet
        with torch.cuda.device(device) if cuda else contextlib.nullcontext():
            while not self._stop.is_set():
                picked = self._collect(time.perf_counter())
                launched = None
                if picked:
                    try:
                        launched = self._launch(picked, copy_stream)
                        failures = 0
                    except Exception as exc:  # noqa: BLE001 - one failed batch must not end every stream for good
                        failures += 1
                        self._failed(picked, exc, failures)
                if launched is not None and launched[2] is None:  # on the CPU (no copy event) the frames are
                    pending, launched = launched, None  # ready now: delivered without waiting for the next batch
                if pending is not None:
                    try:
                        self._deliver(*pending)
                    except Exception as exc:  # noqa: BLE001 - as above: the copy or the kernels behind it failed
                        failures += 1
                        self._failed(pending[0], exc, failures)
                pending = launched
                if failures:
                    self._stop.wait(min(0.05 * 2 ** min(failures, 5), 1.0))  # back off, then try again
                elif not picked and pending is None:
                    self._stop.wait(0.005)
            if pending is not None:
                with contextlib.suppress(Exception):
                    self._deliver(*pending)

    def _launch(self, picked, copy_stream):
        """Render ``picked``: ``(picked, frames, copied event or None, start time)``; on CUDA only enqueued."""
        t = time.perf_counter()
        ws = torch.cat([p.ws for _, p in picked])
        with torch.inference_mode():
            with holding(self.engine):  # the engine's output buffer is read before another run
                frames = ops.to_uint8(self.engine.run(ws))
            if copy_stream is None:
                return picked, frames.numpy(), None, t
            rendered = torch.cuda.Event()
            rendered.record()
            copy_stream.wait_event(rendered)
            host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)  # PyTorch caches pinned blocks
            with torch.cuda.stream(copy_stream):
                host.copy_(frames, non_blocking=True)
                frames.record_stream(copy_stream)
                copied = torch.cuda.Event()
                copied.record(copy_stream)
        return picked, host, copied, t

    def _deliver(self, picked, frames, copied, started: float) -> None:
        """Hand each stream its frames of a launched batch (waiting for that batch's copy only)."""
        if copied is not None:
            copied.synchronize()
            frames = frames.numpy()  # the frames' rows keep the pinned buffer alive until they are dropped
        finished = time.perf_counter()
        seconds = finished - started
        self._render_estimate = 0.7 * self._render_estimate + 0.3 * seconds
        full = len(picked) == self.max_batch
        if full and math.isfinite(self.capacity_fps):  # full batches track the capacity: back to back, the
            # interval between their ends is what the loop sustains (planning, copies and, on CUDA, the batch it
            # waited behind, included); a lone full batch counts its own time
            interval = finished - self._last_full if self._last_full is not None else seconds
            self.capacity_fps = 0.9 * self.capacity_fps + 0.1 * len(picked) / max(interval, 1e-9)
        elif math.isfinite(self.capacity_fps):  # a smaller batch is a lower bound (it fills the engine less)
            self.capacity_fps = max(self.capacity_fps, len(picked) / max(seconds, 1e-9))
        self._last_full = finished if full else None
        self.batches += 1
        self.batched_frames += len(picked)
        for (stream, planned), image in zip(picked, frames):
            frame = HubFrame(planned.first, stream.due(planned.first), image, planned.emotions[0],
                             planned.generation)
            with stream.lock:
                stream.ready.append(frame)
            if stream.on_frame is not None:
                stream.on_frame(frame)
            with stream.stats.lock:
                stream.stats.latency.append(seconds)

    def _failed(self, picked, exc: BaseException, failures: int) -> None:
        self.render_errors += 1
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("the hub failed to render a batch of %d frames (%d in a row); its frames are skipped: %s",
                  len(picked), failures, self.error, exc_info=exc)
        for stream, _ in picked:
            with stream.stats.lock:
                stream.stats.dropped_behind += 1


class CapacityError(ConfigError):
    """The hub (or the server) is at its cap of streams or viewers."""
