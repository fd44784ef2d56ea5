"""CUDA-graph capture and threads, checked on the CPU with a fake engine: every bucket the hub or a streamer can
form is prepared before any stream runs, nothing is captured afterwards, a run never overlaps a capture, and a
failing engine does not end the hub's render loop."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from stylemotion.engines.base import EngineInfo
from stylemotion.runtime import make_planner, stream
from stylemotion.runtime.capture import buckets
from stylemotion.runtime.hub import Hub
from stylemotion.runtime.plan import StreamSettings
from tests.helpers import make_generator


class CaptureWatch:
    """A fake engine that records every prepare and run, fails if it is run while a (mock) capture is under way or
    for a batch no prepared bucket holds, and can be told to fail its first runs."""

    def __init__(self, G, *, max_batch: int = 16, fail_runs: int = 0):
        self.G = G
        self.info = EngineInfo("fake", "fp32", "cpu", 1, max_batch, G.img_resolution, G.num_ws, G.w_dim, "fake")
        self.lock = threading.RLock()
        self.capturing = False
        self.prepared: list[int] = []
        self.prepare_calls = 0
        self.runs: list[int] = []
        self.violations: list[str] = []
        self.fail_runs = fail_runs

    def prepare(self, batches):
        self.prepare_calls += 1
        with self.lock:
            self.capturing = True
            try:
                for b in sorted(batches, reverse=True):
                    time.sleep(0.02)  # a capture takes time: any other thread touching the engine now is caught
                    if b not in self.prepared:
                        self.prepared.append(b)
            finally:
                self.capturing = False
        return tuple(sorted(self.prepared))

    def run(self, ws):
        if self.capturing:
            self.violations.append("run during a capture")
        if not any(b >= ws.shape[0] for b in self.prepared):
            self.violations.append(f"batch {ws.shape[0]} would capture in run (prepared {self.prepared})")
        self.runs.append(ws.shape[0])
        if self.fail_runs > 0:
            self.fail_runs -= 1
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing (fake)")
        with torch.no_grad():
            return self.G.synthesis(ws)


@pytest.fixture(scope="module")
def G():
    return make_generator()


def test_buckets_cover_every_batch():
    assert buckets(16) == (1, 2, 4, 8, 16)
    assert buckets(12) == (1, 2, 4, 8, 12)
    assert buckets(1) == (1,)
    for m in (1, 3, 7, 16, 24):
        sizes = buckets(m)
        for b in range(1, m + 1):
            bucket = min(s for s in sizes if s >= b)
            assert bucket < 2 * b or b == 1, (m, b, bucket)  # padding costs less than the batch itself


def test_hub_prepares_every_bucket_before_streams_and_never_after(G):
    engine = CaptureWatch(G, max_batch=8)
    hub = Hub(engine, max_batch=8, lookahead=0.05, max_streams=8)
    settings = StreamSettings(fps=60).validate()
    hub.start()
    try:
        assert engine.prepare_calls == 1 and sorted(engine.prepared) == [1, 2, 4, 8]
        assert hub.buckets == (1, 2, 4, 8)
        opened = []

        def open_one(i):  # sessions start together, from other threads, while the render loop runs
            opened.append(hub.open(make_planner(G, torch.device("cpu"), settings, seed=i, live=True), 60.0))

        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline and not all(s.stats.delivered or s.ready for s in opened):
            for s in opened:
                s.latest()
            time.sleep(0.02)
        assert all(s.ready or s.stats.delivered for s in opened), "every stream got frames"
    finally:
        hub.stop()
    assert engine.violations == []
    assert engine.prepare_calls == 1, "nothing was captured after start()"
    assert max(engine.runs) > 1, "frames of several streams rode in one batch"
    assert hub.render_errors == 0 and hub.error is None


def test_hub_survives_failed_batches(G):
    engine = CaptureWatch(G, max_batch=4)
    hub = Hub(engine, max_batch=4, lookahead=0.05)
    hub.start()  # its warm-up runs succeed; the next two runs, in the render loop, fail
    engine.fail_runs = 2
    try:
        s = hub.open(make_planner(G, torch.device("cpu"), StreamSettings(fps=30).validate(), live=True), 30.0)
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline and s.stats.delivered < 3:
            s.latest()
            time.sleep(0.02)
        assert s.stats.delivered >= 3, "frames came again after the failed batches"
    finally:
        hub.stop()
    stats = hub.stats()
    assert stats["render_errors"] == 2
    assert "operation not permitted when stream is capturing" in stats["error"]
    assert hub._thread is not None and not hub._thread.is_alive()  # stopped by stop(), not by the failures


def test_streamer_prepares_its_batch_before_rendering(G):
    engine = CaptureWatch(G, max_batch=8)
    frames = 0
    # 7 frames at batch 3: the last batch is short and must run padded in the prepared bucket, not capture.
    latents = torch.randn(7, G.num_ws, G.w_dim)
    with stream(engine, generator=G, latents=latents, fps=10, batch=3, worker=True) as s:
        for _ in s:
            frames += 1
    assert frames == 7
    assert engine.prepare_calls == 1 and engine.prepared == [3]
    assert engine.runs == [3, 3, 1]
    assert engine.violations == []


def test_two_streamers_share_one_engine(G):
    engine = CaptureWatch(G, max_batch=8)
    counts = {}

    def consume(name, batch):
        latents = torch.randn(12, G.num_ws, G.w_dim)
        with stream(engine, generator=G, latents=latents, fps=12, batch=batch, worker=True) as s:
            counts[name] = sum(1 for _ in s)

    threads = [threading.Thread(target=consume, args=(n, b)) for n, b in (("a", 4), ("b", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert counts == {"a": 12, "b": 12}
    assert sorted(engine.prepared) == [2, 4]
    assert engine.violations == []
