"""WebRTC output: each stream's frames as a VP8 video track, encoded once per stream and sent to every viewer.

A viewer POSTs an SDP offer (``{"sdp": ..., "type": "offer"}``, checked by ``parse_offer``) and gets the answer in
the same shape from ``WebRTCOutput.answer``. Per stream there is ONE encoder (``_Feed``: a PyAV ``libvpx`` VP8
context, realtime settings, yuv420p, a keyframe at least every ~1 s and one forced when a viewer starts
receiving or asks with a PLI/FIR), started with the stream's first viewer and closed and freed when its last one
leaves or the stream closes. ``publish`` encodes each newly due frame once, in an executor thread, and puts the
packets in every viewer's small queue; each viewer's track hands them to aiortc's ``RTCRtpSender``, which packs
pre-encoded ``av.Packet`` s into RTP without re-encoding (``rtcrtpsender._next_encoded_frame``: a non-``Frame``
from ``track.recv()`` goes to ``encoder.pack``). A viewer that is new, or whose queue filled (it lagged: its
queue is emptied), skips packets until the next keyframe and asks for one. The transceiver's codec preference is
VP8 (+ its RTX), so the negotiated codec is the one the packets are in. Packet pts are in 1/90000 s from the
frame index (``index / fps``), so RTP timestamps advance with the stream's clock, skipped frames included.

The bitrate is fixed per encoder (constant bitrate, ``default_bitrate``: ~3 Mbit/s at 1024x1024 and 30 fps,
scaled by pixels and fps). A shared encoder cannot follow one viewer's congestion control: aiortc's REMB
handling sets the rate of its own per-sender encoder, which packing ignores, so a viewer on a slow link loses
packets (and recovers at the next keyframe) rather than slowing the stream for everyone.

ICE uses host candidates only, never STUN or TURN (``RTCConfiguration(iceServers=[])``: ``None`` would make
aiortc use Google's STUN server). A server bound to loopback offers only its loopback address and keeps only
loopback candidates of an offer (mDNS ``.local`` ones are dropped: no multicast lookups), so nothing but this
machine is ever contacted. (Chromium offers no loopback candidate even with
``--allow-loopback-in-peer-connection``; it still connects: its checks reach the loopback-bound socket and ICE
learns its address as peer-reflexive, and a socket bound to loopback hears only this machine.) aioice has no
option to choose the host addresses it gathers on, and it leaves 127.0.0.1 out; so ``offering_addresses``
replaces ``aioice.ice.get_host_addresses`` once (idempotent) with a function that reads a context variable, set
only while a ``WebRTCOutput`` gathers (to the addresses the output holds); anywhere else aioice's own function
answers, so other aiortc users in the process are unaffected.

``aiortc``, ``aioice`` and ``av`` are imported lazily (the ``server`` extra); the checks that need none of them
(``parse_offer``, ``filter_candidates``, ``host_addresses``, ``default_bitrate``) live in ``sdp`` and are imported
here too.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..._optional import require
from ...errors import ConfigError, ShapeError, StylemotionError
from ..hub import CapacityError
from .messages import BadRequest
from .sdp import (LOOPBACK_ADDRESSES, MAX_SDP, WILDCARD_HOSTS, _install_address_hook,  # noqa: F401 (re-exported)
                  default_bitrate, filter_candidates, host_addresses, offering_addresses, parse_offer)

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000  # RTP video clock: packet pts are in 1/90000 s


class EncoderError(StylemotionError):
    """A stream's VP8 encoder failed (names the stream and the frame)."""


class WebRTCError(StylemotionError):
    """The WebRTC stack failed on this server's side (names the stream and what failed), not because of the
    offer (that is ``BadRequest``)."""


# -- one stream's encoder and each viewer's track --------------------------------------------------------------

class _Feed:
    """One stream's shared VP8 encoder and the tracks of its viewers. ``encode`` runs in an executor thread (one
    at a time: ``pending``); everything else runs on the event loop."""

    def __init__(self, stream_id: str, fps: float, size: tuple[int, int], bitrate: int, *,
                 keyframe_interval: float, min_forced_interval: float, counts: dict):
        av = require("av", extra="server")
        self.stream_id, self.fps, self.size, self.bitrate = stream_id, fps, size, bitrate
        self.counts = counts  # the output's counters
        self.min_forced_interval = min_forced_interval
        height, width = size
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.time_base = Fraction(1, VIDEO_CLOCK)
        codec.framerate = Fraction(fps).limit_denominator(1001)
        codec.bit_rate = bitrate
        codec.gop_size = max(1, round(fps * keyframe_interval))  # kf_max_dist: a keyframe every keyframe_interval s
        codec.qmin, codec.qmax = 4, 56
        # One thread: 1024x1024 encodes in ~17 ms (conversion included) on a busy core, while libvpx with 2 threads
        # took ~255 ms a frame on a loaded 2-core machine; streams still encode in parallel in the executor.
        codec.thread_count = 1
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
                         "minrate": str(bitrate), "maxrate": str(bitrate), "bufsize": str(bitrate),  # CBR, 1 s
                         "undershoot-pct": "100", "overshoot-pct": "15", "static-thresh": "1"}
        self.codec = codec
        self.viewers: set = set()  # the viewers' tracks
        self.pending: asyncio.Future | None = None  # the encode running in the executor
        self.closed = False
        self.last_pts = -1
        self.want_key = False
        self.last_forced = -math.inf

    def receiving(self) -> bool:
        """Whether a viewer's sender is reading packets (before that, nothing is encoded for it)."""
        return any(track.started for track in self.viewers)

    def request_keyframe(self) -> None:
        """A viewer needs a keyframe (it joined, lagged, or sent a PLI/FIR)."""
        self.counts["keyframe_requests"] += 1
        self.want_key = True

    def take_keyframe_request(self) -> bool:
        """Whether the next frame is forced to be a keyframe: a viewer asked, and the last forced one is at least
        ``min_forced_interval`` seconds old (so that many viewers, or a hostile one, cannot make every frame a
        keyframe; the request then waits)."""
        now = time.monotonic()
        if self.want_key and now - self.last_forced >= self.min_forced_interval:
            self.want_key, self.last_forced = False, now
            return True
        return False

    def next_pts(self, index: int) -> int:
        """Frame ``index`` -> pts in 1/90000 s (``index / fps``), strictly increasing as libvpx requires."""
        pts = max(round(index * VIDEO_CLOCK / self.fps), self.last_pts + 1)
        self.last_pts = pts
        return pts

    def encode(self, image: np.ndarray, pts: int, keyframe: bool) -> list:
        """image: [H, W, 3] uint8 -> its VP8 packets (``av.Packet``, pts in 1/90000 s). Runs in an executor."""
        av = require("av", extra="server")
        codec = self.codec
        try:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(
                format="yuv420p")
            frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
            if keyframe:
                frame.pict_type = av.video.frame.PictureType.I
            packets = list(codec.encode(frame))
        except av.FFmpegError as exc:
            raise EncoderError(f"VP8 encoding failed for stream {self.stream_id!r} at pts {pts}: {exc}") from exc
        for packet in packets:
            packet.time_base = Fraction(1, VIDEO_CLOCK)
        return packets

    async def close(self) -> None:
        """Stop encoding: wait for an encode in flight, then free the codec."""
        self.closed = True
        if self.pending is not None:
            await asyncio.wait([self.pending])
        self.codec = None
        for track in list(self.viewers):
            track.stop()
        self.viewers.clear()


@functools.cache
def _track_class():
    """The viewer track class (made on first use: it subclasses aiortc's ``MediaStreamTrack``)."""
    mediastreams = require("aiortc.mediastreams", extra="server")

    class ViewerTrack(mediastreams.MediaStreamTrack):
        """One viewer's video: ``recv()`` yields the stream's encoded packets (``av.Packet``) from a small queue.
        ``need_key``: packets are skipped until a keyframe (new viewers, and lagging ones whose queue filled)."""

        kind = "video"

        def __init__(self, feed: _Feed, queue_size: int):
            super().__init__()
            self.feed = feed
            self.queue: asyncio.Queue = asyncio.Queue(queue_size)
            self.need_key = True
            self.started = False
            self.dropped = 0  # times the queue filled

        def offer(self, packet) -> None:
            """Queue one packet (on the event loop)."""
            if self.readyState != "live":
                return
            if self.need_key and not packet.is_keyframe:
                return
            if self.queue.full():  # lagging: drop what is queued and restart from a keyframe
                self.dropped += 1
                while not self.queue.empty():
                    self.queue.get_nowait()
                if not packet.is_keyframe:
                    self.need_key = True
                    if self.started:
                        self.feed.request_keyframe()
                    return
            self.need_key = False
            self.queue.put_nowait(packet)

        async def recv(self):
            if not self.started:  # the sender starts reading: this viewer joins, ask for a keyframe
                self.started = True
                self.feed.request_keyframe()
            if self.readyState != "live":
                raise mediastreams.MediaStreamError
            packet = await self.queue.get()
            if packet is None:
                raise mediastreams.MediaStreamError
            return packet

        def stop(self) -> None:
            if self.readyState == "live":
                super().stop()
                while not self.queue.empty():
                    self.queue.get_nowait()
                self.queue.put_nowait(None)  # wakes a waiting recv(), which ends the sender

    return ViewerTrack


def _forward_keyframe_requests(sender, feed: _Feed) -> None:
    """Make a viewer's PLI/FIR reach the stream's encoder. aiortc answers them by flagging the sender's own
    encoder (``RTCRtpSender._send_keyframe``), which pre-encoded packets never use; the instance's method is wrapped
    to also ask ``feed``. Without that private method (another aiortc) the viewer still recovers at the next
    periodic keyframe."""
    own = getattr(sender, "_send_keyframe", None)
    if not callable(own):
        log.warning("webrtc: this aiortc has no RTCRtpSender._send_keyframe; PLI/FIR wait for the periodic keyframe")
        return

    def send_keyframe() -> None:
        own()
        feed.request_keyframe()

    sender._send_keyframe = send_keyframe


@dataclass(eq=False)
class _Peer:
    """One viewer: its peer connection, its track and the stream it watches."""

    id: int
    stream_id: str
    pc: object
    track: object
    feed: _Feed
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    watchdog: asyncio.Task | None = None


# -- the output ---------------------------------------------------------------------------------------------------

class WebRTCOutput:
    """Every WebRTC viewer of a server's streams (runs on the server's event loop).

    ``host``/``loopback``: the HTTP bind address and whether it is loopback (``ServerConfig.host`` and
    ``.loopback``): the ICE host addresses offered come from ``host_addresses(host)``, which must all be loopback
    when ``loopback``. ``max_peers``: viewers over all streams (``CapacityError`` past it). ``bitrate``: bits/s of
    every stream's encoder, None: ``default_bitrate`` of its size and fps. ``queue_size``: packets a viewer may
    lag behind before it is reset to the next keyframe. A peer not connected ``connect_timeout`` seconds after
    its answer is closed; answering takes at most ``negotiation_timeout`` seconds."""

    def __init__(self, *, host: str, loopback: bool, max_peers: int = 32, bitrate: int | None = None,
                 queue_size: int = 8, keyframe_interval: float = 1.0, min_forced_keyframe_interval: float = 0.25,
                 connect_timeout: float = 20.0, negotiation_timeout: float = 10.0):
        if max_peers < 1:
            raise ConfigError(f"max_peers must be >= 1, got {max_peers}")
        if bitrate is not None and not 50_000 <= bitrate <= 50_000_000:
            raise ConfigError(f"bitrate must be in [50 kbit/s, 50 Mbit/s] (bits/s), got {bitrate}")
        if queue_size < 1 or not keyframe_interval > 0 or not min_forced_keyframe_interval >= 0:
            raise ConfigError(f"queue_size must be >= 1 and keyframe intervals positive, got {queue_size}, "
                              f"{keyframe_interval}, {min_forced_keyframe_interval}")
        if not (connect_timeout > 0 and negotiation_timeout > 0):
            raise ConfigError(f"connect_timeout and negotiation_timeout must be positive seconds, got "
                              f"{connect_timeout}, {negotiation_timeout}")
        addresses = host_addresses(host)
        if loopback and (addresses is None or any(not ipaddress.ip_address(a).is_loopback for a in addresses)):
            raise ConfigError(f"host {host!r} is not a loopback address, but loopback=True")
        require("aiortc", extra="server")
        _install_address_hook()
        self.host, self.loopback, self.addresses = host, loopback, addresses
        self.max_peers, self.bitrate, self.queue_size = max_peers, bitrate, queue_size
        self.keyframe_interval, self.min_forced_keyframe_interval = keyframe_interval, min_forced_keyframe_interval
        self.connect_timeout, self.negotiation_timeout = connect_timeout, negotiation_timeout
        self._peers: dict[int, _Peer] = {}
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ids = 0
        self._closed = False
        self.counts = {"offers": 0, "answered": 0, "refused_offers": 0, "refused_capacity": 0, "timed_out": 0,
                       "frames_published": 0, "frames_encoded": 0, "frames_skipped": 0, "keyframes": 0,
                       "keyframe_requests": 0, "keyframes_forced": 0, "bytes_encoded": 0, "viewer_resets": 0,
                       "encoder_errors": 0}

    # -- queries --------------------------------------------------------------------------------------------

    def viewers(self, stream_id: str) -> int:
        """WebRTC viewers of ``stream_id`` (connecting ones included)."""
        return sum(1 for peer in self._peers.values() if peer.stream_id == stream_id)

    def stats(self) -> dict:
        """``peers`` (all viewers), ``connected``, ``encoders`` (open VP8 encoders: one per watched stream),
        ``streams`` (viewers by stream id), ``bitrate`` (bits/s by stream id) and the counters: offers, answered,
        refused_offers (bad SDP), refused_capacity, timed_out (never connected), frames_published (due frames of
        watched streams), frames_encoded, frames_skipped (the encoder was busy), keyframes, keyframe_requests
        (joins, lags, PLI/FIR), keyframes_forced, bytes_encoded, viewer_resets (a viewer's queue filled),
        encoder_errors."""
        streams: dict[str, int] = {}
        for peer in self._peers.values():
            streams[peer.stream_id] = streams.get(peer.stream_id, 0) + 1
        return {"peers": len(self._peers),
                "connected": sum(1 for p in self._peers.values() if p.pc.connectionState == "connected"),
                "encoders": sum(1 for f in self._feeds.values() if f.codec is not None),
                "streams": streams, "bitrate": {sid: f.bitrate for sid, f in self._feeds.items()},
                **self.counts}

    # -- offers -------------------------------------------------------------------------------------------------

    async def answer(self, stream_id: str, fps: float, size: tuple[int, int], body: bytes) -> dict:
        """A viewer's offer (the request body) -> the answer ``{"sdp": ..., "type": "answer"}`` for a VP8 video
        track of ``stream_id``'s frames (``size``: ``(height, width)``, at ``fps``; the first viewer's values hold
        until the stream's encoder stops). BadRequest (counted in ``refused_offers``) names what is wrong with
        the offer, including anything the WebRTC stack refuses; CapacityError past ``max_peers``."""
        self.counts["offers"] += 1
        try:
            sdp = filter_candidates(parse_offer(body), loopback=self.loopback)
        except BadRequest:
            self.counts["refused_offers"] += 1
            raise
        if self._closed:
            raise CapacityError("the WebRTC output is closed (the server is stopping)")
        if len(self._peers) >= self.max_peers:
            self.counts["refused_capacity"] += 1
            raise CapacityError(f"the server sends WebRTC to at most {self.max_peers} viewers")
        height, width = size
        if not (math.isfinite(fps) and fps > 0) or height < 2 or width < 2:
            raise ConfigError(f"stream {stream_id!r}: fps must be positive and size (height, width) at least "
                              f"2x2, got {fps}, {size}")
        aiortc = require("aiortc", extra="server")
        feed = self._feeds.get(stream_id)
        if feed is None:
            bitrate = self.bitrate or default_bitrate((height, width), fps)
            feed = self._feeds[stream_id] = _Feed(
                stream_id, float(fps), (int(height), int(width)), bitrate, keyframe_interval=self.keyframe_interval,
                min_forced_interval=self.min_forced_keyframe_interval, counts=self.counts)
            log.info("webrtc: encoder started for stream %s (%dx%d, %.3g fps, %d bit/s)", stream_id, width, height,
                     fps, bitrate)
        track = _track_class()(feed, self.queue_size)
        feed.viewers.add(track)
        pc = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))  # None would mean Google's STUN
        self._ids += 1
        peer = self._peers[self._ids] = _Peer(self._ids, stream_id, pc, track, feed)
        pc.on("connectionstatechange", lambda: self._state_changed(peer))
        try:
            local = await asyncio.wait_for(self._negotiate(peer, sdp, aiortc), self.negotiation_timeout)
        except asyncio.TimeoutError as exc:
            await self._drop(peer, "negotiation timed out")
            self.counts["refused_offers"] += 1
            raise BadRequest(f"sdp: negotiating took longer than {self.negotiation_timeout:g} s") from exc
        except BadRequest:
            await self._drop(peer, "offer refused")
            self.counts["refused_offers"] += 1
            raise
        except BaseException:
            await self._drop(peer, "answer failed")
            raise
        peer.watchdog = self._spawn(self._watch(peer))
        self.counts["answered"] += 1
        return {"sdp": local.sdp, "type": local.type}

    async def _negotiate(self, peer: _Peer, sdp: str, aiortc):
        """Set the offer, make and set the answer; the WebRTC stack's failures on the offer become BadRequest."""
        pc = peer.pc
        transceiver = pc.addTransceiver(peer.track, direction="sendonly")
        _forward_keyframe_requests(transceiver.sender, peer.feed)
        codecs = aiortc.RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")])
        try:
            await pc.setRemoteDescription(aiortc.RTCSessionDescription(sdp=sdp, type="offer"))
            if transceiver.mid is None:
                raise BadRequest("sdp has no video media section (m=video) to send the stream on")
            answer = await pc.createAnswer()
        except BadRequest:
            raise
        except Exception as exc:  # aiortc's parser and negotiation raise many types on a hostile offer
            log.debug("webrtc: offer refused", exc_info=True)
            raise BadRequest(f"sdp was refused by the WebRTC stack: {type(exc).__name__}: {str(exc)[:200]}") \
                from exc
        try:
            with offering_addresses(self.addresses):
                await pc.setLocalDescription(answer)
        except OSError as exc:
            raise WebRTCError(f"stream {peer.stream_id!r}: cannot open ICE sockets on {self.addresses or 'any'}: "
                              f"{exc}") from exc
        except Exception as exc:  # the answer is built from the offer: what fails here is the offer's fault
            log.debug("webrtc: answer refused", exc_info=True)
            raise BadRequest(f"sdp was refused by the WebRTC stack: {type(exc).__name__}: {str(exc)[:200]}") \
                from exc
        if transceiver.currentDirection not in ("sendonly", "sendrecv"):
            raise BadRequest(f"sdp: the offer's video must be recvonly or sendrecv (this server only sends), "
                             f"the answer would be {transceiver.currentDirection}")
        return pc.localDescription

    # -- frames ---------------------------------------------------------------------------------------------------

    async def publish(self, stream_id: str, image: np.ndarray, index: int) -> None:
        """Send a newly due frame to ``stream_id``'s WebRTC viewers. image: [H, W, 3] uint8 of the stream's size;
        ``index``: the frame's index on the stream's clock (pts = index / fps). A no-op while no viewer of the
        stream is receiving; a frame arriving while the previous one is still encoding is skipped (counted). The
        encoding runs in the loop's default executor. ShapeError names a wrong image; EncoderError (after the
        stream's viewers are closed: they could get nothing) a failing encoder."""
        feed = self._feeds.get(stream_id)
        if feed is None or feed.closed or not feed.receiving():
            return
        self.counts["frames_published"] += 1
        if feed.pending is not None:
            self.counts["frames_skipped"] += 1
            return
        height, width = feed.size
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ShapeError(f"stream {stream_id!r}: image must be [{height}, {width}, 3] uint8, got "
                             f"{list(image.shape)} {image.dtype}")
        keyframe = feed.take_keyframe_request()
        pts = feed.next_pts(index)
        pending = asyncio.get_running_loop().run_in_executor(None, feed.encode, image, pts, keyframe)
        feed.pending = pending

        def done(future: asyncio.Future) -> None:
            feed.pending = None
            if not future.cancelled():
                future.exception()  # retrieved here too: a cancelled publish must not leave it unreported

        pending.add_done_callback(done)
        try:
            packets = await asyncio.shield(pending)  # a cancelled publisher leaves the encode to finish
        except EncoderError:
            self.counts["encoder_errors"] += 1
            log.exception("webrtc: closing stream %s's viewers", stream_id)
            await self.close_stream(stream_id)
            raise
        if feed.closed:
            return
        self.counts["frames_encoded"] += 1
        self.counts["keyframes_forced"] += keyframe
        for packet in packets:
            self.counts["bytes_encoded"] += packet.size
            if packet.is_keyframe:
                self.counts["keyframes"] += 1
                feed.want_key = False  # a keyframe serves every viewer waiting for one
            for track in list(feed.viewers):
                before = track.dropped
                track.offer(packet)
                self.counts["viewer_resets"] += track.dropped - before

    # -- ending ---------------------------------------------------------------------------------------------------

    async def close_stream(self, stream_id: str) -> None:
        """Close every viewer of ``stream_id`` and its encoder (the stream ended)."""
        await asyncio.gather(*(self._drop(peer, "stream closed") for peer in list(self._peers.values())
                               if peer.stream_id == stream_id))
        feed = self._feeds.pop(stream_id, None)
        if feed is not None:
            await feed.close()

    async def close(self) -> None:
        """Close every peer connection and encoder (at shutdown); later offers are refused."""
        self._closed = True
        await asyncio.gather(*(self._drop(peer, "server stopping") for peer in list(self._peers.values())))
        for feed in list(self._feeds.values()):
            await feed.close()
        self._feeds.clear()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _state_changed(self, peer: _Peer) -> None:
        state = peer.pc.connectionState
        if state == "connected":
            peer.connected.set()
        elif state in ("failed", "closed") and peer.id in self._peers:
            self._spawn(self._drop(peer, f"connection {state}"))

    async def _watch(self, peer: _Peer) -> None:
        """Close a peer that does not connect within ``connect_timeout`` seconds of its answer."""
        try:
            await asyncio.wait_for(peer.connected.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            if peer.id in self._peers:
                self.counts["timed_out"] += 1
                await self._drop(peer, f"not connected after {self.connect_timeout:g} s")

    async def _drop(self, peer: _Peer, reason: str) -> None:
        """Forget a viewer (idempotent): end its track, stop its stream's encoder if it was the last viewer, close
        its peer connection."""
        if self._peers.pop(peer.id, None) is None:
            return
        log.info("webrtc: viewer %d of stream %s leaves: %s", peer.id, peer.stream_id, reason)
        peer.track.stop()
        feed = peer.feed
        feed.viewers.discard(peer.track)
        if not feed.viewers and self._feeds.get(peer.stream_id) is feed:
            del self._feeds[peer.stream_id]
            log.info("webrtc: encoder stopped for stream %s (no viewer)", peer.stream_id)
            await feed.close()
        if peer.watchdog is not None and peer.watchdog is not asyncio.current_task():
            peer.watchdog.cancel()
        await peer.pc.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("webrtc: background task failed", exc_info=task.exception())

        task.add_done_callback(done)
        return task
