"""``Server``: the aiohttp application and its routes over a ``Hub``; ``build_server`` makes one for a model and
``run`` serves it until Ctrl-C / SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from ..._optional import require
from ...errors import ConfigError, StylemotionError
from ..hub import CapacityError, Hub
from .camera import open_virtual_camera
from .config import ServerConfig
from .guards import MAX_BODY, PHOTO_TYPES, Guards, read_photo_body, security_headers
from .messages import BadRequest, parse_control, parse_new_stream
from .page import render_page
from .photos import decode_photo, photo_embedder
from .sessions import Session, Sessions

log = logging.getLogger(__name__)

BOUNDARY = "stylemotion-frame"


class Server:
    """The aiohttp application over a ``Hub``. ``new_planner(**options)`` makes a stream's planner (the CLI
    builds it from the checkpoint, directions and LSTM); the default stream is opened at start."""

    def __init__(self, hub: Hub, new_planner, *, config: ServerConfig = ServerConfig(),
                 emotions: list[str] | None = None, has_lstm: bool = False, default: dict | None = None):
        self.hub, self.config = hub, config.validate()
        self.emotions, self.has_lstm = emotions, has_lstm
        self.default_options = default or {}
        self.sessions = Sessions(hub, new_planner, fps=self.config.fps, jpeg_quality=self.config.jpeg_quality,
                                 max_late=self.config.max_late, idle_timeout=self.config.idle_timeout)
        self.guards = Guards(self.config)
        self.reaper: asyncio.Task | None = None
        self.osc = None  # the OSC control socket (osc.OscControl) when config.osc is set
        self.osc_address: tuple[str, int] | None = None  # where it listens, once started
        if self.config.osc is not None:
            from .osc import OscControl, parse_allow

            self.osc = OscControl(self._apply_osc, allow=parse_allow(self.config.osc_allow), emotions=self.emotions,
                                  has_lstm=self.has_lstm)
        self.align_photo = None  # image [H, W, 3] uint8 -> Aligned (set by build_server)
        self.embed_photo = None  # (crop, progress(step)) -> ws [1, num_ws, w_dim] (set by build_server)

    @property
    def counters(self) -> dict:
        """Requests, refusals by kind, internal errors and streams closed when idle."""
        return {**self.guards.counters, "idle_closed": self.sessions.idle_closed,
                "refused_capacity": self.sessions.refused_capacity,
                **(self.osc.counters if self.osc is not None else {})}

    def _apply_osc(self, stream_id: str, changes: dict) -> int:
        """An OSC message's checked changes applied to a stream, as ``POST /control`` applies them (KeyError: no
        such stream, counted by the OSC side as refused)."""
        session = self.sessions.get(stream_id)
        if session is None:
            raise KeyError(stream_id)
        return session.stream.control(**changes)

    def _session(self, request) -> Session:
        web = require("aiohttp.web", extra="server")
        sid = request.match_info.get("id", self.sessions.default_id)
        session = self.sessions.get(sid)
        if session is None:
            raise web.HTTPNotFound(text=f"no stream {sid[:64]!r}")
        return session

    # -- handlers --------------------------------------------------------------------------------------------

    async def page(self, request):
        web = require("aiohttp.web", extra="server")
        return web.Response(text=render_page(self.emotions, self.has_lstm), content_type="text/html")

    async def mjpeg(self, request):
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        stream = session.stream
        if self.sessions.viewers >= self.config.max_viewers:
            raise web.HTTPServiceUnavailable(text=f"at most {self.config.max_viewers} viewers",
                                             headers={"Retry-After": "5"})
        response = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", "Connection": "close"})
        self.sessions.viewers += 1
        session.viewers += 1
        try:
            await response.prepare(request)
            sent = -1
            cond = session.changed
            while not stream.closed:
                async with cond:
                    try:
                        await asyncio.wait_for(cond.wait_for(lambda: (session.jpeg or (-1,))[0] > sent
                                                             or stream.closed), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
                if request.transport is None or request.transport.is_closing():
                    break  # the viewer left
                current = session.jpeg
                if current is None or current[0] <= sent:
                    continue
                sent, jpeg = current
                await response.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     f"\r\n\r\n".encode() + jpeg + b"\r\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass  # the viewer went away mid-write; nothing else is affected
        finally:
            self.sessions.viewers -= 1
            session.viewers -= 1
            session.touch()
        return response

    async def frame(self, request):
        web = require("aiohttp.web", extra="server")
        current = await self.sessions.latest_jpeg(self._session(request))
        if current is None:
            raise web.HTTPServiceUnavailable(text="no frame yet", headers={"Retry-After": "1"})
        return web.Response(body=current[1], content_type="image/jpeg",
                            headers={"Cache-Control": "no-cache", "X-Frame-Index": str(current[0])})

    async def control(self, request):
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        body = await request.read()  # over client_max_size: aiohttp answers 413
        try:
            changes = parse_control(body, emotions=self.emotions, has_lstm=self.has_lstm)
            generation = session.stream.control(**changes)
        except (BadRequest, ConfigError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"generation": generation, "applied": changes})

    async def stats(self, request):
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        return web.json_response(_finite({**session.stream.snapshot(), "viewers": self.sessions.viewers,
                                          "hub": self.hub.stats(), "server": self.counters,
                                          "webrtc": self.sessions.rtc.stats() if self.sessions.rtc else None,
                                          "photo": session.photo}))

    async def webrtc(self, request):
        """``POST .../webrtc`` (JSON ``{"sdp": ..., "type": "offer"}``) -> the answer in the same shape: the stream's
        frames as a VP8 video track from the stream's one shared encoder. 404 when the server runs without
        ``--webrtc`` (the page then stays on MJPEG)."""
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        rtc = self.sessions.rtc
        if rtc is None:
            raise web.HTTPNotFound(text="this server sends no WebRTC (start it with --webrtc); use stream.mjpg")
        from .webrtc import WebRTCError

        body = await request.read()
        resolution = self.hub.engine.info.resolution
        try:
            answer = await rtc.answer(session.id, self.config.fps, (resolution, resolution), body)
        except CapacityError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc), headers={"Retry-After": "5"}) from None
        except (BadRequest, ConfigError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except WebRTCError as exc:
            log.error("WebRTC offer for stream %s failed on our side: %s", session.id, exc)
            raise web.HTTPServiceUnavailable(text=str(exc), headers={"Retry-After": "5"}) from None
        session.touch()
        return web.json_response(answer)

    async def create(self, request):
        web = require("aiohttp.web", extra="server")
        body = await request.read()
        try:
            admit = self.config.headroom if self.config.admission else None
            session = self.sessions.open(admit=admit, **parse_new_stream(body, has_lstm=self.has_lstm))
        except CapacityError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc), headers={"Retry-After": "10"}) from None
        except (BadRequest, ConfigError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"id": session.id, "stream": f"/streams/{session.id}/stream.mjpg"}, status=201)

    async def photo(self, request):
        """``POST .../photo`` (the body is the image, ``Content-Type: image/jpeg|png|webp``, at most 8 MiB): find
        the face (422 when there is none), answer 202, embed it in the background (progress in ``stats`` under
        ``photo``) and then move the stream to the new face through a transition. The upload is decoded in
        memory and never written to disk."""
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        stream = session.stream
        if self.embed_photo is None:
            raise web.HTTPNotImplemented(text="this server cannot embed photos (started without a generator)")
        body = await read_photo_body(request)
        job = session.photo
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
        session.photo = job

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

        session.photo_task = loop.create_task(run())
        return web.json_response(job, status=202)

    async def delete(self, request):
        web = require("aiohttp.web", extra="server")
        session = self._session(request)
        if session.id == self.sessions.default_id:
            raise web.HTTPBadRequest(text="the default stream runs as long as the server")
        await self.sessions.close(session.id)
        return web.json_response({"deleted": session.id})

    # -- the application -------------------------------------------------------------------------------------

    def app(self):
        web = require("aiohttp.web", extra="server")
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self.guards.middleware()])
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/", self.page)
        for prefix in ("", "/streams/{id}"):
            app.router.add_get(prefix + "/stream.mjpg", self.mjpeg)
            app.router.add_get(prefix + "/frame.jpg", self.frame)
            app.router.add_post(prefix + "/control", self.control)
            app.router.add_get(prefix + "/stats", self.stats)
        app.router.add_post("/streams", self.create)
        for prefix in ("", "/streams/{id}"):
            app.router.add_post(prefix + "/photo", self.photo)
            app.router.add_post(prefix + "/webrtc", self.webrtc)
        app.router.add_delete("/streams/{id}", self.delete)

        async def startup(app) -> None:
            if self.config.virtual_camera:
                self.sessions.camera = open_virtual_camera(self.hub.engine.info.resolution, self.config.fps)
            self.hub.start()
            if self.config.webrtc:
                from .webrtc import WebRTCOutput

                self.sessions.rtc = WebRTCOutput(host=self.config.host, loopback=self.config.loopback,
                                                 max_peers=self.config.max_peers)
            self.sessions.open(self.sessions.default_id, **self.default_options)
            self.reaper = asyncio.get_running_loop().create_task(self.sessions.reap_idle())
            if self.osc is not None:
                self.osc_address = await self.osc.start(*self.config.osc)  # it logs where it listens

        async def cleanup(app) -> None:
            if self.osc is not None:
                self.osc.close()
            if self.reaper is not None:
                self.reaper.cancel()
            self.sessions.cancel_all()
            if self.sessions.rtc is not None:  # every peer connection and encoder, before the hub stops
                await self.sessions.rtc.close()
            self.hub.stop()
            if self.sessions.camera is not None:
                self.sessions.camera.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        return app


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

    from ...checkpoints.bundled import own_asset
    from ...pipeline.directions import Directions, load_directions
    from ...pipeline.sequence import load_lstm
    from .. import StreamSettings, make_planner, open_model

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


def run(server: Server) -> None:
    """Serve until Ctrl-C / SIGTERM (aiohttp's runner handles both and shuts down cleanly)."""
    web = require("aiohttp.web", extra="server")
    web.run_app(server.app(), host=server.config.host, port=server.config.port, print=None,
                handle_signals=True)
