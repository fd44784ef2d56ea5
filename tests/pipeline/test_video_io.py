"""Frames in: images of every mode, folders, videos; bad input named in the error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stylemotion.errors import ConfigError, InputError
from stylemotion.pipeline.video_io import fit_to_resolution, iter_frames, read_image


def _write_video(path, frames, fps=10.0):
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_image_modes_become_rgb(tmp_path, caplog):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and (out[:, :, 0] == gray).all() and (out[:, :, 2] == gray).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with caplog.at_level("WARNING", logger="stylemotion"):
        out = read_image(tmp_path / "a.png")
    assert "alpha channel" in caplog.text
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[3, 3]) == (255, 255, 255)
    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096)
    Image.fromarray(deep).save(tmp_path / "d.png")  # a 16-bit grayscale PNG
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out[3, 3, 0] == round(61440 / 65535 * 255) and out[0, 0, 0] == 0


def test_unreadable_and_missing_inputs(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match=r"broken\.png: cannot read the image"):
        read_image(tmp_path / "broken.png")
    with pytest.raises(InputError, match=r"nothing\.png: no such"):
        list(iter_frames(tmp_path / "nothing.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no images"):
        list(iter_frames(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="every"):
        list(iter_frames(tmp_path / "empty", every=0))


def test_folder_is_sorted_and_every_applies(tmp_path):
    for i in (2, 0, 1, 3):
        Image.fromarray(np.full((4, 4, 3), i * 10, np.uint8)).save(tmp_path / f"f{i}.png")
    frames = list(iter_frames(tmp_path, every=2))
    assert [f.index for f in frames] == [0, 2] and [int(f.rgb[0, 0, 0]) for f in frames] == [0, 20]


def test_video_frames_every_and_fps(tmp_path):
    levels = [0, 40, 80, 120, 160, 200, 240, 20, 60, 100]
    frames = [np.full((16, 16, 3), v, np.uint8) for v in levels]
    _write_video(tmp_path / "clip.avi", frames, fps=10.0)
    got = list(iter_frames(tmp_path / "clip.avi"))
    assert [f.index for f in got] == list(range(10))
    assert np.allclose([f.rgb.mean() for f in got], levels, atol=6)  # MJPEG is lossy
    assert [f.index for f in iter_frames(tmp_path / "clip.avi", every=3)] == [0, 3, 6, 9]
    assert [f.index for f in iter_frames(tmp_path / "clip.avi", fps=5)] == [0, 2, 4, 6, 8]


def test_video_with_no_frames(tmp_path):
    _write_video(tmp_path / "none.avi", [np.zeros((16, 16, 3), np.uint8)])
    (tmp_path / "none.avi").write_bytes((tmp_path / "none.avi").read_bytes()[:64])  # header only, no frame
    with pytest.raises(InputError, match=r"none\.avi: (the video has no frames|cannot open)"):
        list(iter_frames(tmp_path / "none.avi"))


def test_fit_to_resolution_crops_and_warns(caplog):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # the centre square is white
    with caplog.at_level("WARNING", logger="stylemotion"):
        out = fit_to_resolution(img, 16)
    assert "40x20 centre-cropped to 20x20 and resized to 16x16" in caplog.text
    assert out.shape == (16, 16, 3) and out.min() > 200
    assert fit_to_resolution(out, 16) is out


def test_fps_and_every_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="either fps or every"):
        list(iter_frames(tmp_path, every=2, fps=5))
