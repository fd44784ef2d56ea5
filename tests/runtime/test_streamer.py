"""The runtime: offline streams are exact and equal the generator's renders; realtime streams keep time, drop
what they cannot render and take control within the look-ahead; the path stays continuous across a change."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.helpers import count_frames
import torch

from stylemotion.errors import ConfigError
from stylemotion.models.stylegan2 import images_to_uint8, z_from_seed
from stylemotion.pipeline.directions import random_directions
from stylemotion.pipeline.interpolate import Schedule, build_segments
from stylemotion.pipeline.keyframes import make_keyframes, parse_script
from stylemotion.runtime import CallbackSink, Frame, stream



def old_video_path(G, dirs, script, *, fps, seed=0, interp="smooth", transition=0.5, coefficient=3.0, psi=0.7):
    """How the video job rendered before the runtime: keyframes -> Schedule -> G.synthesis -> uint8."""
    items = parse_script(script)
    keys = make_keyframes(G, z_from_seed(seed, G.z_dim), dirs, items, coefficient=coefficient, truncation_psi=psi)
    sched = Schedule(keys, build_segments([i.seconds for i in items], fps, transition), interp)
    ws = sched.latents(0, sched.num_frames)
    with torch.no_grad():
        frames = images_to_uint8(G.synthesis(ws, noise_mode="const"))
    return ws, frames.numpy()


@pytest.mark.parametrize("batch, worker", [(1, False), (4, False), (3, True)])
def test_offline_is_exact_in_order_and_equals_the_generator(G, dirs, batch, worker):
    script = "happy:1,surprise:1.5,neutral:0.5"
    ws_ref, ref = old_video_path(G, dirs, script, fps=10)
    s = stream(G, directions=dirs, script=script, fps=10, batch=batch, backend="torch", worker=worker)
    got_ws, frames = [], []
    with s:
        for b in s.batches():
            got_ws.append(b.ws)
            frames.append(b.frames)
    frames = np.concatenate(frames)
    assert len(frames) == 30 == int(10 * (1 + 1.5 + 0.5))
    # the planner makes exactly the latents the video job always made (elementwise math, same order) ...
    assert torch.equal(torch.cat(got_ws), ws_ref)
    # ... and the engine renders them as G.synthesis does (to float rounding: the engine has its own weights)
    assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 1
    assert s.stats()["frames"] == 30 and s.stats()["dropped"] == 0


def test_frames_carry_index_time_and_the_emotion_they_move_to(G, dirs):
    frames = list(stream(G, directions=dirs, script="happy:1,sad:1", fps=10, transition=0.5))
    assert [f.index for f in frames] == list(range(20))
    assert frames[7].time == pytest.approx(0.7) and frames[0].image.shape == (32, 32, 3)
    assert frames[0].image.dtype == np.uint8
    # the emotion changes at the first frame of the transition into it
    assert [f.emotion for f in frames] == ["happy"] * 10 + ["sad"] * 10


def test_onnxruntime_backend_within_tolerance(G, dirs, tmp_path):
    pytest.importorskip("onnxruntime")
    from stylemotion.export.networks import synthesis_spec
    from stylemotion.export.onnx_export import export_onnx

    onnx_path = export_onnx(synthesis_spec(G), tmp_path, batches=[1, 2])
    _, ref = old_video_path(G, dirs, "happy:0.5,sad:0.5", fps=8)
    s = stream(G, directions=dirs, script="happy:0.5,sad:0.5", fps=8, backend="onnxruntime", onnx_path=onnx_path,
               batch=2)
    assert s.engine.info.backend == "onnxruntime"
    frames = np.stack([f.image for f in s])
    assert frames.shape == ref.shape
    assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 2


def test_lstm_source_and_explicit_latents(G, dirs):
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig
    from stylemotion.models.emotion_cnn import EMOTIONS
    from stylemotion.pipeline.sequence import sample_emotions

    lstm = EmotionLSTM(LSTMConfig(hidden=8, layers=4))
    frames = list(stream(G, directions=dirs, lstm=lstm, predict=3, seconds=0.5, fps=8, seed=4))
    assert len(frames) == 12
    expected = [EMOTIONS[i] for i in sample_emotions(lstm, [6], 4, temperature=0.8, seed=4)[1:]]
    assert [frames[i].emotion for i in (0, 4, 8)] == expected  # what `video --predict` would show
    ws = G.mapping(torch.randn(5, G.z_dim))
    got = np.stack([f.image for f in stream(G, latents=ws, batch=2)])
    with torch.no_grad():
        ref = images_to_uint8(G.synthesis(ws)).numpy()
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_bad_configurations_fail_before_any_frame(G, dirs):
    with pytest.raises(ConfigError, match="offline mode renders a finite video"):
        stream(G, directions=dirs)
    with pytest.raises(ConfigError, match="no direction for 'fear'; the directions hold happy"):
        stream(G, directions=random_directions(G.w_dim).__class__(["happy"], np.ones((1, G.w_dim)), "w"),
               script="happy:1,fear:1")
    with pytest.raises(ConfigError, match="mode must be one of"):
        stream(G, directions=dirs, script="happy:1", mode="live")
    with pytest.raises(ConfigError, match="pass generator="):
        from stylemotion.engines import open_engine

        stream(open_engine(G, backend="torch"), directions=dirs, script="happy:1")
    s = stream(G, directions=dirs, script="happy:1", fps=4, mode="realtime")
    with pytest.raises(ConfigError, match="unknown control fields \\['mood'\\]"):
        s.control(mood="happy")
    with pytest.raises(ConfigError, match="speed must be a positive number"):
        s.control(speed=0)
    s.close()


def test_an_engine_is_shared_by_streams(G, dirs):
    from stylemotion.engines import open_engine

    engine = open_engine(G, backend="torch")
    a = [f.image for f in stream(engine, generator=G, directions=dirs, script="happy:0.5", fps=8, seed=1)]
    b = [f.image for f in stream(engine, generator=G, directions=dirs, script="happy:0.5", fps=8, seed=2)]
    assert len(a) == len(b) == 4 and np.abs(a[-1].astype(int) - b[-1].astype(int)).max() > 5  # two faces


# --- realtime ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", [False, True])
def test_realtime_keeps_the_target_fps(G, dirs, worker):
    s = stream(G, directions=dirs, script="happy:1,sad:1.5", fps=12, mode="realtime", worker=worker)
    t0 = time.perf_counter()
    frames = list(s)
    wall = time.perf_counter() - t0
    stats = s.stats()
    assert len(frames) + stats["dropped"] == 30 and stats["dropped"] == 0
    assert stats["fps"] == pytest.approx(12, rel=0.05)
    assert wall == pytest.approx(2.5 + 0.25, abs=0.5)  # the script's length plus the look-ahead


class SlowEngine:
    """Wraps an engine and takes ``seconds`` per call: a generator too slow for the target fps."""

    def __init__(self, engine, seconds: float):
        self.engine, self.seconds, self.info = engine, seconds, engine.info

    def run(self, ws):
        time.sleep(self.seconds)
        return self.engine.run(ws)


def test_realtime_drops_frames_it_cannot_render_and_latency_stays_bounded(G, dirs):
    from stylemotion.engines import open_engine

    slow = SlowEngine(open_engine(G, backend="torch"), 0.2)  # 5 frames/s for a 20 fps stream
    s = stream(slow, generator=G, directions=dirs, script="happy:1,sad:1", fps=20, mode="realtime")
    frames = list(s)
    stats = s.stats()
    assert stats["dropped"] > 0 and len(frames) + stats["dropped"] >= 30
    assert len(frames) < 20
    # a frame is never delivered more than max_late (the look-ahead, 0.25 s) after its due time
    assert stats["lateness_ms"]["p99"] <= 250 + 20
    assert all(b.index > a.index for a, b in zip(frames, frames[1:]))


class FailingEngine(SlowEngine):
    def run(self, ws):
        raise RuntimeError("the engine broke")


@pytest.mark.parametrize("worker", [False, True])
def test_an_engine_failure_reaches_the_caller(G, dirs, worker):
    from stylemotion.engines import open_engine

    broken = FailingEngine(open_engine(G, backend="torch"), 0.0)
    s = stream(broken, generator=G, directions=dirs, script="happy:1", fps=8, worker=worker)
    with pytest.raises(RuntimeError, match="the engine broke"):
        list(s)


def test_control_is_reflected_within_the_lookahead_and_the_path_stays_continuous(G, dirs):
    s = stream(G, directions=dirs, fps=12, mode="realtime", seed=3, transition=0.5)  # endless: the identity, held
    captured: list[tuple[int, torch.Tensor]] = []
    original = s.planner.next_batch

    def record(size):
        batch = original(size)
        if batch is not None:
            captured.append((batch.first, batch.latents.clone()))
        return batch

    s.planner.next_batch = record
    emotions, sent = [], None
    for frame in s:
        emotions.append(frame.emotion)
        if frame.index == 6:
            s.control(emotion="happy")
            sent = frame.index
        if frame.index == 24:
            s.control(emotion="sad", intensity=5.0)
        if frame.index == 40:
            break
    stats = s.stats()
    assert stats["control_latency_ms"]["count"] == 2
    assert stats["control_latency_ms"]["max"] <= 500  # look-ahead 0.25 s + one batch of one frame at 12 fps
    assert emotions[sent] is None and "happy" in emotions[sent:24] and "sad" in emotions[24:]
    path = torch.cat([lat for _, lat in sorted(captured, key=lambda c: c[0])]).reshape(
        sum(len(lat) for _, lat in captured), -1).double()
    steps = (path[1:] - path[:-1]).norm(dim=1)
    # no jump anywhere: every step is a small part of the move, and the largest step is in mid-transition, not at
    # the change (a smooth transition leaves the latent on screen at the velocity it had)
    total = (path[-1] - path[0]).norm() + (path[20] - path[0]).norm()
    assert steps.max() < 0.35 * total
    for change in (i for i in range(1, len(steps) - 1) if steps[i - 1] < 1e-9 < steps[i]):
        assert steps[change] <= steps[change:change + 6].max()


def test_pause_holds_the_face_and_resume_continues(G, dirs):
    s = stream(G, directions=dirs, script="happy:1,sad:1", fps=12, mode="realtime")
    seen = []
    for frame in s:
        seen.append(frame)
        if frame.index == 5:
            s.control(pause=True)
        if frame.index == 14:
            s.control(pause=False)
    frames = [f.image.astype(int) for f in seen]
    held = [i for i in range(1, len(frames)) if np.abs(frames[i] - frames[i - 1]).max() == 0]
    assert len(held) >= 4  # the paused frames repeat the face on screen
    assert len(seen) > 24  # and the script resumed where it paused, so the stream got longer


def test_identity_speed_and_temperature_controls(G, dirs):
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig

    lstm = EmotionLSTM(LSTMConfig(hidden=8, layers=4))
    s = stream(G, directions=dirs, lstm=lstm, fps=12, mode="realtime", seconds=0.5)  # endless LSTM
    first = None
    for frame in s:
        if frame.index == 2:
            first = frame.image.astype(int)
            s.control(seed=99, speed=2.0, temperature=0.1, transition=0.2)
        if frame.index == 16:
            assert np.abs(frame.image.astype(int) - first).max() > 5  # a new face
            break
    assert s.planner.settings.speed == 2.0 and s.planner.settings.temperature == 0.1
    assert s.stats()["control_latency_ms"]["count"] == 1


def test_callback_sink_and_run(G, dirs):
    got = []
    stats = stream(G, directions=dirs, script="happy:0.5", fps=8).run(CallbackSink(lambda f, i: got.append((i, len(f)))))
    assert sum(n for _, n in got) == 4 and stats["frames"] == 4
    assert isinstance(Frame(0, 0.0, np.zeros((1, 1, 3), np.uint8), None), Frame)


# --- the command ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(G, tmp_path_factory):
    from stylemotion.checkpoints import save_generator

    return save_generator(G, tmp_path_factory.mktemp("g") / "g.safetensors")


def test_stream_stdout_into_ffmpeg_gives_exactly_the_scripted_frames(ckpt, tmp_path):
    import subprocess
    import sys

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    cmd = [sys.executable, "-m", "stylemotion", "stream", str(ckpt), "--directions", "random", "--script",
           "happy:1,surprise:1.5,neutral:0.5", "--fps", "10", "--mode", "offline", "--stdout"]
    producer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    consumer = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pixel_format",
                               "rgb24", "-video_size", "32x32", "-framerate", "10", "-i", "-", "-f", "framemd5", "-"],
                              stdin=producer.stdout, capture_output=True, text=True, timeout=300)
    producer.stdout.close()
    err = producer.communicate(timeout=60)[1].decode()
    assert producer.returncode == 0 and consumer.returncode == 0, err + consumer.stderr
    frames = [line for line in consumer.stdout.splitlines() if line and not line.startswith("#")]
    assert len(frames) == 30
    assert "30 frames" in err and "dropped 0" in err  # the stats go to stderr, never into the frames


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_live_stream_within_a_second_and_finishes_its_file(ckpt, tmp_path, sig):
    import signal
    import subprocess
    import sys

    out = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "stylemotion", "stream", str(ckpt), "--directions", "random",
                             "--fps", "12", "--mode", "realtime", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".live*partial.mp4")):  # frames are being written
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    err = proc.communicate(timeout=30)[1]
    assert time.monotonic() - sent < 1.5  # the stream stops within a second (plus the interpreter's exit)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[sig], err
    assert out.exists() and not list(tmp_path.glob(".*"))
    assert count_frames(out) >= 3  # decoded by imageio-ffmpeg's ffmpeg: no system binary needed
