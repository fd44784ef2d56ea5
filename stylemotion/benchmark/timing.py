"""Timing and error figures: one engine's runs, several engines round-robin, percentiles, PSNR.

Every run is synchronised with its device before the host clock is read; warm-up runs are never timed."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

__all__ = ["percentile", "psnr", "round_robin", "sync", "time_runs"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_runs(engine, ws: torch.Tensor, *, device: str, warmup: int, iters: int, min_seconds: float,
              max_seconds: float = 30.0) -> list[float]:
    """Seconds per ``engine.run`` after ``warmup`` runs: ``iters`` runs and at least ``min_seconds`` (at most 1000
    runs), cut short after ``max_seconds`` once 3 runs are in (slow rows: 1024x1024 on a CPU); each run
    synchronised before the clock is read."""
    for _ in range(warmup):
        engine.run(ws)
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        spent = time.perf_counter() - start
        if len(times) >= 3 and spent > max_seconds:
            break
        if len(times) >= iters and (spent >= min_seconds or len(times) >= 1000):
            break
        t0 = time.perf_counter()
        engine.run(ws)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def round_robin(engines: list, ws: torch.Tensor, *, device: str, warmup: int, iters: int, min_seconds: float,
                max_seconds: float = 30.0) -> list[list[float]]:
    """Seconds per ``run`` of each engine, timed one run of each in turn (order rotated every round): at least
    ``iters`` rounds and ``min_seconds`` per engine on average (at most 1000 rounds), cut short after
    ``max_seconds`` per engine once 3 rounds are in. Each run is synchronised before the clock is read."""
    inputs = [ws.to(e.info.device) for e in engines]
    for e, x in zip(engines, inputs):
        for _ in range(warmup):
            e.run(x)
    sync(device)
    times: list[list[float]] = [[] for _ in engines]
    start = time.perf_counter()
    rounds = 0
    n = max(len(engines), 1)
    while True:
        spent = (time.perf_counter() - start) / n
        if rounds >= 3 and spent > max_seconds:
            break
        if rounds >= iters and (spent >= min_seconds or rounds >= 1000):
            break
        order = list(range(len(engines)))
        k = rounds % n
        for i in order[k:] + order[:k]:
            t0 = time.perf_counter()
            engines[i].run(inputs[i])
            sync(device)
            times[i].append(time.perf_counter() - t0)
        rounds += 1
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double().cpu()
    mse = float(((a.double().cpu() - ref) ** 2).mean())
    peak = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)
