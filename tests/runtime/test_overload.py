"""Overload degrades gracefully: when streams ask for more frames than the engine renders, each stream's fps falls
by weighted fair shares (equal among equals, watched streams up to twice the unwatched ones, none starved), drops
are counted per stream, and a server refuses a new session with 503 + Retry-After instead of slowing every stream."""
from __future__ import annotations

import time

import pytest
import torch

from stylemotion.engines.base import EngineInfo
from stylemotion.runtime import make_planner
from stylemotion.runtime.hub import Hub
from stylemotion.runtime.plan import StreamSettings
from tests.helpers import make_generator

PER_FRAME = 0.0125  # seconds: the fake engine renders 80 frames a second at any batch


class PacedEngine:
    """A fake engine with a fixed cost per frame (sleeping, so the test does not depend on the CPU's load)."""

    def __init__(self, G, *, max_batch: int = 4, per_frame: float = PER_FRAME):
        self.G, self.per_frame = G, per_frame
        self.info = EngineInfo("paced", "fp32", "cpu", 1, max_batch, G.img_resolution, G.num_ws, G.w_dim, "paced")

    def prepare(self, batches):
        return tuple(sorted(batches))

    def run(self, ws):
        time.sleep(self.per_frame * ws.shape[0])
        return torch.zeros(ws.shape[0], 3, self.G.img_resolution, self.G.img_resolution)


@pytest.fixture(scope="module")
def G():
    return make_generator()


def _rendered_counts(hub, streams, seconds: float) -> list[int]:
    counts = {s.id: 0 for s in streams}

    def count(frame, sid):
        counts[sid] += 1

    for s in streams:
        s.on_frame = lambda frame, sid=s.id: count(frame, sid)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for s in streams:
            s.latest()
        time.sleep(0.01)
    return [counts[s.id] for s in streams]


def test_overload_shares_frames_fairly_and_watched_streams_weigh_twice(G):
    hub = Hub(PacedEngine(G), max_batch=4, lookahead=0.05, max_streams=8).start()
    try:
        assert hub.capacity_fps == pytest.approx(80, rel=0.4)  # measured at start at the largest batch
        settings = StreamSettings(fps=30).validate()
        streams = [hub.open(make_planner(G, torch.device("cpu"), settings, seed=i, live=True), 30.0)
                   for i in range(6)]  # 180 frames/s asked of an 80 frames/s engine
        for s in streams[:3]:
            s.viewers = 1
        _rendered_counts(hub, streams, 1.0)  # settle
        counts = _rendered_counts(hub, streams, 4.0)
    finally:
        hub.stop()
    watched, unwatched = counts[:3], counts[3:]
    assert min(counts) > 0, f"no stream starves: {counts}"
    for group in (watched, unwatched):  # equal shares among equals
        assert max(group) <= 1.35 * min(group) + 2, counts
    ratio = sum(watched) / sum(unwatched)
    assert 1.4 <= ratio <= 2.6, f"watched streams get about twice the frames of unwatched ones: {counts}"
    total = sum(counts) / 4.0
    assert total == pytest.approx(80, rel=0.35), "the engine stays busy"  # work is not lost to the policy
    snaps = [s.snapshot() for s in streams]
    assert all(s["dropped_behind"] > 0 for s in snaps), "what could not be rendered is counted per stream"
    assert all(0 < s["share"] < 1 for s in snaps)


def test_streams_within_capacity_are_not_degraded(G):
    hub = Hub(PacedEngine(G), max_batch=4, lookahead=0.05, max_streams=8).start()
    try:
        settings = StreamSettings(fps=20).validate()
        streams = [hub.open(make_planner(G, torch.device("cpu"), settings, seed=i, live=True), 20.0)
                   for i in range(2)]  # 40 of 80 frames/s
        assert hub.admits(20.0) and not hub.admits(40.0, headroom=0.9)  # 40 + 40 > 72
        _rendered_counts(hub, streams, 0.5)
        counts = _rendered_counts(hub, streams, 3.0)
    finally:
        hub.stop()
    assert all(c == pytest.approx(60, rel=0.2) for c in counts), counts
    assert all(s.snapshot()["dropped_behind"] == 0 for s in streams)


def test_a_server_refuses_sessions_beyond_capacity_with_503(G):
    pytest.importorskip("aiohttp")
    from stylemotion.pipeline.directions import random_directions
    from stylemotion.runtime.server import ServerConfig
    from stylemotion.runtime.server.app import Server

    from .serving import request, running, stats

    dirs = random_directions(G.w_dim, seed=1)
    base = StreamSettings(fps=20).validate()

    def new_planner(*, seed=0, script=None, follow_lstm=False, identity=None):
        return make_planner(G, torch.device("cpu"), base, directions=dirs, seed=seed, live=True)

    hub = Hub(PacedEngine(G), max_batch=4, lookahead=0.05, max_streams=8)
    server = Server(hub, new_planner, config=ServerConfig(port=0, fps=20.0, max_streams=8),
                    emotions=list(dirs.emotions))
    with running(server) as port:
        made = []
        for _ in range(4):  # the default stream (20) + two more fit in 0.9 x 80 = 72; the third does not
            status, headers, body = request(port, "POST", "/streams", b"{}")
            made.append(status)
            if status == 503:
                assert headers.get("Retry-After") and b"frames/s" in body
                break
        assert made == [201, 201, 503], made
        s = stats(port)
        assert s["server"]["refused_capacity"] == 1
        assert s["hub"]["capacity_fps"] == pytest.approx(80, rel=0.4) and s["hub"]["demand_fps"] == 60
    overcommit = Server(Hub(PacedEngine(G), max_batch=4, lookahead=0.05, max_streams=8), new_planner,
                        config=ServerConfig(port=0, fps=20.0, max_streams=8, admission=False))
    with running(overcommit) as port:
        assert [request(port, "POST", "/streams", b"{}")[0] for _ in range(4)] == [201] * 4  # asked for
