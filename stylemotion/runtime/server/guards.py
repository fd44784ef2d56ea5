"""What stands between the network and the handlers: the Host check (DNS rebinding), body caps, a token-bucket rate
limit per client address, the JSON-only rule for POST bodies, security headers, and the catch-all that answers an
unexpected error with a number and never a traceback."""
from __future__ import annotations

import asyncio
import logging
import time

from ..._optional import require
from .config import LOOPBACK_HOSTS, ServerConfig

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes of any request body but a photo (aiohttp answers 413 past it)
MAX_PHOTO = 8 * 1024 * 1024  # bytes of an uploaded photo
PHOTO_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}  # Content-Type -> Pillow format


class RateLimiter:
    """One token bucket per client address: ``rate`` tokens a second up to ``burst``; a request takes one."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = float(rate), float(burst), max_clients
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, time)

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self.buckets) >= self.max_clients and address not in self.buckets:
            # Bounded memory under many addresses: forget the full buckets (they would allow anyway).
            self.buckets = {a: b for a, b in self.buckets.items()
                            if b[0] + (now - b[1]) * self.rate < self.burst}
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            return False
        self.buckets[address] = (tokens - 1.0, now)
        return True


def host_allowed(host: str | None, config: ServerConfig) -> bool:
    """Whether a request's ``Host`` header may reach a server with ``config``: any name when it serves beyond this
    machine, else only loopback names and ``allowed_hosts``."""
    if not config.loopback:
        return True  # served on purpose beyond this machine: any name may reach it
    name = (host or "").strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[:name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return name in LOOPBACK_HOSTS or name in {h.lower() for h in config.allowed_hosts}


class Guards:
    """The server's aiohttp middleware and response headers, counting each request and each refusal in
    ``counters``."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.limiter = RateLimiter(config.rate, config.burst)
        self.counters = {"requests": 0, "rate_limited": 0, "refused_host": 0, "refused_type": 0, "errors": 0}

    def middleware(self):
        web = require("aiohttp.web", extra="server")

        @web.middleware
        async def guard(request, handler):
            self.counters["requests"] += 1
            if not host_allowed(request.headers.get("Host"), self.config):
                self.counters["refused_host"] += 1
                raise web.HTTPForbidden(text="this server answers only requests addressed to a loopback name "
                                             "(Host header); start it with --http 0.0.0.0:PORT to serve others")
            if not self.limiter.allow(request.remote or "?"):
                self.counters["rate_limited"] += 1
                raise web.HTTPTooManyRequests(text=f"more than {self.config.rate:g} requests a second",
                                              headers={"Retry-After": "1"})
            if request.method == "POST" and request.content_type != "application/json" \
                    and not (request.path.endswith("/photo") and request.content_type in PHOTO_TYPES):
                self.counters["refused_type"] += 1
                raise web.HTTPUnsupportedMediaType(text="POST bodies must be JSON (Content-Type: application/json)")
            try:
                return await handler(request)
            except (web.HTTPException, asyncio.CancelledError):
                raise
            except Exception:  # a bug: logged with a number, answered without a traceback
                self.counters["errors"] += 1
                number = self.counters["errors"]
                log.exception("internal error #%d on %s %s", number, request.method, request.path)
                return web.Response(status=500, text=f"internal error #{number}; the server's log has the details")

        return guard


async def security_headers(request, response) -> None:
    """``on_response_prepare``: no MIME sniffing, no Referer sent on."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def read_photo_body(request) -> bytes:
    """A photo upload's body, read to the end but never past ``MAX_PHOTO`` (413 beyond it, whether or not the
    client announced its length)."""
    web = require("aiohttp.web", extra="server")
    if request.content_length is not None and request.content_length > MAX_PHOTO:
        raise web.HTTPRequestEntityTooLarge(MAX_PHOTO, request.content_length,
                                            text=f"photos are at most {MAX_PHOTO // 2 ** 20} MiB")
    chunks, size = [], 0
    while size <= MAX_PHOTO:  # read to the end, never more than the cap (+1 to notice a bigger body)
        chunk = await request.content.read(MAX_PHOTO + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if len(body) > MAX_PHOTO:
        raise web.HTTPRequestEntityTooLarge(MAX_PHOTO, len(body),
                                            text=f"photos are at most {MAX_PHOTO // 2 ** 20} MiB")
    return body
