"""CUDA graphs under many streams and threads, on a real GPU (run by bench/gpu_check.sh): streams starting
together on one engine at 1024², two Streamers on one engine, an explicit ``cuda:0``, and a bucket captured in
inference mode then run outside it. Each checks the frames against the same engine without graphs, by PSNR (never
bit equality: cuDNN may pick other algorithms between calls)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from stylemotion import ops
from stylemotion.checkpoints import load_generator
from stylemotion.engines import open_engine
from stylemotion.pipeline.directions import random_directions
from stylemotion.runtime import StreamSettings, make_planner, stream
from stylemotion.runtime.hub import Hub

pytestmark = pytest.mark.gpu


def psnr_u8(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def G1024():
    return load_generator("ffhq-1024")


_EAGER = {}


def eager_frames(G, ws, device="cuda:0") -> np.ndarray:
    """The same engine without CUDA graphs (one per generator and device, built once)."""
    key = (id(G), device)
    if key not in _EAGER:
        _EAGER[key] = open_engine(G, backend="torch", device=device, precision="fp16", cuda_graphs=False)
    engine = _EAGER[key]
    with torch.no_grad():
        return ops.to_uint8(engine.run(ws.to(device))).cpu().numpy()


def test_eight_streams_start_together_at_1024(G1024):
    G = G1024
    engine = open_engine(G, backend="torch", device="cuda", precision="fp16", cuda_graphs=True)
    hub = Hub(engine, max_batch=16, lookahead=0.1, max_streams=8).start()
    assert hub.buckets == (1, 2, 4, 8, 16)
    directions = random_directions(G.w_dim, seed=1)
    settings = StreamSettings(fps=30).validate()
    opened, errors = [], []
    barrier = threading.Barrier(8)

    def open_one(i):  # planners built (mapping on the GPU) in 8 threads at once, while the hub renders
        try:
            barrier.wait()
            planner = make_planner(G, torch.device("cuda"), settings, directions=directions,
                                   script="happy:1,sad:1,surprise:1", seed=i, live=True)
            opened.append(hub.open(planner, 30.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    shown = {}
    try:
        deadline = time.perf_counter() + 5.0
        while time.perf_counter() < deadline:
            for s in opened:
                frame = s.latest()
                if frame is not None:
                    shown.setdefault(s.id, []).append(frame)
            time.sleep(0.005)
    finally:
        hub.stop()
    assert errors == []
    stats = hub.stats()
    assert stats["error"] is None and stats["render_errors"] == 0, stats
    assert len(opened) == 8 and all(len(shown.get(s.id, [])) >= 30 for s in opened), \
        {s.id: len(shown.get(s.id, [])) for s in opened}
    assert stats["mean_batch"] > 1.5, "the streams shared engine calls"
    # Replays are not stuck on a capture-time image: frames of different streams (other seeds) differ, and a
    # stream's frames equal the engine without graphs on the same latents.
    a, b = shown[opened[0].id][-1].image, shown[opened[1].id][-1].image
    assert psnr_u8(a, b) < 30
    planner = make_planner(G, torch.device("cuda"), settings, directions=directions, script="happy:1", seed=3)
    planned = planner.next_batch(4)
    hub_engine_frames = ops.to_uint8(engine.run(planned.ws)).cpu().numpy()
    assert min(psnr_u8(x, y) for x, y in zip(hub_engine_frames, eager_frames(G, planned.ws))) >= 35


def test_two_streamers_on_one_engine(G1024):
    G = G1024
    engine = open_engine(G, backend="torch", device="cuda", precision="fp16", cuda_graphs=True)
    directions = random_directions(G.w_dim, seed=2)
    got, errors = {}, []

    def consume(name, batch, seed):
        try:
            with stream(engine, generator=G, directions=directions, script="happy:1,sad:0.5", fps=10, seed=seed,
                        batch=batch) as s:
                got[name] = [(b.frames.copy(), b.ws.clone()) for b in s.batches()]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=("a", 4, 1)), threading.Thread(target=consume, args=("b", 8, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sum(len(f) for f, _ in got["a"]) == 15 and sum(len(f) for f, _ in got["b"]) == 15
    for name in ("a", "b"):
        for frames, ws in got[name]:  # each batch is the engine's image of that batch's latents, not the other's
            ref = eager_frames(G, ws)
            assert min(psnr_u8(x, y) for x, y in zip(frames, ref)) >= 35, name


def test_explicit_device_and_inference_mode(G1024):
    n = torch.cuda.device_count()
    device = f"cuda:{n - 1}"
    if n > 1:
        torch.cuda.set_device(0)  # capture on a device that is not the current one
    engine = open_engine(G1024, backend="torch", device=device, precision="fp16", cuda_graphs=True)
    ws1 = G1024.mapping(torch.randn(8, G1024.z_dim, generator=torch.Generator().manual_seed(5))).to(device)
    ws2 = G1024.mapping(torch.randn(8, G1024.z_dim, generator=torch.Generator().manual_seed(6))).to(device)
    with torch.inference_mode():  # captured in inference mode (as the streamer does) ...
        engine.prepare([8])
        first = ops.to_uint8(engine.run(ws1)).cpu().numpy()
    second = ops.to_uint8(engine.run(ws2)).cpu().numpy()  # ... and run outside it
    assert psnr_u8(first, second) < 30, "the replay follows its input (the graph is not empty)"
    assert min(psnr_u8(x, y) for x, y in zip(second, eager_frames(G1024, ws2, device))) >= 35
    short = ops.to_uint8(engine.run(ws1[:3])).cpu().numpy()  # a short batch runs padded in the bucket of 8
    assert engine.bucket(3) == 8
    assert min(psnr_u8(x, y) for x, y in zip(short, first[:3])) >= 35
