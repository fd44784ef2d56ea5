"""bench/run.py: the schema of its results, honest 'not available' rows, and the --quick run on a tiny model."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stylemotion.benchmark import Settings, run

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"model", "row", "backend", "precision", "baseline", "batch", "runs", "ms_per_batch", "ms_p10", "ms_p90",
            "images_per_s", "gflop_per_image", "fraction_of_peak", "build_s", "detail", "speedup",
            "max_abs_err_vs_fp32_reference"}


def check_schema(result: dict, out: Path) -> None:
    assert {"device", "date", "environment", "matrix_rate_gflops", "baseline", "rows", "not_available",
            "runtime", "consistency", "settings"} <= result.keys()
    env = result["environment"]
    assert {"cpu", "cpu_flags", "threads", "versions", "gpu", "driver"} <= env.keys() and "torch" in env["versions"]
    assert result["matrix_rate_gflops"]["fp32"] > 0
    rows = result["rows"]
    assert rows, "no row was timed"
    for r in rows:
        missing = ROW_KEYS - r.keys()
        assert not missing, (r["row"], missing)
        assert r["images_per_s"] > 0 and r["ms_p10"] <= r["ms_per_batch"] <= r["ms_p90"]
        assert r["speedup"] is not None and r["speedup"] > 0
        if r["batch"] == 1:
            assert r["latency_ms_p50"] <= r["latency_ms_p99"]
        if r["precision"] == "fp32":
            assert r["max_abs_err_vs_fp32_reference"] < 1e-4, r
    baselines = [r for r in rows if r["baseline"]]
    assert baselines and all(r["speedup"] == 1.0 for r in baselines)
    assert all("torch eager, official form" in r["row"] for r in baselines)
    for u in result["not_available"]:
        assert u["reason"] and "images_per_s" not in u
    stem = out / Path(next(out.glob("*.json")).name).stem
    md = stem.with_suffix(".md").read_text()
    assert "| model | engine |" in md
    for u in result["not_available"]:
        assert f"{u['row']}: not available: {u['reason']}" in md
    assert stem.with_suffix(".png").stat().st_size > 1000
    assert json.loads(stem.with_suffix(".json").read_text())["rows"] == json.loads(json.dumps(rows))


def test_missing_backends_are_reported_never_timed(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("openvino", "tensorrt") else real(name, *a))
    result = run(Settings(models=["tiny-32"], backends=["torch", "openvino", "tensorrt"],
                          precisions=["fp32", "bf16", "fp16"], batches=[1, 2], iters=2, warmup=1, min_seconds=0,
                          runtime=False, out=tmp_path), log=lambda m: None)
    check_schema(result, tmp_path)
    timed = {r["row"] for r in result["rows"]}
    assert {"torch eager, official form (baseline)", "torch eager, fast CPU plan"} <= timed
    assert timed <= {"torch eager, official form (baseline)", "torch eager, fast CPU plan",
                     "torch eager, official form, default malloc"}  # the last only before the allocator policy
    reasons = {u["row"]: u["reason"] for u in result["not_available"]}
    assert "openvino is not installed (pip install 'stylemotion[openvino]')" in reasons["openvino, fast CPU plan"]
    assert "tensorrt package is not installed" in reasons["tensorrt fp16"]
    assert "fp16 needs CUDA" in reasons["torch fp16"]
    assert result["consistency"]["row"] == "torch eager, fast CPU plan"


@pytest.mark.slow
def test_quick_run_of_the_script_on_a_tiny_model(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--model", "tiny-32", "--quick",
                           "--out", str(tmp_path), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    check_schema(result, tmp_path)
    assert result["settings"]["quick"] and result["settings"]["batches"] == [1]
    assert result["runtime"] and result["runtime"][0]["offline_fps"] > 0
    names = {r["row"] for r in result["rows"]}
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("onnxscript"):
        assert {"openvino, official graph", "openvino, fast CPU plan"} <= names
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        assert "onnxruntime, reference graph" in names  # --quick leaves out the CPU plan's graph
    assert "not available: " in proc.stdout
    (auto,) = [r for r in result["rows"] if r["row"] == "auto"]  # what open_engine(backend="auto") picks here
    assert auto["auto_chose"] in ("torch-fast", "openvino-fast") and auto["detail"].startswith("auto: ")
    (summary,) = result["auto"]
    assert summary["chose"] == auto["auto_chose"] and summary["fastest_row"] != "auto"
    assert f"auto (chose {auto['auto_chose']})" in proc.stdout and f"chose {auto['auto_chose']}: " in proc.stdout
    assert (tmp_path / "cache" / "choices").is_dir(), "the auto row keeps its choice in the cache it was given"


def test_stylemotion_bench_command(tmp_path, capsys):
    from stylemotion.cli import main

    code = main(["bench", "--model", "tiny-32", "--backend", "torch", "--precision", "fp32", "--batch", "1",
                 "--iters", "2", "--warmup", "1", "--min-seconds", "0", "--no-runtime", "--tag", "cli",
                 "--out", str(tmp_path)])
    assert code == 0
    (path,) = tmp_path.glob("*-cli.json")
    result = json.loads(path.read_text())
    assert [r["row"] for r in result["rows"]][0] == "torch eager, official form (baseline)"
    assert "speed-up" in capsys.readouterr().out


def test_bad_bench_settings_are_refused(tmp_path):
    from stylemotion.cli import main

    assert main(["bench", "--model", "tiny-32", "--backend", "cuda-magic", "--out", str(tmp_path)]) != 0
    assert main(["bench", "--model", "tiny-32", "--batch", "0", "--backend", "torch", "--out", str(tmp_path)]) != 0
    assert not list(tmp_path.glob("*.json"))


def a_result(batches, models=("ffhq-256",), spread=1.0) -> dict:
    """A result dict as sweep.run writes it (the fields the chart reads)."""
    rows = []
    for m, model in enumerate(models):
        for b in batches:
            for i, (name, backend) in enumerate([("torch eager, official form (baseline)", "torch"),
                                                 ("auto", "auto"), ("torch eager, fast CPU plan", "torch"),
                                                 ("openvino, official graph", "openvino")]):
                ips = (1.0 + i) * spread ** i / (1 + m * 10)
                rows.append({"model": model, "row": name, "backend": backend, "precision": "fp32", "batch": b,
                             "baseline": i == 0, "images_per_s": ips, "speedup": 1.0 + i,
                             **({"auto_chose": "torch-fast"} if backend == "auto" else {})})
    return {"device": "Some CPU x2 threads", "date": "2026-12-01T00:00:00+00:00", "rows": rows}


@pytest.mark.parametrize("batches,spread", [([1], 1.0), ([1], 10.0), ([1, 4, 16], 1.0), ([1, 8], 10.0)])
def test_charts_are_drawn_with_matplotlib(tmp_path, batches, spread):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from stylemotion.benchmark import engine_chart, redraw

    result = a_result(batches, models=("ffhq-256", "ffhq-1024"), spread=spread)
    path = engine_chart(tmp_path / "chart.png", result)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 300
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    (tmp_path / "saved.json").write_text(json.dumps(result))
    assert redraw(tmp_path / "saved.json") == tmp_path / "saved.png" and (tmp_path / "saved.png").stat().st_size > 1000


def test_without_matplotlib_the_figures_are_still_written(tmp_path, monkeypatch):
    from stylemotion.benchmark import write_outputs

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "import matplotlib" fails as where it is not installed
    result = {**a_result([1]), "matrix_rate_gflops": {}, "not_available": [], "runtime": [], "consistency": None}
    for r in result["rows"]:
        r.update(ms_per_batch=1.0, ms_p10=1.0, ms_p90=1.0, max_abs_err_vs_fp32_reference=0.0, build_s=0.0)
    lines = []
    write_outputs(tmp_path, result, log=lines.append)
    assert (tmp_path / "Some_CPU_x2_threads-2026-12-01.json").exists() and not list(tmp_path.glob("*.png"))
    assert "no chart: matplotlib is required" in lines[-1] and "stylemotion[bench]" in lines[-1]
