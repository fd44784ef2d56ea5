"""kill -9 at random moments: every output under its final name is complete and valid, and a rerun finishes the job.

The way SQLite proves its journal: stop the writer where it hurts, then look at the disk. Each target is a real
``stylemotion`` command (or, for the engine cache, a writer loop) in its own process group. It is started, killed
with SIGKILL at a random moment, and everything under a final name is checked: MP4s decode to every frame (with
the ffmpeg that imageio-ffmpeg ships, tests/helpers.py), latents/safetensors/ONNX/plans load and hold what they
should. Then it is started again in the same folder (so later kills land on a run that is resuming a killed one),
and again, ``KILLS`` times. A last run without a kill must finish the work, redo only what was missing, and leave
no temporary behind.

``STYLEMOTION_KILLS`` sets the kills per target (a few in ``make test``, 25 in ``make fuzz``);
``STYLEMOTION_KILL_REPORT`` names a JSON file for the counts (written at the end of the session).
"""
from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ..helpers import count_frames

KILLS = int(os.environ.get("STYLEMOTION_KILLS", "1"))
REPORT = os.environ.get("STYLEMOTION_KILL_REPORT")
STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
RNG = random.Random(int(os.environ.get("STYLEMOTION_KILL_SEED", "0")) or None)


# ------------------------------------------------------------------------------------------------ the harness


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def temporaries(folder: Path) -> list[Path]:
    """Our writers' temporaries: hidden names (a leading dot) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob(".*"))


def wait_for_orphans(folder: Path, timeout: float = 60) -> None:
    """Wait until no process mentions ``folder`` on its command line (an encoder left by a killed parent finishes
    its temporary and exits when its input closes)."""
    deadline = time.monotonic() + timeout
    needle = str(folder).encode()
    while time.monotonic() < deadline:
        busy = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    busy |= needle in (entry / "cmdline").read_bytes()
                except OSError:
                    pass
        if not busy:
            return
        time.sleep(0.1)
    pytest.fail(f"a process still uses {folder} {timeout:g} s after its parent was killed")


def kill_at_random(target: str, args: list[str], folder: Path, within: float) -> bool:
    """Start ``args`` and SIGKILL its process group at a random moment; True when killed (False when it finished
    first: it must then have succeeded).

    Half the kills land anywhere in the first ``within`` seconds (mostly start-up and work between writes); the
    other half aim at writes: they wait until a temporary appears, then strike at once or after a random delay of
    up to a few milliseconds, 0.2 s or 1 s.
    """
    old = set(temporaries(folder))  # stale ones of an earlier kill, until the new run sweeps them
    proc = start(args, folder)
    aim_at_writes = RNG.random() < 0.5
    if aim_at_writes:
        deadline = time.monotonic() + 600
        while proc.poll() is None and not set(temporaries(folder)) - old and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(RNG.choice([0.0, RNG.uniform(0, 0.005), RNG.uniform(0, 0.2), RNG.uniform(0, 1.0)]))
    else:
        time.sleep(RNG.uniform(0.3, within))
    if proc.poll() is not None:
        err = proc.stderr.read().decode(errors="replace")
        assert proc.returncode == 0, f"{target} failed before the kill:\n{err[-3000:]}"
        STATS[target]["finished_before_kill"] += 1
        return False
    mid_write = bool(temporaries(folder))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    STATS[target]["kills"] += 1
    STATS[target]["kills_aimed_at_writes" if aim_at_writes else "kills_at_any_moment"] += 1
    STATS[target]["kills_with_a_temporary_open"] += mid_write
    wait_for_orphans(folder)
    return True


def run_to_end(target: str, args: list[str], folder: Path, timeout: float = 600) -> str:
    out = subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, f"{target}: the run after the kills failed:\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def hammer(target: str, args: list[str], folder: Path, within: float, check, *, fresh=None) -> None:
    """KILLS random kills, ``check(folder)`` after each; ``fresh(folder)`` resets a folder whose run finished."""
    for _ in range(KILLS):
        killed = kill_at_random(target, args, folder, within)
        STATS[target]["final_outputs_checked"] += check(folder)
        if not killed and fresh is not None:
            fresh(folder)


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes every byte: a torn PNG raises
        return im.size


def write_report(failed_tests: int) -> None:  # called from conftest.py at the end of the session
    if not REPORT or not STATS:
        return
    data = {"date": datetime.date.today().isoformat(), "kills_per_target": KILLS, "failed_tests": failed_tests,
            "targets": {t: dict(sorted(c.items())) for t, c in sorted(STATS.items())},
            "total_kills": sum(c["kills"] for c in STATS.values()),
            "total_kills_with_a_temporary_open": sum(c["kills_with_a_temporary_open"] for c in STATS.values()),
            "python": platform.python_version(), "machine": platform.machine()}
    tmp = f"{REPORT}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, REPORT)


# ------------------------------------------------------------------------------------------------ the targets

MODEL = "digiface-64"  # the bundled model: real weights, small, own directions


def test_video(tmp_path):
    out = tmp_path / "v.mp4"
    args = ["-m", "stylemotion", "video", MODEL, "--script", "happy:2,sad:2", "--fps", "12", "--coeff", "6",
            "--out", str(out), "--sheet", str(tmp_path / "sheet.png"), "--quiet"]
    seen: list[int] = []

    def check(folder: Path) -> int:
        n = 0
        if out.exists():
            seen.append(count_frames(out))
            n += 1
        if (folder / "sheet.png").exists():
            png_size(folder / "sheet.png")
            n += 1
        return n

    hammer("video", args, tmp_path, 6.0, check)
    run_to_end("video", args, tmp_path)
    frames = count_frames(out)
    assert frames >= 40 and all(s == frames for s in seen), (frames, seen)  # never a shorter video
    assert temporaries(tmp_path) == []


def _faces(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def test_embed(tmp_path):
    from stylemotion.pipeline.latents_io import read_latents

    n = 6
    _faces(tmp_path / "faces", n)
    out = tmp_path / "lat.npz"
    args = ["-m", "stylemotion", "embed", str(tmp_path / "faces"), "--ckpt", MODEL, "--out", str(out), "--steps",
            "40", "--perceptual", "none", "--device", "cpu", "--seed", "1", "--quiet"]
    kept: dict[str, np.ndarray] = {}  # rows seen after a kill must survive the rerun unchanged (resumed, not redone)

    def check(folder: Path) -> int:
        if not out.exists():
            return 0
        data = read_latents(out)
        sources = [str(s) for s in data["source"]]
        assert len(sources) == len(set(sources)) and 1 <= len(sources) <= n, sources
        assert np.isfinite(data["ws"]).all()
        for s, w in zip(sources, data["ws"]):
            kept.setdefault(s, w)
        return 1

    hammer("embed", args, tmp_path, 12.0, check, fresh=lambda f: (out.unlink(), kept.clear()))
    log = run_to_end("embed", args, tmp_path)
    data = read_latents(out)
    assert len(data["ws"]) == n and len(set(map(str, data["source"]))) == n
    by_source = dict(zip(map(str, data["source"]), data["ws"]))
    for s, w in kept.items():
        np.testing.assert_array_equal(by_source[s], w)
    if kept:
        assert f"{len(kept)} kept from an earlier run" in log, log
    STATS["embed"]["rows_resumed_not_redone"] += len(kept)
    assert temporaries(tmp_path) == [], log


def test_render_batch(tmp_path):
    from stylemotion.runtime.batch import read_manifest

    jobs = tmp_path / "jobs.csv"
    ids = [f"v{i}" for i in range(5)]
    jobs.write_text("id,seed,script,fps\n" + "".join(f"{j},{i},\"happy:1,neutral:1\",10\n"
                                                      for i, j in enumerate(ids)))
    out = tmp_path / "out"
    args = ["-m", "stylemotion", "render-batch", str(jobs), "--out", str(out), "--ckpt", MODEL, "--threads", "1",
            "--quiet"]
    frames: set[int] = set()

    def check(folder: Path) -> int:
        videos = sorted(out.glob("v*.mp4")) if out.exists() else []
        for v in videos:
            frames.add(count_frames(v))
        if out.exists():
            read_manifest(out)  # a torn last line is ignored, never an error
        return len(videos)

    hammer("render-batch", args, tmp_path, 7.0, check, fresh=lambda f: shutil.rmtree(out))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} if out.exists() else {}
    done_before = {i for i, row in read_manifest(out).items() if row.get("status") == "ok"} if out.exists() else set()
    run_to_end("render-batch", args, tmp_path)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()
            and line.strip().startswith("{") and line.strip().endswith("}")]
    ok = collections.Counter(r["id"] for r in rows if r.get("status") == "ok")
    assert sorted(ok) == ids and set(ok.values()) == {1}, ok  # each video once in the manifest
    for i in ids:
        frames.add(count_frames(out / f"{i}.mp4"))
    assert len(frames) == 1, frames  # every video ever seen under a final name was whole
    for i in done_before:  # finished jobs were not redone
        assert (out / f"{i}.mp4").stat().st_mtime_ns == before[f"{i}.mp4"]
    STATS["render-batch"]["jobs_kept_not_redone"] += len(done_before)
    assert temporaries(out) == []


@pytest.mark.skipif(KILLS < 2, reason="an export takes 20 s: its kills run in make fuzz (make test's SIGINT/SIGTERM "
                                      "cases in tests/test_signals.py cover it briefly)")
def test_export(tmp_path):
    import onnx

    out = tmp_path / "onnx"
    args = ["-m", "stylemotion", "export", MODEL, "--out", str(out), "--batch", "1:1:2"]

    def check(folder: Path) -> int:
        graphs = sorted(out.glob("*.onnx")) if out.exists() else []
        for g in graphs:  # a graph under its final name comes with its weights and sidecar, all whole
            onnx.checker.check_model(str(g), full_check=True)
            model = onnx.load(str(g))  # reads the external weights
            assert model.graph.initializer or model.graph.node
            sidecar = json.loads(g.with_suffix(".json").read_text())
            assert sidecar["name"] == g.stem and sidecar["checks"]["onnx_checker_full"] is True
        return len(graphs)

    hammer("export", args, tmp_path, 24.0, check, fresh=lambda f: shutil.rmtree(out))
    run_to_end("export", args, tmp_path)
    assert {g.stem for g in out.glob("*.onnx")} == {"synthesis", "mapping", "vgg16"}
    check(tmp_path)
    assert temporaries(tmp_path) == []


CACHE_WRITER = textwrap.dedent("""
    import sys
    from stylemotion.engines.cache import CacheKey, EngineCache

    cache = EngineCache(sys.argv[1])
    stored = 0
    for i in range(int(sys.argv[2])):
        key = CacheKey("synthesis", str(i), "tensorrt", "10", "gpu", "9.0", "fp16", (1, 8, 32))
        if cache.load(key) is None:  # a rerun stores only what is missing
            cache.store(key, (b"%08d" % i) * (1 << 20))  # 8 MiB
            stored += 1
    print("stored", stored)
""")


def test_engine_cache(tmp_path):
    from stylemotion.engines.cache import CacheKey, EngineCache

    n = 24
    root = tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(CACHE_WRITER)
    args = [str(script), str(root), str(n)]
    keys = [CacheKey("synthesis", str(i), "tensorrt", "10", "gpu", "9.0", "fp16", (1, 8, 32)) for i in range(n)]
    expected = {EngineCache(root).paths(k)[0].name: (b"%08d" % i) * (1 << 20) for i, k in enumerate(keys)}

    def check(folder: Path) -> int:
        plans = sorted(p for p in root.glob("*.plan") if not p.name.startswith(".")) if root.exists() else []
        for p in plans:  # every plan under its final name is whole, with or without its sidecar yet
            assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(expected[p.name]).digest(), p
        cache = EngineCache(root)
        for k in keys:
            data = cache.load(k)
            assert data is None or data == expected[cache.paths(k)[0].name]
        return len(plans)

    hammer("engine-cache", args, tmp_path, 4.0, check, fresh=lambda f: shutil.rmtree(root))
    present = sum(EngineCache(root).load(k) is not None for k in keys) if root.exists() else 0
    log = run_to_end("engine-cache", args, tmp_path)
    assert f"stored {n - present}" in log  # only what was missing
    assert all(EngineCache(root).load(k) == expected[EngineCache(root).paths(k)[0].name] for k in keys)
    assert temporaries(tmp_path) == []
