"""A virtual webcam fed the default stream's frames (``--virtual-camera``)."""
from __future__ import annotations

from ..._optional import require
from ...errors import ConfigError


def open_virtual_camera(resolution: int, fps: float):
    """A pyvirtualcam camera (v4l2loopback on Linux, OBS's on Windows/macOS) fed RGB frames; a clear error
    where there is none."""
    pyvirtualcam = require("pyvirtualcam", extra="camera")
    try:
        return pyvirtualcam.Camera(width=resolution, height=resolution, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except RuntimeError as exc:  # pyvirtualcam raises RuntimeError when no virtual camera device exists
        raise ConfigError(f"--virtual-camera: no virtual camera here ({exc}); on Linux load v4l2loopback "
                          "(modprobe v4l2loopback), elsewhere install OBS's virtual camera") from exc
