"""Where frames go: a video file or PNG folder, raw RGB24 on a pipe, a callback, or nowhere (benchmarks).

A sink has ``write(frames [B, H, W, 3] uint8, first_index)``; file sinks are context managers that finish the
file on success and on Ctrl-C / SIGTERM (a playable file of the frames done) and remove it on any other error.
"""
from __future__ import annotations

import os
import sys
from typing import BinaryIO, Callable

import numpy as np

from ..errors import InputError


class FileSink:
    """H.264 MP4, GIF, or a folder of PNG frames (``pipeline.video_io.VideoWriter``), written under a temporary
    name and renamed when complete."""

    def __init__(self, path: str | os.PathLike, fps: float):
        from ..pipeline.video_io import VideoWriter

        self.writer = VideoWriter(path, fps)

    def write(self, frames: np.ndarray, first: int = 0) -> None:
        self.writer.write(np.asarray(frames))

    def __enter__(self) -> "FileSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.writer.__exit__(exc_type, exc, tb)

    @property
    def path(self):
        return self.writer.path


class RawSink:
    """Raw RGB24 frames, back to back, on a binary stream (default: stdout), for ffmpeg and ffplay:

        stylemotion stream ... --stdout | ffplay -f rawvideo -pixel_format rgb24 -video_size 256x256 -framerate 30 -
        stylemotion stream ... --stdout | ffmpeg -f rawvideo -pixel_format rgb24 -video_size 256x256 \\
            -framerate 30 -i - -c:v libx264 -pix_fmt yuv420p -f flv rtmp://127.0.0.1/live/face

    A reader that goes away (``| head``, a closed player) ends the stream with InputError, not a traceback.
    """

    def __init__(self, stream: BinaryIO | None = None):
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.frames = 0

    def write(self, frames: np.ndarray, first: int = 0) -> None:
        try:
            self.stream.write(np.ascontiguousarray(frames).tobytes())
            self.stream.flush()
        except BrokenPipeError as exc:
            raise InputError("the reader of the raw frames closed the pipe") from exc
        self.frames += len(frames)


class CallbackSink:
    """Calls ``fn(frames [B, H, W, 3], first_index)`` for each delivered batch (one frame at a time in realtime)."""

    def __init__(self, fn: Callable[[np.ndarray, int], None]):
        self.fn = fn

    def write(self, frames: np.ndarray, first: int = 0) -> None:
        self.fn(frames, first)


class NullSink:
    """Counts frames and drops them: end-to-end benchmarks without an encoder."""

    def __init__(self):
        self.frames = 0

    def write(self, frames, first: int = 0) -> None:
        self.frames += len(frames)
