"""Frames in: an image, a folder of images, or a video file (OpenCV), as ``Frame(index, rgb [H, W, 3] uint8)``.

Grayscale, palette, 16-bit and RGBA images are converted to 8-bit RGB (alpha composited on white, with a
warning); an unreadable file, an empty folder or a video with no frames is an InputError naming it.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .._optional import require
from ..errors import ConfigError, InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Frame:
    index: int  # frame number in the source (video frame index, or position in the sorted folder)
    rgb: np.ndarray  # [H, W, 3] uint8
    source: str


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB from any image Pillow reads; conversions are stated, never silent."""
    from PIL import Image, UnidentifiedImageError

    where = str(path)
    try:
        with Image.open(where) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0, 0, 255).round().astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                warnings.warn(f"{where}: image has an alpha channel; composited on white", stacklevel=2)
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise InputError(f"{where}: no such image") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot read the image ({exc})") from exc


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
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
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


def fit_to_resolution(rgb: np.ndarray, resolution: int, *, where: str = "image") -> np.ndarray:
    """Centre-crop to a square and resize (Lanczos) to ``resolution``; warns when it changes the image."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if (h, w) == (resolution, resolution):
        return rgb
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top:top + side, left:left + side]
    warnings.warn(f"{where}: {w}x{h} centre-cropped to {side}x{side} and resized to {resolution}x{resolution}",
                  stacklevel=2)
    return np.asarray(Image.fromarray(crop).resize((resolution, resolution), Image.LANCZOS))
