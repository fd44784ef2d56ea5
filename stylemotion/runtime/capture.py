"""What the runtime asks of an engine before streams start, and while several threads share it.

CUDA graphs are captured once, before any stream is admitted (``prepare``), for the batch *buckets* the hub or a
streamer can form; a batch between two buckets runs in the larger one. After that nothing captures while other
threads touch the device: a capture in PyTorch's default (global) mode while another thread moved a module or
ran a kernel crashed the hub on a GPU with several streams. ``holding(engine)`` is the engine's lock, held from
``run`` until its reused output buffer has been read (engines without one need none).
"""
from __future__ import annotations

import contextlib
from typing import Iterable


def buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes to capture for batches of 1..max_batch: powers of two, and max_batch itself (padding costs
    at most half a bucket of work, and each bucket is one graph in one shared memory pool)."""
    if max_batch < 1:
        return ()
    sizes = {max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return tuple(sorted(sizes))


def prepare(engine, batches: Iterable[int]) -> tuple[int, ...]:
    """Have ``engine`` capture whatever it captures for ``batches`` now (a no-op for engines without CUDA
    graphs). Returns what the engine reports as prepared."""
    prep = getattr(engine, "prepare", None)
    return tuple(prep(list(batches))) if prep is not None else ()


def holding(engine):
    """The engine's lock (re-entrant), or a no-op for engines that return fresh tensors."""
    lock = getattr(engine, "lock", None)
    return lock if lock is not None else contextlib.nullcontext()
