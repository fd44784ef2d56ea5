"""The live server: a page that steers a face, MJPEG for video tools, many streams sharing one engine (``Hub``).

Built on aiohttp (the ``server`` extra). Endpoints, for the default stream and for each stream made with
``POST /streams`` (under ``/streams/{id}``): ``stream.mjpg`` (multipart JPEG, any number of viewers up to the
cap), ``frame.jpg`` (the latest frame), ``POST control`` (JSON: the runtime's control fields), ``GET stats``;
``DELETE /streams/{id}`` ends a stream; ``GET /`` is the page.

Each stream has one publisher task: when a new frame is due it JPEG-encodes it once, and every viewer sends the
newest encoded frame it has not sent yet (a slot of one: a slow reader skips frames, a fast one is not held
back). A viewer whose connection is gone is noticed within a second. Bad requests get a 4xx with a reason and
change nothing; past the caps the answer is 503 with Retry-After.

The HTTP surface, hardened for a server that may face a browser or a network: it binds to loopback unless asked;
request bodies are capped (64 KiB: 413) and so are header lines (aiohttp's 8 KiB); each client address has a
token-bucket rate limit (429 with Retry-After); a POST must say ``Content-Type: application/json`` (415), so a
page on another site cannot steer a stream with a form or a plain ``fetch`` (that would need a CORS preflight we
never answer); on loopback, a request whose ``Host`` is not a loopback name is refused (403: DNS rebinding); no
route reads the file system (the page is one packaged file, stream ids are only dictionary keys); unknown routes
are 404; and an unexpected error is logged with a number and answered with that number only, never a traceback.
A stream made with ``POST /streams`` that has no viewer and no request for ``idle_timeout`` seconds is closed.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..._optional import require
from ...errors import ConfigError, StylemotionError
from ..hub import CapacityError, Hub, HubStream

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
MAX_BODY = 64 * 1024
MAX_PHOTO = 8 * 1024 * 1024  # bytes of an uploaded photo
PHOTO_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}  # Content-Type -> Pillow format
BOUNDARY = "stylemotion-frame"
# The control fields a request may set, with their types and ranges (validated before the planner sees them).
NUMBERS = {"intensity": (-30.0, 30.0), "transition": (0.0, 60.0), "speed": (0.01, 20.0), "temperature": (0.0, 10.0)}
FLAGS = ("pause", "follow_lstm")


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


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


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


class BadRequest(StylemotionError):
    """A request the server refuses (the message is the reason sent back)."""


def parse_control(body: bytes, *, emotions: list[str] | None) -> dict:
    """A control request's JSON body -> the planner's control fields, every value checked; BadRequest names the
    field and the value at fault."""
    from ...models.emotion_cnn import EMOTIONS

    try:
        data = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise BadRequest("the body must be a JSON object of control fields, e.g. {\"emotion\": \"sad\"}")
    known = set(NUMBERS) | set(FLAGS) | {"emotion", "seed"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; known: {sorted(known)}")
    out: dict = {}
    if "emotion" in data:
        emotion = data["emotion"]
        if not isinstance(emotion, str) or emotion.lower() not in EMOTIONS:
            raise BadRequest(f"emotion {emotion!r} is not one of {list(EMOTIONS)}")
        if emotions is not None and emotion.lower() not in emotions:
            raise BadRequest(f"emotion {emotion!r} has no direction here; this server has {emotions}")
        out["emotion"] = emotion.lower()
    for name, (lo, hi) in NUMBERS.items():
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                raise BadRequest(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
            out[name] = float(value)
    if "seed" in data:
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
            raise BadRequest(f"seed must be an integer in [0, 2**32), got {seed!r}")
        out["seed"] = seed
    for name in FLAGS:
        if name in data:
            if not isinstance(data[name], bool):
                raise BadRequest(f"{name} must be true or false, got {data[name]!r}")
            out[name] = data[name]
    return out


class Server:
    """The aiohttp application over a ``Hub``. ``new_planner(**options)`` makes a stream's planner (the CLI
    builds it from the checkpoint, directions and LSTM); the default stream is opened at start."""

    def __init__(self, hub: Hub, new_planner, *, config: ServerConfig = ServerConfig(),
                 emotions: list[str] | None = None, has_lstm: bool = False, default: dict | None = None):
        self.hub, self.new_planner, self.config = hub, new_planner, config.validate()
        self.emotions, self.has_lstm = emotions, has_lstm
        self.default_options = default or {}
        self.jpegs: dict[str, tuple[int, bytes]] = {}
        self.changed: dict[str, asyncio.Condition] = {}
        self.publishers: dict[str, asyncio.Task] = {}
        self.viewers = 0
        self.default_id = "default"
        self.camera = None
        self.reaper: asyncio.Task | None = None
        self.photos: dict[str, dict] = {}  # stream id -> the last upload's state and progress
        self.photo_tasks: dict[str, asyncio.Task] = {}
        self.align_photo = None  # image [H, W, 3] uint8 -> Aligned (set by build_server)
        self.embed_photo = None  # (crop, progress(step)) -> ws [1, num_ws, w_dim] (set by build_server)
        self.limiter = RateLimiter(self.config.rate, self.config.burst)
        self.activity: dict[str, float] = {}  # stream id -> last request or viewer (monotonic seconds)
        self.watching: dict[str, int] = {}  # stream id -> viewers now
        self.counters = {"requests": 0, "rate_limited": 0, "refused_host": 0, "refused_type": 0, "errors": 0,
                         "idle_closed": 0}

    # -- streams ---------------------------------------------------------------------------------------------

    def _open(self, stream_id: str | None = None, **options) -> HubStream:
        stream = self.hub.open(self.new_planner(**options), self.config.fps, stream_id=stream_id)
        self.changed[stream.id] = asyncio.Condition()
        self.publishers[stream.id] = asyncio.get_running_loop().create_task(self._publish(stream))
        self.activity[stream.id] = time.monotonic()
        return stream

    async def _close(self, stream_id: str) -> None:
        if stream_id not in self.publishers:
            return  # closed already (a DELETE and the idle reaper may meet)
        self.hub.close(stream_id)
        self.photos.pop(stream_id, None)
        self.photo_tasks.pop(stream_id, None)
        self.activity.pop(stream_id, None)
        task = self.publishers.pop(stream_id)
        task.cancel()
        self.jpegs.pop(stream_id, None)
        cond = self.changed.pop(stream_id)
        async with cond:
            cond.notify_all()  # viewers of an ended stream leave

    def _encode(self, image) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=self.config.jpeg_quality)
        return buf.getvalue()

    async def _publish(self, stream: HubStream) -> None:
        """Encode each newly due frame once and wake the stream's viewers."""
        loop = asyncio.get_running_loop()
        while not stream.closed:
            frame = stream.latest(max_late=self.config.max_late)
            if frame is None:
                await asyncio.sleep(stream.wait_hint())
                continue
            if self.camera is not None and stream.id == self.default_id:
                await loop.run_in_executor(None, self.camera.send, frame.image)
            jpeg = await loop.run_in_executor(None, self._encode, frame.image)
            self.jpegs[stream.id] = (frame.index, jpeg)
            cond = self.changed.get(stream.id)
            if cond is None:
                return
            async with cond:
                cond.notify_all()

    def _stream(self, request) -> HubStream:
        web = require("aiohttp.web", extra="server")
        sid = request.match_info.get("id", self.default_id)
        stream = self.hub.streams.get(sid)
        if stream is None:
            raise web.HTTPNotFound(text=f"no stream {sid[:64]!r}")
        self.activity[stream.id] = time.monotonic()
        return stream

    def _host_allowed(self, host: str | None) -> bool:
        if not self.config.loopback:
            return True  # served on purpose beyond this machine: any name may reach it
        name = (host or "").strip().lower()
        if name.startswith("["):  # [::1]:8080
            name = name[:name.find("]") + 1]
        elif name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        return name in LOOPBACK_HOSTS or name in {h.lower() for h in self.config.allowed_hosts}

    def _middleware(self):
        web = require("aiohttp.web", extra="server")

        @web.middleware
        async def guard(request, handler):
            self.counters["requests"] += 1
            if not self._host_allowed(request.headers.get("Host")):
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

    async def _reap_idle(self) -> None:
        """Close made streams that nobody watched or asked about for idle_timeout seconds."""
        period = min(5.0, self.config.idle_timeout / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for sid in [s for s in list(self.hub.streams) if s != self.default_id]:
                if self.watching.get(sid, 0) == 0 and now - self.activity.get(sid, now) > self.config.idle_timeout:
                    log.info("closing stream %s: idle for %.0f s", sid, now - self.activity[sid])
                    self.counters["idle_closed"] += 1
                    await self._close(sid)

    # -- handlers --------------------------------------------------------------------------------------------

    async def page(self, request):
        web = require("aiohttp.web", extra="server")
        from ...models.emotion_cnn import EMOTIONS

        html = PAGE.read_text().replace("__EMOTIONS__", json.dumps(self.emotions or list(EMOTIONS)))
        return web.Response(text=html.replace("__LSTM__", json.dumps(self.has_lstm)), content_type="text/html")

    async def mjpeg(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        if self.viewers >= self.config.max_viewers:
            raise web.HTTPServiceUnavailable(text=f"at most {self.config.max_viewers} viewers",
                                             headers={"Retry-After": "5"})
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", "Connection": "close"})
        self.viewers += 1
        self.watching[stream.id] = self.watching.get(stream.id, 0) + 1
        try:
            await response.prepare(request)
            sent = -1
            cond = self.changed[stream.id]
            while not stream.closed:
                async with cond:
                    try:
                        await asyncio.wait_for(cond.wait_for(lambda: self.jpegs.get(stream.id, (-1,))[0] > sent
                                                             or stream.closed), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                if request.transport is None or request.transport.is_closing():
                    break  # the viewer left
                current = self.jpegs.get(stream.id)
                if current is None or current[0] <= sent:
                    continue
                sent, jpeg = current
                await response.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     f"\r\n\r\n".encode() + jpeg + b"\r\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass  # the viewer went away mid-write; nothing else is affected
        finally:
            self.viewers -= 1
            self.watching[stream.id] -= 1
            if not self.watching[stream.id]:
                del self.watching[stream.id]
            if stream.id in self.activity:  # not for a stream closed meanwhile
                self.activity[stream.id] = time.monotonic()
        return response

    async def frame(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        current = self.jpegs.get(stream.id)
        if current is None:
            raise web.HTTPServiceUnavailable(text="no frame yet", headers={"Retry-After": "1"})
        return web.Response(body=current[1], content_type="image/jpeg",
                            headers={"Cache-Control": "no-cache", "X-Frame-Index": str(current[0])})

    async def control(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        body = await request.read()  # over client_max_size: aiohttp answers 413
        try:
            changes = parse_control(body, emotions=self.emotions)
            if changes.get("follow_lstm") and not self.has_lstm:
                raise BadRequest("follow_lstm needs a server started with --lstm")
            generation = stream.control(**changes)
        except (BadRequest, ConfigError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"generation": generation, "applied": changes})

    async def stats(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        return web.json_response(_finite({**stream.snapshot(), "viewers": self.viewers, "hub": self.hub.stats(),
                                          "server": dict(self.counters),
                                          "photo": self.photos.get(stream.id)}))

    async def create(self, request):
        web = require("aiohttp.web", extra="server")
        body = await request.read()
        try:
            data = json.loads(body.decode("utf-8") or "{}")
            if not isinstance(data, dict):
                raise BadRequest("the body must be a JSON object")
            unknown = sorted(set(data) - {"seed", "script", "follow_lstm"})
            if unknown:
                raise BadRequest(f"unknown fields {unknown}; known: ['follow_lstm', 'script', 'seed']")
            seed = data.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
                raise BadRequest(f"seed must be an integer in [0, 2**32), got {seed!r}")
            script = data.get("script")
            if script is not None and not isinstance(script, str):
                raise BadRequest("script must be text like 'happy:2,sad:1'")
            follow = data.get("follow_lstm", False)
            if not isinstance(follow, bool) or (follow and not self.has_lstm):
                raise BadRequest("follow_lstm must be true or false, and needs a server started with --lstm")
            stream = self._open(seed=seed, script=script, follow_lstm=follow)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise web.HTTPBadRequest(text=f"the body is not JSON ({exc})") from None
        except CapacityError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc), headers={"Retry-After": "10"}) from None
        except (BadRequest, ConfigError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"id": stream.id, "stream": f"/streams/{stream.id}/stream.mjpg"}, status=201)

    async def photo(self, request):
        """``POST .../photo`` (the body is the image, ``Content-Type: image/jpeg|png|webp``, at most 8 MiB): find
        the face (422 when there is none), answer 202, embed it in the background (progress in ``stats`` under
        ``photo``) and then move the stream to the new face through a transition. The upload is decoded in
        memory and never written to disk."""
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        if self.embed_photo is None:
            raise web.HTTPNotImplemented(text="this server cannot embed photos (started without a generator)")
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
        job = self.photos.get(stream.id)
        if job is not None and job["state"] in ("aligning", "embedding"):
            raise web.HTTPConflict(text="a photo is being embedded for this stream already")
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(None, decode_photo, body, PHOTO_TYPES[request.content_type])
            aligned = await loop.run_in_executor(None, self.align_photo, image)
        except StylemotionError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None
        job = {"state": "embedding", "step": 0, "steps": self.config.photo_steps, "faces": aligned.faces_found,
               "error": None}
        self.photos[stream.id] = job

        def progress(step: int) -> None:
            job["step"] = step + 1

        async def run() -> None:
            try:
                ws = await loop.run_in_executor(None, self.embed_photo, aligned.crop, progress)
                if not stream.closed:
                    stream.control(identity=ws)
                job["state"] = "done"
            except Exception as exc:  # reported in stats, never lost
                log.exception("embedding an uploaded photo failed")
                job.update(state="failed", error=f"{type(exc).__name__}: {exc}")

        self.photo_tasks[stream.id] = loop.create_task(run())
        return web.json_response(job, status=202)

    async def delete(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        if stream.id == self.default_id:
            raise web.HTTPBadRequest(text="the default stream runs as long as the server")
        await self._close(stream.id)
        return web.json_response({"deleted": stream.id})

    def app(self):
        web = require("aiohttp.web", extra="server")
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware()])

        async def headers(request, response) -> None:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "no-referrer")

        app.on_response_prepare.append(headers)
        app.router.add_get("/", self.page)
        for prefix in ("", "/streams/{id}"):
            app.router.add_get(prefix + "/stream.mjpg", self.mjpeg)
            app.router.add_get(prefix + "/frame.jpg", self.frame)
            app.router.add_post(prefix + "/control", self.control)
            app.router.add_get(prefix + "/stats", self.stats)
        app.router.add_post("/streams", self.create)
        for prefix in ("", "/streams/{id}"):
            app.router.add_post(prefix + "/photo", self.photo)
        app.router.add_delete("/streams/{id}", self.delete)

        async def startup(app) -> None:
            if self.config.virtual_camera:
                self.camera = open_virtual_camera(self.hub.engine.info.resolution, self.config.fps)
            self.hub.start()
            self._open(self.default_id, **self.default_options)
            self.reaper = asyncio.get_running_loop().create_task(self._reap_idle())

        async def cleanup(app) -> None:
            if self.reaper is not None:
                self.reaper.cancel()
            for task in self.photo_tasks.values():
                task.cancel()
            for task in self.publishers.values():
                task.cancel()
            self.hub.stop()
            if self.camera is not None:
                self.camera.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        return app


def decode_photo(body: bytes, expected_format: str):
    """An uploaded photo's bytes -> [H, W, 3] uint8 RGB, upright (EXIF orientation applied); the format must be
    the one its Content-Type named and the size at most 8192 x 8192. InputError says what is wrong."""
    import numpy as np
    from PIL import Image, ImageOps

    from ...errors import InputError

    try:
        with Image.open(io.BytesIO(body)) as im:
            if im.format != expected_format:
                raise InputError(f"the upload is {im.format or 'not an image'}, not the {expected_format} its "
                                 "Content-Type says")
            if im.width * im.height > 8192 * 8192:
                raise InputError(f"the photo is {im.width}x{im.height}: at most 8192x8192 pixels")
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types on a corrupt file
        raise InputError(f"the upload is not a readable image ({type(exc).__name__}: {exc})") from None


def open_virtual_camera(resolution: int, fps: float):
    """A pyvirtualcam camera (v4l2loopback on Linux, OBS's on Windows/macOS) fed RGB frames; a clear error
    where there is none."""
    pyvirtualcam = require("pyvirtualcam", extra="camera")
    try:
        return pyvirtualcam.Camera(width=resolution, height=resolution, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except RuntimeError as exc:  # pyvirtualcam raises RuntimeError when no virtual camera device exists
        raise ConfigError(f"--virtual-camera: no virtual camera here ({exc}); on Linux load v4l2loopback "
                          "(modprobe v4l2loopback), elsewhere install OBS's virtual camera") from exc


def _finite(value):
    """JSON has no NaN: numbers that are not finite become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def build_server(model, *, directions=None, script: str | None = None, lstm=None, config: ServerConfig = ServerConfig(),
                 backend: str = "auto", device: str | None = None, precision: str | None = None,
                 onnx_path=None, seed: int = 0, identity=None, max_batch: int | None = None,
                 lookahead: float = 0.25, **settings) -> Server:
    """A ``Server`` for a model: one engine in a ``Hub``, a planner per stream. The default stream plays
    ``script`` if given, else follows ``lstm`` if given, else holds the identity until a control arrives.
    ``settings``: ``StreamSettings`` fields (interp, transition, coefficient, truncation_psi, temperature, ...)."""
    import torch

    from .. import StreamSettings, make_planner, open_model
    from ...pipeline.directions import Directions, load_directions
    from ...pipeline.sequence import load_lstm

    from ...checkpoints.bundled import own_asset

    engine, G = open_model(model, backend=backend, device=device, precision=precision, onnx_path=onnx_path)
    directions = directions if directions is not None else own_asset(G, "directions")  # a bundled model's own
    lstm = lstm if lstm is not None else own_asset(G, "lstm")
    if directions is not None and not isinstance(directions, Directions):
        directions = load_directions(directions, w_dim=G.w_dim)
    if isinstance(lstm, (str, Path)):
        lstm = load_lstm(lstm)
    base = StreamSettings(fps=config.fps, **settings).validate()
    dev = torch.device(engine.info.device)

    def new_planner(*, seed: int = seed, script: str | None = None, follow_lstm: bool = False, identity=None):
        return make_planner(G, dev, base, directions=directions, script=script,
                            lstm=lstm if follow_lstm else None, seed=seed, identity=identity, live=True)

    default = {"seed": seed, "script": script, "follow_lstm": script is None and lstm is not None,
               "identity": identity}  # identity: ws [1, num_ws, w_dim] of an embedded face, else the seed's
    hub = Hub(engine, max_batch=max_batch, lookahead=lookahead, max_streams=config.max_streams)
    server = Server(hub, new_planner, config=config, emotions=list(directions.emotions) if directions else None,
                    has_lstm=lstm is not None, default=default)
    server.align_photo, server.embed_photo = photo_embedder(G, steps=config.photo_steps)
    return server


def photo_embedder(G, *, steps: int):
    """``(align, embed)`` for uploads: MTCNN + the FFHQ crop at the generator's resolution, and the projector
    (in W, the perceptual loss on VGG16 features) on a copy of the generator, built at the first upload. Embedding
    runs one upload at a time (a lock), beside the engine rendering the streams."""
    import threading

    import torch

    state: dict = {}
    lock = threading.Lock()

    def align_photo(image):
        from ...pipeline.align import align

        return align(image, G.img_resolution, where="the uploaded photo")

    def embed_photo(crop, progress):
        import copy

        from ...checkpoints.vgg16 import load_vgg16
        from ...models.vgg16 import PerceptualDistance
        from ...pipeline.embed import Projector, ProjectorConfig

        with lock:
            if "projector" not in state:
                vgg, lpips_weights = load_vgg16(None)
                state["projector"] = Projector(copy.deepcopy(G).cpu(), PerceptualDistance(vgg, "lpips", lpips_weights),
                                               ProjectorConfig(space="w", steps=steps).validate())
            target = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            result = state["projector"].project(target, on_step=lambda step, losses: progress(step))
            return result.ws.detach().cpu()

    return align_photo, embed_photo


def run(server: Server) -> None:
    """Serve until Ctrl-C / SIGTERM (aiohttp's runner handles both and shuts down cleanly)."""
    web = require("aiohttp.web", extra="server")
    web.run_app(server.app(), host=server.config.host, port=server.config.port, print=None,
                handle_signals=True)
