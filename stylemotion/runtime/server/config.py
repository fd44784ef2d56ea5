"""``ServerConfig``: what a server listens on, how fast it plays and how much it takes, validated before it starts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless asked
    port: int = 8080
    fps: float = 30.0
    max_streams: int = 8
    max_viewers: int = 32
    jpeg_quality: int = 85
    photo_steps: int = 200  # projector steps for an uploaded photo ("use my photo")
    max_late: float = 0.25
    virtual_camera: bool = False  # also feed the default stream to a virtual webcam (pyvirtualcam + v4l2loopback)
    rate: float = 100.0  # requests per second per client address (token bucket), then 429
    burst: int = 200
    idle_timeout: float = 300.0  # seconds: a made stream with no viewer and no request is then closed
    allowed_hosts: tuple[str, ...] = field(default=())  # Host names accepted besides loopback ones (when on loopback)

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def validate(self) -> "ServerConfig":
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"fps must be a positive number, got {self.fps}")
        if self.max_streams < 1 or self.max_viewers < 1:
            raise ConfigError("max_streams and max_viewers must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not (self.rate > 0 and math.isfinite(self.rate)) or self.burst < 1:
            raise ConfigError(f"rate must be a positive number and burst >= 1, got {self.rate}, {self.burst}")
        if not self.idle_timeout > 0:
            raise ConfigError(f"idle_timeout must be positive seconds, got {self.idle_timeout}")
        return self
