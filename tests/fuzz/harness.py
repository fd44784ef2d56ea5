"""The fuzzing harness: every target feeds inputs to a reader and accepts exactly two outcomes, success or a
``StylemotionError`` whose message names the input. Anything else fails the example: another exception type, a
hang (an input taking longer than ``TIME_LIMIT`` seconds: an alarm raises ``Hang``, a BaseException so that no
reader's ``except Exception`` can swallow it) or peak memory growing by more than ``MEMORY_LIMIT_MB``.

``STYLEMOTION_FUZZ_EXAMPLES`` sets the examples per target (a few in ``make test``, thousands in ``make fuzz``);
``STYLEMOTION_FUZZ_REPORT`` names a JSON file for the count per target (written by conftest.py).
"""
from __future__ import annotations

import collections
import os
import resource
import signal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from stylemotion.errors import StylemotionError

EXAMPLES = int(os.environ.get("STYLEMOTION_FUZZ_EXAMPLES", "25"))
LONG = EXAMPLES > 200
TIME_LIMIT = float(os.environ.get("STYLEMOTION_FUZZ_TIME_LIMIT", "20"))
MEMORY_LIMIT_MB = float(os.environ.get("STYLEMOTION_FUZZ_MEMORY_MB", "1024"))
COUNTS: collections.Counter = collections.Counter()
ERRORS: collections.Counter = collections.Counter()  # typed errors per target (the inputs that were refused)

# Short runs (make test) are derandomised, so CI sees the same inputs every time; long runs explore.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


class Hang(BaseException):
    """An input took longer than TIME_LIMIT seconds."""


def _alarm(signum, frame):
    raise Hang(f"no answer within {TIME_LIMIT:g} s")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(target: str, fn, where: str) -> None:
    """Run ``fn()``; success or a StylemotionError naming ``where`` pass, everything else fails."""
    COUNTS[target] += 1
    before = peak_rss_mb()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        fn()
    except StylemotionError as exc:
        ERRORS[target] += 1
        if where not in str(exc):
            keep(target, where)
        assert where in str(exc), f"{type(exc).__name__} does not name the input {where!r}: {exc}"
    except BaseException:
        keep(target, where)  # a hang (a BaseException) is not shrunk by Hypothesis: keep the input itself
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    grown = peak_rss_mb() - before
    if grown >= MEMORY_LIMIT_MB:
        keep(target, where)
    assert grown < MEMORY_LIMIT_MB, f"peak memory grew by {grown:.0f} MB on one input"


def keep(target: str, where: str) -> None:
    """Copy a failing input file to ``STYLEMOTION_FUZZ_CRASH_DIR`` (default ``.fuzz-crashes``), named by target
    and content hash, to become a regression case."""
    import hashlib
    import shutil
    from pathlib import Path

    src = Path(where) if where else None
    if src is None or not src.is_file():
        return
    folder = Path(os.environ.get("STYLEMOTION_FUZZ_CRASH_DIR", ".fuzz-crashes"))
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    shutil.copyfile(src, folder / f"{target.replace(':', '-')}-{digest}{src.suffix}")


@st.composite
def mutated(draw, base: bytes, *, head: int = 0) -> bytes:
    """``base`` changed by 1-4 edits: truncation, flipped bytes, inserted or deleted runs, an overwritten
    little-endian integer (sizes and offsets), or edits within the first ``head`` bytes (headers)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "int", "head"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 2 ** (8 * width) - 1, 2 ** (8 * width - 1), 0x7FFF]))
            data[at:at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
        elif head:
            pos = draw(st.integers(0, min(head, len(data)) - 1))
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)
