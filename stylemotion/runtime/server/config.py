"""``ServerConfig``: what a server listens on, how fast it plays, how much it takes and who may steer it, validated
before it starts. ``tokens_from_env`` is the one place the server's credentials are read from the environment."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from ...errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_ENV, VIEW_TOKEN_ENV = "STYLEMOTION_TOKEN", "STYLEMOTION_VIEW_TOKEN"
MIN_TOKEN = 16  # characters: a guessable token is refused at start
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def tokens_from_env(token: str | None = None, view_token: str | None = None,
                    environ=None) -> tuple[str | None, str | None]:
    """``(token, view_token)``: the arguments given, else ``STYLEMOTION_TOKEN`` / ``STYLEMOTION_VIEW_TOKEN`` (empty
    counts as unset). The CLI reads them here so that a token need not appear in ``ps`` output."""
    environ = os.environ if environ is None else environ
    return (token or environ.get(TOKEN_ENV) or None, view_token or environ.get(VIEW_TOKEN_ENV) or None)


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
    token: str | None = None  # control token (Authorization: Bearer); required beyond loopback
    view_token: str | None = None  # watch-only token (MJPEG, frames, stats, WebRTC); the control token also watches
    webrtc: bool = False  # POST .../webrtc offers (aiortc)
    max_peers: int = 32  # WebRTC peer connections, all streams together
    osc: tuple[str, int] | None = None  # (host, port) of the OSC control socket (UDP), or None
    osc_allow: tuple[str, ...] = field(default=())  # addresses / networks besides loopback that may send OSC
    admission: bool = True  # refuse new streams (503) when the engine cannot render them on top of the others
    headroom: float = 0.9  # of the measured render capacity that streams may ask for, with admission on

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
        if self.osc_allow and self.osc is None:
            raise ConfigError("osc_allow (--osc-allow) needs an OSC socket (--osc [HOST:]PORT)")
        if self.max_peers < 1:
            raise ConfigError(f"max_peers must be >= 1, got {self.max_peers}")
        if not 0 < self.headroom <= 1:
            raise ConfigError(f"headroom must be in (0, 1], got {self.headroom}")
        for name in ("token", "view_token"):
            value = getattr(self, name)
            if value is not None and (len(value) < MIN_TOKEN or not value.isprintable() or " " in value):
                raise ConfigError(f"the {name.replace('_', ' ')} must be at least {MIN_TOKEN} printable characters "
                                  f"without spaces (got {len(value)}); make one with {MAKE_TOKEN}")
        if self.view_token is not None and self.view_token == self.token:
            raise ConfigError("the view token must differ from the control token (a viewer could steer otherwise)")
        if self.view_token is not None and self.token is None:
            raise ConfigError("a view token without a control token would let anyone steer: set --token too")
        if not self.loopback and self.token is None:
            raise ConfigError(f"serving on {self.host}, beyond this machine, needs a control token: anyone who "
                              f"reaches the port could steer every stream and upload photos. Set --token or "
                              f"{TOKEN_ENV} (make one with {MAKE_TOKEN}); add --view-token for watch-only viewers")
        return self

    @property
    def guarded(self) -> bool:
        """Whether requests need a token (one is set)."""
        return self.token is not None
