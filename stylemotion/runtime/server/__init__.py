"""The live server: a page that steers a face, MJPEG for video tools, many streams sharing one engine (``Hub``).

Built on aiohttp (the ``server`` extra). Endpoints, for the default stream and for each stream made with
``POST /streams`` (under ``/streams/{id}``): ``stream.mjpg`` (multipart JPEG, any number of viewers up to the
cap), ``frame.jpg`` (the latest frame), ``POST control`` (JSON: the runtime's control fields), ``GET stats``;
``DELETE /streams/{id}`` ends a stream; ``GET /`` is the page.

Each stream has one publisher task: when a new frame is due it JPEG-encodes it once, and every viewer sends the
newest encoded frame it has not sent yet (a slot of one: a slow reader skips frames, a fast one is not held
back). A viewer whose connection is gone is noticed within a second. Bad requests get a 4xx with a reason and
change nothing; past the caps the answer is 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..._optional import require
from ...errors import ConfigError, StylemotionError
from ..hub import CapacityError, Hub, HubStream

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
MAX_BODY = 64 * 1024
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
    max_late: float = 0.25
    virtual_camera: bool = False  # also feed the default stream to a virtual webcam (pyvirtualcam + v4l2loopback)

    def validate(self) -> "ServerConfig":
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"fps must be a positive number, got {self.fps}")
        if self.max_streams < 1 or self.max_viewers < 1:
            raise ConfigError("max_streams and max_viewers must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        return self


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

    # -- streams ---------------------------------------------------------------------------------------------

    def _open(self, stream_id: str | None = None, **options) -> HubStream:
        stream = self.hub.open(self.new_planner(**options), self.config.fps, stream_id=stream_id)
        self.changed[stream.id] = asyncio.Condition()
        self.publishers[stream.id] = asyncio.get_running_loop().create_task(self._publish(stream))
        return stream

    async def _close(self, stream_id: str) -> None:
        self.hub.close(stream_id)
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
            raise web.HTTPNotFound(text=f"no stream {sid!r}")
        return stream

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
        return web.json_response(_finite({**stream.snapshot(), "viewers": self.viewers, "hub": self.hub.stats()}))

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

    async def delete(self, request):
        web = require("aiohttp.web", extra="server")
        stream = self._stream(request)
        if stream.id == self.default_id:
            raise web.HTTPBadRequest(text="the default stream runs as long as the server")
        await self._close(stream.id)
        return web.json_response({"deleted": stream.id})

    def app(self):
        web = require("aiohttp.web", extra="server")
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self.page)
        for prefix in ("", "/streams/{id}"):
            app.router.add_get(prefix + "/stream.mjpg", self.mjpeg)
            app.router.add_get(prefix + "/frame.jpg", self.frame)
            app.router.add_post(prefix + "/control", self.control)
            app.router.add_get(prefix + "/stats", self.stats)
        app.router.add_post("/streams", self.create)
        app.router.add_delete("/streams/{id}", self.delete)

        async def startup(app) -> None:
            if self.config.virtual_camera:
                self.camera = open_virtual_camera(self.hub.engine.info.resolution, self.config.fps)
            self.hub.start()
            self._open(self.default_id, **self.default_options)

        async def cleanup(app) -> None:
            for task in self.publishers.values():
                task.cancel()
            self.hub.stop()
            if self.camera is not None:
                self.camera.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        return app


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
                 onnx_path=None, seed: int = 0, max_batch: int | None = None, lookahead: float = 0.25,
                 **settings) -> Server:
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

    def new_planner(*, seed: int = seed, script: str | None = None, follow_lstm: bool = False):
        return make_planner(G, dev, base, directions=directions, script=script,
                            lstm=lstm if follow_lstm else None, seed=seed, live=True)

    default = {"seed": seed, "script": script, "follow_lstm": script is None and lstm is not None}
    hub = Hub(engine, max_batch=max_batch, lookahead=lookahead, max_streams=config.max_streams)
    return Server(hub, new_planner, config=config, emotions=list(directions.emotions) if directions else None,
                  has_lstm=lstm is not None, default=default)


def run(server: Server) -> None:
    """Serve until Ctrl-C / SIGTERM (aiohttp's runner handles both and shuts down cleanly)."""
    web = require("aiohttp.web", extra="server")
    web.run_app(server.app(), host=server.config.host, port=server.config.port, print=None,
                handle_signals=True)
