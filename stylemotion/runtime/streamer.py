"""The Streamer: plan -> render -> deliver.

1. **plan**: the ``Planner`` makes ``ws [B, num_ws, w_dim]`` on the engine's device, batch by batch. In realtime
   mode a frame is planned ``lookahead`` seconds plus the measured render time before it is due (no earlier), so
   it is ready in time; when frames could no longer be ready in time, they are skipped (counted as dropped) and
   planning goes on with the first frame that can, instead of falling further behind.
2. **render**: ``engine.run(ws)`` -> ``ops.to_uint8`` on the device -> host. On CUDA a worker thread does the
   planning and rendering and hands batches to delivery through a bounded queue; the copy to pinned host memory
   runs on its own stream after an event, so rendering batch k+1 overlaps copying batch k, and delivery waits on
   that batch's event only (no device-wide synchronisation). On the CPU the caller's thread plans and renders
   between deliveries (see ``Streamer.__init__`` for why); there each render must fit in a frame's interval in
   realtime mode, and the look-ahead only adds a fixed latency (it lets the worker thread render ahead on CUDA).
3. **deliver** (the caller's thread, iterating): frames leave in order. In realtime mode each frame waits for its
   due time (``index / fps`` after the start); a frame later than ``max_late`` is dropped and counted, so
   latency cannot grow.

Offline mode renders as fast as possible with the largest useful batch, drops nothing and delivers exactly the
frames the source defines.
"""
from __future__ import annotations

import collections
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .. import ops
from ..errors import ConfigError
from .capture import holding, prepare
from .plan import PlannedBatch, Planner

MODES = ("offline", "realtime")
_END = object()  # end of the source


@dataclass(frozen=True)
class StreamConfig:
    """How frames flow. ``batch`` None: 8 on CUDA and 1 on the CPU offline (batching does not help a CPU:
    bench/results), 1 in realtime. ``lookahead``: how far ahead of the clock realtime mode plans, beyond the
    measured render time (seconds); ``max_late``: a frame later than this past its due time is dropped (default:
    ``lookahead``)."""

    mode: str = "offline"
    batch: int | None = None
    lookahead: float = 0.25
    max_late: float | None = None
    queue: int = 2  # batches between stages
    as_tensor: bool = False  # Frame.image as a device tensor [H, W, 3] uint8 instead of NumPy
    worker: bool | None = None  # plan and render in a worker thread (None: on CUDA only; see Streamer)

    def validate(self) -> "StreamConfig":
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise ConfigError(f"batch must be a positive integer, got {self.batch!r}")
        for name in ("lookahead", "max_late"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if not (isinstance(self.queue, int) and self.queue >= 1):
            raise ConfigError(f"queue must be a positive integer, got {self.queue!r}")
        return self


@dataclass
class Frame:
    """One delivered frame. ``image``: ``[H, W, 3]`` uint8 (NumPy, or a device tensor with ``as_tensor``);
    ``time``: its time in the stream (``index / fps``); ``emotion``: the emotion it moves to or holds (None for
    the identity itself)."""

    index: int
    time: float
    image: np.ndarray | torch.Tensor
    emotion: str | None


@dataclass
class Batch:
    """Consecutive delivered frames ``[first, first + B)``: ``frames [B, H, W, 3]`` uint8, what each moves to,
    and the ``ws [B, num_ws, w_dim]`` they were rendered from (on the device)."""

    first: int
    frames: np.ndarray | torch.Tensor
    emotions: list[str | None]
    ws: torch.Tensor


@dataclass
class _Rendered:
    planned: PlannedBatch
    frames: torch.Tensor  # [B, H, W, 3] uint8: host (CPU or pinned) or device (as_tensor)
    copied: object  # CUDA event after which ``frames`` may be read, or None
    started: object  # CUDA event recorded before the engine ran (timing), or the perf_counter time on the CPU
    seconds: float | None = None  # render latency, known on the CPU at once, on CUDA once ``copied`` is done


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Stats:
    """Counters and recent latencies, shared by the stages (a lock keeps them consistent)."""

    def __init__(self, window: int = 2000):
        self.lock = threading.Lock()
        self.delivered = 0
        self.dropped_behind = 0  # skipped by the planner: the clock had passed them
        self.dropped_late = 0  # rendered but later than max_late
        self.latency = collections.deque(maxlen=window)  # engine start -> uint8 frames on the host (s)
        self.lateness = collections.deque(maxlen=window)  # delivered - due (s), realtime
        self.control = collections.deque(maxlen=window)  # control received -> first frame reflecting it (s)
        self.first_delivery: float | None = None
        self.first_count = 0  # frames delivered at first_delivery (a whole batch arrives at once)
        self.last_delivery: float | None = None


def _percentiles(values) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    arr = np.asarray(values) * 1e3
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)}


class Streamer:
    """Frames from a planner through an engine. A context manager and an iterator of ``Frame``.

    Build one with ``stylemotion.stream(...)``. ``control(**changes)`` steers it while it runs (from any
    thread), ``stats()`` reports fps, latencies, drops and queue depths, ``close()`` stops it. ``batches()``
    iterates whole batches instead of frames (what file writers want in offline mode).
    """

    def __init__(self, engine, planner: Planner, *, fps: float, config: StreamConfig = StreamConfig()):
        self.engine, self.planner, self.fps = engine, planner, float(fps)
        self.config = config.validate()
        info = engine.info
        self.cuda = info.device.startswith("cuda")
        self.device = torch.device(info.device)
        if self.config.batch is not None:
            batch = self.config.batch
        elif self.config.mode == "realtime":
            batch = 1
        else:
            batch = min(8 if self.cuda else 1, info.max_batch)
        if not info.min_batch <= batch <= info.max_batch:
            raise ConfigError(f"batch {batch} is outside the engine's range {info.min_batch}..{info.max_batch}")
        self.batch = batch
        self.max_late = self.config.lookahead if self.config.max_late is None else self.config.max_late
        self._stats = Stats()
        self._stop = threading.Event()
        self._rendered: queue.Queue = queue.Queue(self.config.queue)
        self._threads: list[threading.Thread] = []
        self._pending_controls: list[tuple[int, float]] = []  # (generation, received at)
        self._controls_lock = threading.Lock()
        self._started = False
        self._finishing = threading.Event()  # finish(): end after the frame being delivered
        self._t0 = 0.0
        self._render_estimate = 0.0  # seconds per batch, a moving average (realtime planning)
        # On CUDA a worker thread plans, launches the engine and the copies while the caller takes frames: the GPU
        # works asynchronously, so rendering batch k+1 overlaps delivering batch k. On the CPU the engine's
        # OpenMP threads already fill the cores, and OpenMP regions started from a second OS thread measured up
        # to 3x slower than from the first (elementwise ops, 2 cores): there the caller's thread plans and
        # renders itself, between deliveries.
        self._threaded = self.cuda if self.config.worker is None else self.config.worker
        self._copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._host_ring: list[torch.Tensor] = []
        self._ring_at = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> "Streamer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        if self._started:
            raise ConfigError("a Streamer streams once; make a new one with stylemotion.stream(...)")
        self._started = True
        # CUDA graphs for this stream's batch are captured here, before the worker starts (a short last batch runs
        # padded in the same graph): nothing captures while this stream's threads, or another stream's, are busy.
        with self._on_device():
            prepare(self.engine, [self.batch])
        if self.config.mode == "realtime":
            # Warm up (kernels chosen) before the clock runs, and time one batch: the first estimate of how long
            # ahead of its due time a frame must be planned.
            info = self.engine.info
            ws = torch.zeros(self.batch, info.num_ws, info.w_dim, device=self.device)
            for _ in range(2):
                t = time.perf_counter()
                with holding(self.engine):
                    frames = ops.to_uint8(self.engine.run(ws))
                frames.cpu()
                self._render_estimate = time.perf_counter() - t
        self._t0 = time.perf_counter() + self.config.lookahead + self._render_estimate
        if self._threaded:
            thread = threading.Thread(target=self._work_loop, name="stylemotion-render", daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        """End the stream after the frame being delivered, as if the source had ended (files are finished).
        Safe from any thread, e.g. a timer."""
        self._finishing.set()

    def close(self) -> None:
        """Stop both stages (within about a tenth of a second, or once the batch in the engine finishes)."""
        self._stop.set()
        try:
            while True:
                self._rendered.get_nowait()
        except queue.Empty:
            pass
        for thread in self._threads:
            thread.join(timeout=1.0)

    # -- stages ----------------------------------------------------------------------------------------------

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not (self._stop.is_set() or self._finishing.is_set()):
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _plan(self):
        """The next batch of ``ws``; in realtime mode paced to the clock. None: not yet (waited briefly);
        ``_END``: the source is done."""
        if self.config.mode == "realtime":
            now = time.perf_counter()
            nxt = self.planner.next_frame
            render = self._render_estimate
            ahead = self._t0 + nxt / self.fps - now  # until the next frame is due
            if ahead > self.config.lookahead + render:  # early: wait (briefly, to stay stoppable)
                self._stop.wait(min(ahead - self.config.lookahead - render, 0.05))
                return None
            if ahead < render - 1.0 / self.fps:  # it cannot be ready in time: skip to one that can
                skipped = self.planner.skip(math.ceil((now + render - self._t0) * self.fps) - nxt)
                with self._stats.lock:
                    self._stats.dropped_behind += skipped
                # Then render the frame skipped to, whatever the clock says now: on a loaded machine the skip
                # itself can outlast a frame interval, and skipping again and again rendered nothing, ever (the
                # render estimate only changes when something renders).
        planned = self.planner.next_batch(self.batch)
        return _END if planned is None else planned

    def _host_buffer(self, like: torch.Tensor) -> torch.Tensor:
        """A pinned host buffer for a batch; a ring deep enough that the consumer is done with a buffer before
        it comes round again (it copies frames out before asking for the next batch)."""
        need = (self.batch,) + tuple(like.shape[1:])
        if not self._host_ring or tuple(self._host_ring[0].shape) != need:
            self._host_ring = [torch.empty(need, dtype=torch.uint8, pin_memory=True)
                               for _ in range(self.config.queue + 3)]
        buf = self._host_ring[self._ring_at % len(self._host_ring)]
        self._ring_at += 1
        return buf[:len(like)]

    def _render(self, planned: PlannedBatch) -> _Rendered:
        """Engine -> uint8 on the device -> host. On CUDA the copy runs on ``copy_stream`` after an event, so the
        next batch renders while this one is copied; the returned event says when the copy is done."""
        if self.cuda:
            started = torch.cuda.Event(enable_timing=True)
            started.record()
        else:
            started = time.perf_counter()
        with torch.inference_mode(), holding(self.engine):  # the engine's output buffer is read before another run
            frames = ops.to_uint8(self.engine.run(planned.ws))
        copied = None
        if self.cuda and not self.config.as_tensor:
            copy_stream = self._copy_stream
            done = torch.cuda.Event()
            done.record()
            copy_stream.wait_event(done)
            host = self._host_buffer(frames)
            with torch.cuda.stream(copy_stream):
                host.copy_(frames, non_blocking=True)
                frames.record_stream(copy_stream)
                copied = torch.cuda.Event(enable_timing=True)
                copied.record(copy_stream)
            frames = host
        elif self.cuda:
            copied = torch.cuda.Event(enable_timing=True)
            copied.record()
        seconds = None if self.cuda else time.perf_counter() - started
        return _Rendered(planned, frames, copied, started, seconds)

    def _work_loop(self) -> None:
        """Plan a batch, render it, hand it to delivery through the bounded queue.

        Planning runs in this thread, between renders: it costs well under a millisecond a batch, and a planner
        thread of its own measured worse on the CPU (its OpenMP team competed with the engine's for the cores:
        the offline stream ran at half the engine's rate on 2 cores).
        """
        try:
            with self._on_device():
                while not self._stop.is_set():
                    planned = self._plan()
                    if planned is None:
                        continue
                    if planned is _END:
                        self._put(self._rendered, _END)
                        return
                    if not self._put(self._rendered, self._render(planned)):
                        return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(self._rendered, _Failure(exc))

    def _on_device(self):
        """The engine's CUDA device as the current one (events and streams are made on the current device)."""
        import contextlib

        return torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()

    # -- delivery --------------------------------------------------------------------------------------------

    def _next_rendered(self) -> _Rendered | None:
        """The next rendered batch in order, or None at the end. On CUDA it comes from the worker thread through
        the queue; on the CPU it is planned and rendered here, in the caller's thread (see ``_start``)."""
        if self._threaded:
            item = self._get(self._rendered)
        else:
            item = None
            while item is None and not (self._stop.is_set() or self._finishing.is_set()):
                item = self._plan()
            if item is None or item is _END:
                item = _END
            else:
                with self._on_device():
                    item = self._render(item)
        if item is _END:
            return None
        if isinstance(item, _Failure):
            raise item.exc
        if item.copied is not None:
            item.copied.synchronize()  # this batch's copy only
            item.seconds = item.started.elapsed_time(item.copied) / 1e3
        self._render_estimate = 0.7 * self._render_estimate + 0.3 * item.seconds  # every batch, delivered or not
        return item

    def _frames_of(self, item: _Rendered):
        if self.config.as_tensor:
            return item.frames  # on the device
        if self.cuda:
            return item.frames.numpy().copy()  # out of the pinned ring before it comes round again
        return item.frames.numpy()

    def _note_delivery(self, item: _Rendered, count: int) -> None:
        now = time.perf_counter()
        stats = self._stats
        with stats.lock:
            if stats.first_delivery is None:
                stats.first_delivery, stats.first_count = now, count
            stats.last_delivery = now
            stats.delivered += count
            stats.latency.append(item.seconds)
        with self._controls_lock:
            if self._pending_controls:
                reflected = [c for c in self._pending_controls if item.planned.generation >= c[0]]
                for c in reflected:
                    self._pending_controls.remove(c)
                    with stats.lock:
                        stats.control.append(now - c[1])

    def _rendered_in_order(self) -> Iterator[tuple[_Rendered, np.ndarray | torch.Tensor]]:
        """Start, then each rendered batch and its frames in order until the end, ``finish()`` or ``close()``."""
        self._start()
        try:
            while not self._finishing.is_set():
                item = self._next_rendered()
                if item is None:
                    return
                yield item, self._frames_of(item)
        finally:
            self.close()

    def batches(self) -> Iterator[Batch]:
        """Whole batches in order (offline mode: nothing paced, nothing dropped)."""
        if self.config.mode != "offline":
            raise ConfigError("batches() is for offline mode; iterate the Streamer for paced realtime frames")
        for item, frames in self._rendered_in_order():
            self._note_delivery(item, len(frames))
            yield Batch(item.planned.first, frames, item.planned.emotions, item.planned.ws)

    def __iter__(self) -> Iterator[Frame]:
        if self.config.mode == "offline":
            for batch in self.batches():
                for j, (image, emotion) in enumerate(zip(batch.frames, batch.emotions)):
                    if self._finishing.is_set():
                        return
                    index = batch.first + j
                    yield Frame(index, index / self.fps, image, emotion)
            return
        for item, frames in self._rendered_in_order():
            for j, (image, emotion) in enumerate(zip(frames, item.planned.emotions)):
                if self._finishing.is_set():
                    return
                index = item.planned.first + j
                due = self._t0 + index / self.fps
                now = time.perf_counter()
                if now < due:
                    if self._stop.wait(due - now):
                        return
                elif now - due > self.max_late:
                    with self._stats.lock:
                        self._stats.dropped_late += 1
                    continue
                self._note_delivery(item, 1)
                with self._stats.lock:
                    self._stats.lateness.append(max(0.0, time.perf_counter() - due))
                yield Frame(index, index / self.fps, image, emotion)

    def run(self, *sinks, on_frame: Callable[[Frame], None] | None = None) -> dict:
        """Stream to ``sinks`` until the source ends (or Ctrl-C / SIGTERM); returns ``stats()``.

        Each sink has ``write(frames [B, H, W, 3] uint8, first_index)``; sinks that are context managers are
        entered, so a file sink finishes its file on Ctrl-C as it does at the end.
        """
        import contextlib

        with contextlib.ExitStack() as stack:
            for sink in sinks:
                if hasattr(sink, "__enter__"):
                    stack.enter_context(sink)
            if self.config.mode == "offline" and on_frame is None:
                for batch in self.batches():
                    for sink in sinks:
                        sink.write(batch.frames, batch.first)
            else:
                for frame in self:
                    for sink in sinks:
                        sink.write(frame.image[None], frame.index)
                    if on_frame is not None:
                        on_frame(frame)
        return self.stats()

    # -- control and stats -----------------------------------------------------------------------------------

    def control(self, **changes) -> int:
        """Change emotion, intensity, transition, speed, seed/identity, temperature, pause or follow_lstm while
        streaming; the next planned frames move smoothly from the latent on screen. Returns the generation of the
        frames that reflect it; the time until the first such frame is delivered is the control latency."""
        received = time.perf_counter()
        generation = self.planner.control(**changes)
        with self._controls_lock:
            self._pending_controls.append((generation, received))
        return generation

    def stats(self) -> dict:
        """fps, frame latency (engine start -> uint8 frames on the host, per batch), lateness (realtime:
        delivered - due), control latency (control received -> first delivered frame reflecting it), dropped
        frames, queue depths, and what ran (engine, ops)."""
        s = self._stats
        with s.lock:
            span = (s.last_delivery - s.first_delivery) if s.delivered > s.first_count else 0.0
            fps = (s.delivered - s.first_count) / span if span > 0 else float("nan")
            info = self.engine.info
            return {
                "mode": self.config.mode, "target_fps": self.fps, "batch": self.batch,
                "frames": s.delivered, "fps": fps,
                "dropped": s.dropped_behind + s.dropped_late,
                "dropped_behind": s.dropped_behind, "dropped_late": s.dropped_late,
                "latency_ms": _percentiles(s.latency), "lateness_ms": _percentiles(s.lateness),
                "control_latency_ms": {**_percentiles(s.control), "count": len(s.control),
                                       "max": float(max(s.control) * 1e3) if s.control else float("nan")},
                "queues": {"rendered": self._rendered.qsize()},
                "engine": {"backend": info.backend, "precision": info.precision, "device": info.device,
                           "detail": info.detail},
                "ops": {op: ops.implementation(op, info.device) for op in ops.OPS},
            }
