"""What stands between the network and the handlers: the Host check (DNS rebinding), body caps, a token-bucket rate
limit per client address, tokens (when set), the JSON-only rule for POST bodies, security headers, and the
catch-all that answers an unexpected error with a number and never a traceback.

Tokens: with a control token set (required beyond loopback), every route but the page itself needs one. Steering
(``POST`` control, streams, photo; ``DELETE``) takes only the control token; watching (``GET`` MJPEG, frame, stats,
and ``POST`` WebRTC offers) takes the control token or the view token. A token comes as ``Authorization: Bearer
<token>``, or, on ``GET`` only, as ``?token=`` (an ``<img>`` or a video tool's URL cannot send headers). Each is
compared in constant time (``hmac.compare_digest``). No token or a wrong one: 401 with ``WWW-Authenticate``; the
view token on a steering route: 403."""
from __future__ import annotations

import asyncio
import hmac
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


def _same(given: str | None, expected: str | None) -> bool:
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def presented_token(request) -> str | None:
    """The token a request carries: ``Authorization: Bearer <token>``, else ``?token=`` on a GET."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET":
        return request.query.get("token") or None
    return None


def watching(request) -> bool:
    """Whether a route only watches (the view token is enough): GETs, and WebRTC offers (a viewer's)."""
    return request.method in ("GET", "HEAD") or (request.method == "POST" and request.path.endswith("/webrtc"))


def authorize(request, config: ServerConfig) -> str | None:
    """None when ``request`` may go on; else why not: ``"unauthorized"`` (no token or a wrong one) or ``"forbidden"``
    (the view token on a steering route)."""
    if not config.guarded or (request.method == "GET" and request.path == "/"):
        return None
    token = presented_token(request)
    is_control, is_view = _same(token, config.token), _same(token, config.view_token)
    if is_control or (is_view and watching(request)):
        return None
    return "forbidden" if is_view else "unauthorized"


class Guards:
    """The server's aiohttp middleware and response headers, counting each request and each refusal in
    ``counters``."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.limiter = RateLimiter(config.rate, config.burst)
        self.counters = {"requests": 0, "rate_limited": 0, "refused_host": 0, "refused_type": 0, "unauthorized": 0,
                         "forbidden": 0, "errors": 0}

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
            refusal = authorize(request, self.config)
            if refusal == "unauthorized":
                self.counters["unauthorized"] += 1
                raise web.HTTPUnauthorized(text="this server needs a token: Authorization: Bearer <token> (or "
                                                "?token= on a GET)", headers={"WWW-Authenticate": 'Bearer realm="stylemotion"'})
            if refusal == "forbidden":
                self.counters["forbidden"] += 1
                raise web.HTTPForbidden(text="the view token may watch, not steer: this route needs the control token")
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
