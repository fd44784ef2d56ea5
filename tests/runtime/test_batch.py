"""render-batch: jobs files, exactly-once outputs and resumable reruns, in-process and on a 2-CPU Ray cluster."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from stylemotion.checkpoints import save_generator
from stylemotion.errors import ConfigError
from stylemotion.runtime.batch import Job, JobDefaults, Settings, read_jobs, read_manifest, render_batch

from ..helpers import count_frames, make_generator


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    G = make_generator(img_resolution=32, channel_base=512, channel_max=32, z_dim=32, w_dim=32)
    return str(save_generator(G, tmp_path_factory.mktemp("g") / "g.safetensors"))


def settings(ckpt, **kw):
    return Settings(ckpt=ckpt, directions="random", device="cpu", threads=1, **kw)


def jobs(n, seconds=0.6):
    emotions = ["happy", "sad", "surprise", "angry"]
    return [Job(id=f"v{i:02d}", seed=i, script=f"{emotions[i % 4]}:{seconds},neutral:{seconds}", fps=10)
            for i in range(n)]


def decode(path) -> np.ndarray:
    from stylemotion.pipeline.metrics import read_video_frames

    return np.stack(list(read_video_frames(str(path))))


def test_jobs_files_and_their_errors(tmp_path):
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text("id,seed,script,fps\na,1,happy:1,12\nb,2,\"sad:1,neutral:1\",\n")
    got = read_jobs(csv_file)
    assert [(j.id, j.seed, j.script, j.fps) for j in got] == [("a", 1, "happy:1", 12.0), ("b", 2, "sad:1,neutral:1", 10.0)]
    jl = tmp_path / "jobs.jsonl"
    jl.write_text('{"id": "x", "latents": "l.npz:3", "predict": 4, "lstm": "m.safetensors"}\n\n')
    assert read_jobs(jl)[0].latents == "l.npz:3"
    cases = {
        '{"id": "../evil", "seed": 1, "script": "happy:1"}': r"id '\.\./evil' must be",
        '{"id": "a", "seed": 1, "latents": "l.npz", "script": "happy:1"}': "exactly one of seed and latents",
        '{"id": "a", "seed": 1}': "exactly one of script and predict",
        '{"id": "a", "seed": 1, "predict": 3}': "predict needs a positive count and an lstm",
        '{"id": "a", "seed": 1, "script": "happy:1", "colour": 2}': r"unknown job fields \['colour'\]",
        '{"id": "a", "seed": "one", "script": "happy:1"}': "job 'a'",
        '{"id": "a", "seed": 1, "script": "happy:1", "fps": 0}': "fps must be positive",
        '{"id": "a", "seed": 1, "script": "happy:1", "interp": "cubic"}': "interp must be one of",
        '[1, 2]': "must be a JSON object",
        '{"id": "a",': "not JSON",
        '{"id": "a", "seed": 1, "script": "happy:1"}\n{"id": "a", "seed": 2, "script": "sad:1"}': "repeats",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message) as info:
            read_jobs(bad)
        assert "bad.jsonl:" in str(info.value)
    with pytest.raises(ConfigError, match="no jobs"):
        (tmp_path / "empty.jsonl").write_text("\n")
        read_jobs(tmp_path / "empty.jsonl")


def test_defaults_fill_only_the_fields_a_jobs_file_leaves_out(tmp_path):
    jobs_file = tmp_path / "jobs.csv"
    jobs_file.write_text("id,seed,script,fps,coeff\na,1,happy:1,12,\nb,2,sad:1,,5\n")
    a, b = read_jobs(jobs_file, defaults=JobDefaults(fps=24, seconds=2, interp="linear", coeff=6, transition=0.2,
                                                      trunc=0.5))
    assert (a.fps, a.seconds, a.interp, a.coeff, a.transition, a.trunc) == (12, 2, "linear", 6, 0.2, 0.5)
    assert (b.fps, b.coeff) == (24, 5)  # a job's own value wins
    assert (read_jobs(jobs_file)[1].fps, read_jobs(jobs_file)[0].coeff) == (JobDefaults.fps, JobDefaults.coeff)
    for bad, message in [({"fps": 0}, "default --fps must be positive, got 0"),
                         ({"seconds": -1.0}, "default --seconds must be positive"),
                         ({"transition": -0.5}, "default --transition must be >= 0"),
                         ({"coeff": float("nan")}, "default --coeff must be a finite number"),
                         ({"interp": "cubic"}, "default --interp must be one of")]:
        with pytest.raises(ConfigError, match=message):
            read_jobs(jobs_file, defaults=JobDefaults(**bad))
    with pytest.raises(ConfigError, match="defaults apply to a jobs file"):
        render_batch(jobs(1), tmp_path / "out", settings("unused"), defaults=JobDefaults(fps=5))


def test_in_process_exactly_once_and_resume(ckpt, tmp_path):
    out = tmp_path / "out"
    todo = jobs(3) + [Job(id="broken", latents=str(tmp_path / "missing.npz"), script="happy:0.5")]
    result = render_batch(todo, out, settings(ckpt), progress=False, log=lambda m: None)
    assert result.rendered == 3 and result.failed == ["broken"]
    manifest = read_manifest(out)
    assert {k: v["status"] for k, v in manifest.items()} == {"v00": "ok", "v01": "ok", "v02": "ok", "broken": "failed"}
    assert "missing.npz" in manifest["broken"]["error"] and manifest["broken"]["attempts"] == 3
    for i in range(3):
        assert count_frames(out / f"v{i:02d}.mp4") == manifest[f"v{i:02d}"]["frames"] == 12
    assert not list(out.glob(".*.partial.mp4"))
    # A rerun after an interrupted run: one video lost, one stale temporary left behind; only the missing job
    # (and the failed one) are redone, the temporary is removed.
    (out / "v01.mp4").unlink()
    (out / ".v02.999.partial.mp4").write_bytes(b"half a video")
    before = (out / "v00.mp4").stat().st_mtime_ns
    again = render_batch(todo, out, settings(ckpt), progress=False, log=lambda m: None)
    assert again.skipped == 2 and again.rendered == 1 and again.failed == ["broken"]
    assert (out / "v00.mp4").stat().st_mtime_ns == before and count_frames(out / "v01.mp4") == 12
    assert not (out / ".v02.999.partial.mp4").exists()


def test_cli_render_batch(ckpt, tmp_path, capsys):
    from stylemotion.cli import main

    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(json.dumps({"id": j.id, "seed": j.seed, "script": j.script}) for j in jobs(2)))
    code = main(["render-batch", str(jobs_file), "--out", str(tmp_path / "o"), "--ckpt", ckpt, "--device", "cpu",
                 "--quiet"])
    assert code == 0 and "2 rendered, 0 already complete, 0 failed" in capsys.readouterr().out
    assert main(["render-batch", str(jobs_file), "--out", str(tmp_path / "o"), "--ckpt", ckpt, "--quiet"]) == 0
    assert "0 rendered, 2 already complete" in capsys.readouterr().out


def test_render_batch_without_ray_never_imports_it(ckpt, tmp_path):
    code = ("import sys\nfrom stylemotion.runtime.batch import Job, Settings, render_batch\n"
            f"render_batch([Job(id='a', seed=1, script='happy:0.3')], {str(tmp_path)!r}, "
            f"Settings(ckpt={ckpt!r}, directions='random', device='cpu'), progress=False)\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([os.sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- Ray

ray_missing = importlib.util.find_spec("ray") is None


@pytest.fixture(scope="module")
def ray_cluster():
    if ray_missing:
        pytest.skip("ray is not installed (pip install 'stylemotion[ray]')")
    import ray

    ray.init(num_cpus=2, resources={"fake_gpu": 2}, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def ray_kwargs():
    return dict(ray_address="local", actors=2, cpus_per_actor=0.5, actor_resources={"fake_gpu": 1},
                progress=False, log=lambda m: None)


@pytest.mark.slow
def test_ray_renders_every_job_exactly_once_and_like_in_process(ray_cluster, ckpt, tmp_path):
    todo = jobs(12)
    result = render_batch(todo, tmp_path / "ray", settings(ckpt), **ray_kwargs())
    assert result.rendered == 12 and not result.failed
    lines = [json.loads(x) for x in (tmp_path / "ray" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == [j.id for j in todo]  # each exactly once
    # Two actors were started, each with its own engine (which of them renders how many jobs is Ray's choice).
    assert len(list((tmp_path / "ray" / ".workers").iterdir())) == 2
    assert {r["worker"] for r in lines} <= {int(p.name) for p in (tmp_path / "ray" / ".workers").iterdir()}
    local = render_batch(todo[:3], tmp_path / "local", settings(ckpt), progress=False, log=lambda m: None)
    assert local.rendered == 3
    for j in todo:
        assert count_frames(tmp_path / "ray" / f"{j.id}.mp4") == 12
    for j in todo[:3]:
        np.testing.assert_array_equal(decode(tmp_path / "ray" / f"{j.id}.mp4"), decode(tmp_path / "local" / f"{j.id}.mp4"))
    # An interrupted run's rerun renders only what is missing.
    for j in todo[:2]:
        (tmp_path / "ray" / f"{j.id}.mp4").unlink()
    again = render_batch(todo, tmp_path / "ray", settings(ckpt), **ray_kwargs())
    assert again.skipped == 10 and again.rendered == 2


@pytest.mark.slow
def test_killing_an_actor_mid_run_still_gives_every_video_once(ray_cluster, ckpt, tmp_path):
    out = tmp_path / "killed"
    todo = jobs(12, seconds=1.5)
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=render_batch(todo, out, settings(ckpt), **ray_kwargs())))
    thread.start()
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        workers = sorted((out / ".workers").glob("*")) if (out / ".workers").exists() else []
        if len(workers) >= 2 and read_manifest(out):
            victim = int(workers[0].name)
        time.sleep(0.05)
    assert victim is not None, "the actors never started"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    result = box["result"]
    assert not result.failed, result
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == [j.id for j in todo]
    for j in todo:
        assert count_frames(out / f"{j.id}.mp4") == 30
    render_batch(todo, out, settings(ckpt), progress=False, log=lambda m: None)
    assert not list(out.glob(".*.partial.mp4"))


@pytest.mark.slow
def test_eval_on_ray_equals_in_process(ray_cluster):
    from stylemotion.pipeline.directions import random_directions
    from stylemotion.runtime.jobs import evaluate

    G = make_generator(img_resolution=32, channel_base=512, channel_max=32, z_dim=32, w_dim=32)
    dirs = random_directions(G.w_dim, seed=1)
    kw = dict(videos=4, emotions_per_video=2, seconds=0.4, fps=10, progress=False, device="cpu")
    here = evaluate(G, dirs, **kw)
    there = evaluate(G, dirs, ray_address="local", actors=2, **kw)
    assert here.keys() == there.keys() == {"linear", "smooth", "random walk"}
    for row in here:
        for k, v in here[row].items():
            assert there[row][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (row, k)
