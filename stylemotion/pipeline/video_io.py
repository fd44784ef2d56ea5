"""Frames in: an image, a folder of images, or a video file (OpenCV), as ``Frame(index, rgb [H, W, 3] uint8)``.

Grayscale, palette, 16-bit and RGBA images are converted to 8-bit RGB (alpha composited on white, with a
warning); an unreadable file, an empty folder or a video with no frames is an InputError naming it.
"""
from __future__ import annotations

import math
import os
import shutil
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import publish, remove_stale_temporaries, temporary_name
from .._optional import require
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Frame:
    index: int  # frame number in the source (video frame index, or position in the sorted folder)
    rgb: np.ndarray  # [H, W, 3] uint8
    source: str


MAX_IMAGE_PIXELS = 8192 * 8192  # checked from the header, before decoding


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB from any image Pillow reads; conversions are stated, never silent."""
    from PIL import Image, UnidentifiedImageError

    where = str(path)
    try:
        with Image.open(where) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise InputError(f"{where}: {im.width}x{im.height} pixels is more than this reader takes "
                                 f"({MAX_IMAGE_PIXELS})")
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0, 0, 255).round().astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                log.warning("%s: image has an alpha channel; composited on white", where)
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{where}: no such image") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot read the image ({exc})") from exc
    except Exception as exc:  # Pillow's decoders also raise SyntaxError, EOFError, struct.error, ... on corrupt files
        raise InputError(f"{where}: cannot read the image ({type(exc).__name__}: {exc})") from exc


def _video_frames(path: str, every: int, fps: float | None) -> Iterator[Frame]:
    cv2 = require("cv2", package="opencv-python-headless")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise InputError(f"{path}: cannot open the video (unsupported codec or not a video)")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if fps is not None and src_fps <= 0:
        cap.release()
        raise InputError(f"{path}: the video does not state its frame rate, so --fps cannot be applied; use --every")
    count = 0
    next_time = 0.0
    index = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            keep = index % every == 0
            if fps is not None:
                t = index / src_fps
                keep = t + 1e-9 >= next_time
                if keep:
                    next_time += 1.0 / fps
            if keep:
                count += 1
                rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB) if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(index, np.ascontiguousarray(rgb), path)
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise InputError(f"{path}: the video has no frames (or none could be decoded)")


def iter_frames(path: str | os.PathLike, *, every: int = 1, fps: float | None = None) -> Iterator[Frame]:
    """Frames of an image file, a folder of images (sorted by name) or a video.

    ``every``: keep every Nth frame; ``fps``: resample a video to this rate (keeps the frame at or after each
    tick). Images and folders ignore ``fps``; ``every`` applies to folders too.
    """
    if every < 1:
        raise ConfigError(f"every must be >= 1, got {every}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps}")
    if fps is not None and every > 1:
        raise ConfigError("give either fps or every, not both")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()  # hidden names: our temporaries, macOS ._ files
                       if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        if not files:
            raise InputError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        for i, f in enumerate(files):
            if i % every == 0:
                yield Frame(i, read_image(f), str(f))
        return
    if not p.is_file():
        raise InputError(f"{p}: no such file or folder")
    if p.suffix.lower() in VIDEO_SUFFIXES:
        yield from _video_frames(str(p), every, fps)
    else:
        yield Frame(0, read_image(p), str(p))


def fit_to_resolution(rgb: np.ndarray, resolution: int, *, where: str = "image", warn: bool = True) -> np.ndarray:
    """Centre-crop to a square and resize (Lanczos) to ``resolution``; logs a warning when it changes the image
    (``warn=False``: the caller already said so, e.g. for the first frame of the same video)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if (h, w) == (resolution, resolution):
        return rgb
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top:top + side, left:left + side]
    if warn:
        log.warning("%s: %dx%d centre-cropped to %dx%d and resized to %dx%d", where, w, h, side, side, resolution,
                    resolution)
    return np.asarray(Image.fromarray(crop).resize((resolution, resolution), Image.LANCZOS))


VIDEO_KINDS = ("mp4", "gif", "png")


def ffmpeg_rate(fps: float) -> str:
    """``30 -> '30'``, ``29.97 -> '30000/1001'``: the exact rational ffmpeg should stamp."""
    frac = Fraction(fps).limit_denominator(1001)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Fail now, before any work, when ``path`` (or its parent folder) cannot be written."""
    target = Path(path)
    parent = target if folder else target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):  # unnamed where the OS allows: a kill leaves nothing
            pass
    except OSError as exc:
        raise InputError(f"{target}: cannot write there ({exc})") from exc


class VideoWriter:
    """Frames ``[N, H, W, 3] uint8`` to an H.264 MP4 (yuv420p, browser-playable), a GIF, or a folder of PNGs.

    MP4: the ffmpeg binary that imageio-ffmpeg ships, fed raw RGB through a pipe (libx264, CRF 18, faststart,
    the exact frame rate as a rational). ffmpeg runs in its own session, so a Ctrl-C meant for us does not kill
    it: on KeyboardInterrupt we close its input and it finishes a playable file of the frames done. Without
    imageio-ffmpeg, OpenCV's ``avc1`` writer is tried, else the error says what to install. Odd sizes are padded
    to even by repeating the edge. GIF: per-frame durations in GIF's 10 ms steps, rounded cumulatively so the
    total length is right (identical consecutive frames merge into one longer frame). PNG: a new or empty folder.

    Everything is written under a temporary name and renamed when complete; on an error other than Ctrl-C the
    temporary output is removed.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18):
        self.path = Path(path)
        kind = "png" if self.path.suffix == "" else self.path.suffix.lower().lstrip(".")
        if kind not in VIDEO_KINDS:
            raise ConfigError(f"{self.path}: output must be .mp4, .gif or a folder for PNG frames")
        if not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"fps must be a positive number, got {fps}")
        if kind == "png" and self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise InputError(f"{self.path}: PNG frames go to a new or empty folder")
        check_writable(self.path)
        self.kind, self.fps, self.crf = kind, float(fps), crf
        self.frames_written = 0
        remove_stale_temporaries(self.path)  # left by a killed earlier run
        self._tmp = temporary_name(self.path, "partial")
        self._proc = None
        self._cv2 = None
        self._gif: list = []
        self._size: tuple[int, int] | None = None
        if kind == "png":
            self._tmp.mkdir()

    def _open_mp4(self, width: int, height: int) -> None:
        try:
            import imageio_ffmpeg
        except ImportError:
            cv2 = require("cv2", package="opencv-python-headless")
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"avc1"), self.fps, (width, height))
            if not writer.isOpened():
                raise InputError(f"{self.path}: no H.264 encoder available: pip install imageio-ffmpeg") from None
            self._cv2 = writer
            return
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-framerate", ffmpeg_rate(self.fps), "-i", "-", "-an",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(self.crf), "-movflags", "+faststart",
               "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)

    def write(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ConfigError(f"frames must be [N, H, W, 3] uint8, got {list(frames.shape)} {frames.dtype}")
        h, w = frames.shape[1:3]
        if self._size is None:
            self._size = (h, w)
        elif self._size != (h, w):
            raise ConfigError(f"frame size changed from {self._size} to {(h, w)}")
        if self.kind == "mp4" and (h % 2 or w % 2):
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for frame in frames:
            self._write_one(np.ascontiguousarray(frame))
            self.frames_written += 1

    def _write_one(self, frame: np.ndarray) -> None:
        if self.kind == "png":
            from ..imaging import save_png

            save_png(self._tmp / f"frame{self.frames_written:06d}.png", frame, atomic=False)
        elif self.kind == "gif":
            self._gif.append(frame)
        else:
            if self._proc is None and self._cv2 is None:
                self._open_mp4(frame.shape[1], frame.shape[0])
            if self._cv2 is not None:
                self._cv2.write(frame[:, :, ::-1].copy())
                return
            try:
                self._proc.stdin.write(frame.tobytes())
            except BrokenPipeError as exc:
                raise InputError(f"{self.path}: ffmpeg stopped: {self._ffmpeg_error()}") from exc

    def _ffmpeg_error(self) -> str:
        self._proc.wait()
        return (self._proc.stderr.read() or b"").decode(errors="replace").strip()[-500:]

    def _finish_mp4(self) -> None:
        if self._cv2 is not None:
            self._cv2.release()
            self._cv2 = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.stdin.close()
            if proc.wait() != 0:
                err = (proc.stderr.read() or b"").decode(errors="replace").strip()[-500:]
                raise InputError(f"{self.path}: ffmpeg failed (exit {proc.returncode}): {err}")

    def _save_gif(self) -> None:
        from PIL import Image

        if not self._gif:
            raise InputError(f"{self.path}: no frames were written")
        ends = [round(100 * (i + 1) / self.fps) * 10 for i in range(len(self._gif))]  # ms, cumulative
        durations = [max(10, b - a) for a, b in zip([0] + ends[:-1], ends)]
        images = [Image.fromarray(f) for f in self._gif]
        images[0].save(self._tmp, save_all=True, append_images=images[1:], duration=durations, loop=0,
                       optimize=False)

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self.kind == "gif":
            self._save_gif()
        elif self.kind == "mp4":
            self._finish_mp4()
        if not self._tmp.exists() or self.frames_written == 0:
            self.abort()
            raise InputError(f"{self.path}: no frames were written")
        if self.kind == "png" and self.path.exists():
            self.path.rmdir()  # checked empty in __init__
        return publish(self._tmp, self.path)

    def abort(self) -> None:
        """Stop and remove the temporary output."""
        try:
            if self._cv2 is not None:
                self._cv2.release()
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
        finally:
            self._cv2 = self._proc = None
            if self._tmp.is_dir():
                shutil.rmtree(self._tmp, ignore_errors=True)
            else:
                self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or (issubclass(exc_type, KeyboardInterrupt) and self.frames_written):
            self.close()
        else:
            self.abort()
