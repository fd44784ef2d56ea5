"""bench/gpu_check.sh cannot rot unseen: its CPU dry run (the same steps on a tiny model) runs here, and a GPU run
on a machine without a GPU stops before spending anything."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def run_script(tmp_path: Path, timeout: float, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "OUT"}  # never hand a dry run's files to a device call
    full.update(PYTHON=sys.executable, TMPDIR=str(tmp_path), STYLEMOTION_CACHE_DIR=str(tmp_path / "cache"), **env)
    return subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=full, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_dry_run_runs_every_step_on_a_tiny_model(tmp_path):
    results = tmp_path / "results"
    committed = sorted((ROOT / "bench" / "results").rglob("*"))
    t0 = time.monotonic()
    proc = run_script(tmp_path, timeout=240, STYLEMOTION_GPU_CHECK_DEVICE="cpu",
                      STYLEMOTION_GPU_CHECK_RESULTS=str(results))
    seconds = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "gpu_check on cpu: passed" in out
    for step in ("cpp_ext build", "pytest -m gpu", "cuda plan", "serve tiny-32", "generator tiny-32",
                 "stream tiny-32", "ops", "engines tiny-32", "projector tiny-32"):
        assert f"=== {step}: exit 0 in" in out, step
    names = sorted(p.name for p in results.iterdir())
    generator = [n for n in names if n.endswith("-tiny-32.json")
                 and not n.startswith(("engines-", "embed-", "stream-", "ops-", "serve-"))]
    plan = [n for n in names if n.startswith("cuda_plan-") and n.endswith(".json")]
    assert len(plan) == 1, names
    plan_report = json.loads((results / plan[0]).read_text())
    assert {r["engine"] for r in plan_report["rows"]} == {"reference fp32", "plan fp32"}, plan_report["rows"]
    assert all(q["psnr_db"] > 60 for q in plan_report["quality"]), plan_report["quality"]  # fp32 = reference
    assert plan_report["profiles"] and not plan_report["failures"], plan_report
    serve = [n for n in names if n.startswith("serve-") and n.endswith("-tiny-32.json")]
    assert len(serve) == 1 and all(r["render_errors"] == 0 for r in json.loads((results / serve[0]).read_text())
                                   ["rows"]), names
    engines = [n for n in names if n.startswith("engines-") and n.endswith("-tiny-32.json")]
    embed = [n for n in names if n.startswith("embed-") and n.endswith("-tiny-32.json")]
    runtime = [n for n in names if n.startswith("stream-") and n.endswith("-tiny-32.json")]
    assert len(generator) == len(engines) == len(embed) == len(runtime) == 1, names
    report = json.loads((results / runtime[0]).read_text())
    assert report["offline"] and report["realtime"]["frames"] > 0, report
    assert any(n.startswith("gpu_check-cpu-") and n.endswith(".log") for n in names), names
    rows = json.loads((results / engines[0]).read_text())["rows"]
    assert "torch cpu fp32" in {r["engine"] for r in rows} and all(r["device"] == "cpu" for r in rows), rows
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        assert "onnxruntime cpu fp32" in {r["engine"] for r in rows}, rows
    assert sorted((ROOT / "bench" / "results").rglob("*")) == committed, "a dry run wrote into bench/results/"
    assert seconds < 150, f"the dry run took {seconds:.0f} s (it must stay under two and a half minutes)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_run_without_a_gpu_stops_at_once(tmp_path):
    proc = run_script(tmp_path, timeout=120, STYLEMOTION_GPU_CHECK_RESULTS=str(tmp_path / "results"))
    assert proc.returncode == 1
    assert "cuda is not usable here with" in proc.stderr and "nothing else was run" in proc.stderr
    assert "pytest -m gpu" not in proc.stdout


def test_bad_settings_are_refused(tmp_path):
    proc = run_script(tmp_path, timeout=60, STYLEMOTION_GPU_CHECK_DEVICE="tpu")
    assert proc.returncode == 2 and "must be cuda, cuda:N or cpu, got 'tpu'" in proc.stderr
    proc = run_script(tmp_path, timeout=60, STYLEMOTION_GPU_CHECK_DEVICE="cpu", STYLEMOTION_GPU_CHECK_BUDGET="1m")
    assert proc.returncode == 2 and "whole seconds" in proc.stderr
