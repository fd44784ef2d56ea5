"""Video files: H.264 MP4 that ffmpeg decodes whole and that reads back, GIF, PNG frames, Ctrl-C, bad paths."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from stylemotion.errors import ConfigError, InputError
from stylemotion.pipeline.metrics import ACD, acd, pixel_features
from stylemotion.pipeline.video_io import VideoWriter, iter_frames

from ..helpers import probe_video


def moving_frames(n=12, h=48, w=64):
    """A bright square moving across a dark background (codec-friendly, every frame different)."""
    frames = np.full((n, h, w, 3), 30, np.uint8)
    for i in range(n):
        frames[i, 10:30, 2 + 4 * i:22 + 4 * i] = (220, 180, 40)
    return frames


def test_mp4_is_h264_yuv420p_with_the_right_frames(tmp_path):
    frames = moving_frames()
    with VideoWriter(tmp_path / "v.mp4", fps=12) as writer:
        writer.write(frames[:5])
        writer.write(frames[5:])
    info = probe_video(tmp_path / "v.mp4")
    assert (info.codec, info.pix_fmt, info.frames, info.fps) == ("h264", "yuv420p", 12, 12)
    back = np.stack([f.rgb for f in iter_frames(tmp_path / "v.mp4")])
    assert back.shape == frames.shape
    mse = ((back.astype(float) - frames) ** 2).mean(axis=(1, 2, 3))
    assert (10 * np.log10(255 ** 2 / mse) > 30).all()  # within codec tolerance
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_odd_sizes_are_padded_to_even(tmp_path):
    with VideoWriter(tmp_path / "odd.mp4", fps=5) as writer:
        writer.write(moving_frames(n=3, h=47, w=63))
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (64, 48)


def test_ctrl_c_leaves_a_playable_file_of_the_frames_done(tmp_path):
    frames = moving_frames()
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "cut.mp4", fps=10) as writer:
            writer.write(frames[:7])
            raise KeyboardInterrupt
    assert probe_video(tmp_path / "cut.mp4").frames == 7
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "err.mp4", fps=10) as writer:
            writer.write(frames[:3])
            raise RuntimeError("renderer failed")
    assert not (tmp_path / "err.mp4").exists() and not list(tmp_path.glob(".err*"))


def test_a_real_sigint_mid_write_still_leaves_a_playable_file(tmp_path):
    """SIGINT arrives whenever it arrives, possibly inside a pipe write; ffmpeg must still finish the file."""
    import os
    import signal
    import threading

    frames = np.repeat(moving_frames(n=1, h=240, w=320), 20, axis=0)
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "sig.mp4", fps=25) as writer:
            timer.start()
            for _ in range(10_000):
                writer.write(frames)
    timer.cancel()
    info = probe_video(tmp_path / "sig.mp4")
    assert info.codec == "h264" and info.frames > 0
    assert not list(tmp_path.glob(".*"))


def test_non_integer_fps_is_stamped_exactly(tmp_path):
    with VideoWriter(tmp_path / "ntsc.mp4", fps=30000 / 1001) as writer:
        writer.write(moving_frames(n=6))
    assert probe_video(tmp_path / "ntsc.mp4").fps == Fraction(30000, 1001)


def test_the_video_check_fails_on_a_torn_file(tmp_path):
    """The crash tests trust probe_video to fail on a torn MP4 rather than count it short."""
    with VideoWriter(tmp_path / "whole.mp4", fps=12) as writer:
        writer.write(moving_frames())
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "torn.mp4").write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(AssertionError, match=r"torn\.mp4: ffmpeg cannot decode it"):
        probe_video(tmp_path / "torn.mp4")


def test_gif_and_png_frames(tmp_path):
    from PIL import Image

    frames = moving_frames(n=4)
    with VideoWriter(tmp_path / "v.gif", fps=5) as writer:
        writer.write(frames)
    gif = Image.open(tmp_path / "v.gif")
    assert gif.n_frames == 4 and gif.info["duration"] == 200
    held = np.concatenate([frames[:1]] * 3 + [frames[1:2]] * 3)  # holds: identical frames merge, time stays
    with VideoWriter(tmp_path / "h.gif", fps=30) as writer:
        writer.write(held)
    gif = Image.open(tmp_path / "h.gif")
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    assert total == 200  # 6 frames at 30 fps
    with VideoWriter(tmp_path / "pngs", fps=5) as writer:
        writer.write(frames)
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir())[0] == "frame000000.png"
    assert len(list((tmp_path / "pngs").iterdir())) == 4
    with pytest.raises(InputError, match="new or empty folder"):
        VideoWriter(tmp_path / "pngs", fps=5)


def test_unwritable_or_unsupported_outputs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write there"):
        VideoWriter(tmp_path / "file" / "v.mp4", fps=5)
    with pytest.raises(ConfigError, match=".mp4, .gif or a folder"):
        VideoWriter(tmp_path / "v.avi", fps=5)
    with pytest.raises(ConfigError, match="fps"):
        VideoWriter(tmp_path / "v.mp4", fps=0)


def test_acd_by_hand():
    """Uniform frames at 0, 51 and 153 (of 255): RMS differences 0.2 and 0.4 -> ACD 0.3."""
    frames = np.stack([np.full((4, 5, 3), v, np.uint8) for v in (0, 51, 153)])
    assert acd([frames]) == pytest.approx(0.3)
    meter = ACD(pixel_features)
    meter.update(frames[:1])
    meter.update(frames[1:])  # streaming across batch boundaries gives the same value
    assert meter.value == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="two frames"):
        acd([frames[:1]])


def test_acd_in_vgg_feature_space():
    from stylemotion.pipeline.metrics import vgg_extractor

    still = np.repeat(moving_frames(n=1), 3, axis=0)
    moving = moving_frames(n=3)
    extract = vgg_extractor()
    assert extract(moving).shape == (3, 512)
    assert acd([still], extract) == 0.0 and acd([moving], extract) > 0


def test_acd_with_an_onnx_feature_model(tmp_path):
    """A user's ONNX embedding model (here: global average pooling, i.e. the mean colour) as the feature space."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from stylemotion.pipeline.metrics import onnx_extractor

    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "mean_colour",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "mean.onnx")
    frames = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 51, 153)])
    # mean colours (0,0,0), (.2,.2,.2), (.6,.6,.6): distances .2*sqrt(3) and .4*sqrt(3)
    assert acd([frames], onnx_extractor(tmp_path / "mean.onnx")) == pytest.approx(0.3 * 3 ** 0.5, rel=1e-5)
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"bad\.onnx: cannot load"):
        onnx_extractor(tmp_path / "bad.onnx")
