"""bench/soak.py: a short soak of `stylemotion serve` with the bundled model passes and reports every figure; its
verdict fails on growth and on unexpected answers."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

ROOT = Path(__file__).resolve().parents[2]


def _soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_passes_and_reports_every_figure(tmp_path):
    soak = _soak_module()
    code = soak.main(["--seconds", "24", "--warmup", "6", "--sample", "1", "--out", str(tmp_path), "--quiet"])
    result = json.loads(next(tmp_path.glob("soak-*.json")).read_text())
    assert code == 0, result["failures"]
    assert result["passed"] and result["server_errors"] == 0 and result["server_tracebacks"] == 0
    assert abs(result["rss_mib"]["growth_percent"]) < 5
    clients = result["clients"]
    for kind in ("fast_viewer_frames", "slow_viewer_frames", "vanished_viewers", "sessions_created",
                 "controls_valid", "requests_invalid", "frames_polled"):
        assert clients.get(kind, 0) > 0, (kind, clients)
    assert clients.get("unexpected", 0) == 0
    counters = result["server_counters"]
    assert counters["refused_type"] + counters["refused_host"] > 0  # the invalid mix reached the guards
    assert result["requests_served"] > 100 and result["default_stream"]["frames"] > 100
    assert {"rss_kib", "fds", "threads", "queue", "dropped"} <= result["samples"][-1].keys()
    if importlib.util.find_spec("aiortc") is not None:  # WebRTC viewers came and went, and nothing was left open
        assert clients.get("webrtc_viewers_closed", 0) > 0 and clients.get("webrtc_frames", 0) > 0, clients
        assert result["webrtc"]["answered"] > 0 and result["webrtc"]["frames_encoded"] > 0
        assert result["webrtc"]["peers"] == 0 and result["webrtc"]["encoders"] == 0
    assert (tmp_path / next(tmp_path.glob("soak-*.json")).name.replace(".json", ".png")).exists()
    assert "RSS growth after warm-up" in next(tmp_path.glob("soak-*.md")).read_text()


def _samples(rss: list[int], fds: int = 10, threads: int = 8) -> list[dict]:
    return [{"t": float(i), "rss_kib": r, "fds": fds, "threads": threads, "queue": 1} for i, r in enumerate(rss)]


def _args(soak, **kw):
    import argparse

    base = dict(seconds=40, warmup=10, sample=1, model="m", fps=12.0, max_rss_growth=0.05, fd_allowance=8,
                thread_allowance=4)
    return argparse.Namespace(**{**base, **kw})


FINAL = {"server": {"errors": 0, "requests": 10}, "hub": {"error": None}, "frames": 1, "dropped": 0, "fps": 12.0,
         "target_fps": 12.0}


def test_the_verdict_fails_on_webrtc_left_open():
    soak = _soak_module()
    final = {**FINAL, "webrtc": {"peers": 1, "encoders": 1, "encoder_errors": 0}}
    result = soak.judge(_args(soak), _samples([1000] * 40), soak.Tally(), final, "", 0)
    assert not result["passed"] and any("WebRTC left open" in f for f in result["failures"])


def test_the_verdict_fails_on_growth_and_unexpected_answers():
    soak = _soak_module()
    flat = _samples([100_000] * 40)
    assert soak.judge(_args(soak), flat, soak.Tally(), FINAL, "", 0)["passed"]
    growing = _samples([100_000 + 300 * i for i in range(40)])  # +9 % from warm-up to the end
    result = soak.judge(_args(soak), growing, soak.Tally(), FINAL, "", 0)
    assert not result["passed"] and "RSS grew" in result["failures"][0]
    leaking = _samples([100_000] * 10) + [{**s, "fds": 10 + i} for i, s in enumerate(_samples([100_000] * 30))]
    assert any("file descriptors" in f for f in soak.judge(_args(soak), leaking, soak.Tally(), FINAL, "", 0)["failures"])
    tally = soak.Tally()
    tally.bad("POST /control -> 500")
    result = soak.judge(_args(soak), flat, tally, FINAL, "Traceback (most recent call last):\n", 0)
    assert not result["passed"] and any("unexpected" in f for f in result["failures"])
    assert any("tracebacks" in f for f in result["failures"])
