"""The streams a server shows, one ``Session`` each: its hub stream, a publisher task that JPEG-encodes each newly
due frame once and wakes the viewers, who is watching, when it was last asked for, and its photo upload. Made
streams that nobody watches or asks about for ``idle_timeout`` seconds are closed; the default one never is."""
from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass

from ...errors import StylemotionError
from ..hub import CapacityError, Hub, HubStream

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Session:
    """One stream's serving state. ``jpeg``: ``(frame index, bytes)`` of the newest encoded frame; ``changed`` is
    notified when it changes and when the session ends; ``viewers``: MJPEG viewers now; ``activity``: the last
    request or viewer (monotonic seconds); ``photo``: the last upload's state and progress."""

    stream: HubStream
    changed: asyncio.Condition
    activity: float
    publisher: asyncio.Task | None = None
    jpeg: tuple[int, bytes] | None = None
    viewers: int = 0
    photo: dict | None = None
    photo_task: asyncio.Task | None = None

    @property
    def id(self) -> str:
        return self.stream.id

    def touch(self) -> None:
        self.activity = time.monotonic()


class Sessions:
    """Every session of one ``Hub``, by stream id. ``new_planner(**options)`` makes a stream's planner; ``camera``
    (a virtual webcam, or None) is fed the default stream's frames. Runs on the server's event loop."""

    def __init__(self, hub: Hub, new_planner, *, fps: float, jpeg_quality: int, max_late: float,
                 idle_timeout: float, default_id: str = "default"):
        self.hub, self.new_planner = hub, new_planner
        self.fps, self.jpeg_quality, self.max_late, self.idle_timeout = fps, jpeg_quality, max_late, idle_timeout
        self.default_id = default_id
        self.sessions: dict[str, Session] = {}
        self.viewers = 0  # MJPEG viewers of every session
        self.idle_closed = 0
        self.refused_capacity = 0  # new sessions refused because the engine could not render them too
        self.camera = None
        self.rtc = None  # the WebRTC output (webrtc.WebRTCOutput) when the server sends WebRTC, else None

    def get(self, stream_id: str) -> Session | None:
        """The open session of ``stream_id`` (its activity touched), or None."""
        if stream_id not in self.hub.streams:
            return None
        session = self.sessions.get(stream_id)
        if session is not None:
            session.touch()
        return session

    def open(self, stream_id: str | None = None, *, admit: float | None = None, **options) -> Session:
        """A new stream on the hub with a planner made from ``options``, and its publisher started. Raises the
        hub's CapacityError at the cap of streams, and, with ``admit`` (a headroom in (0, 1]), when the engine's
        measured capacity cannot render this stream on top of the others; ConfigError for options the planner
        refuses."""
        if admit is not None and not self.hub.admits(self.fps, admit):
            self.refused_capacity += 1
            raise CapacityError(f"the engine renders about {self.hub.capacity_fps:.0f} frames/s and the open streams "
                                f"ask for {self.hub.demand_fps:.0f}: one more at {self.fps:g} fps would slow every "
                                "stream; retry when one has closed")
        stream = self.hub.open(self.new_planner(**options), self.fps, stream_id=stream_id)
        session = Session(stream, asyncio.Condition(), time.monotonic())
        self.sessions[stream.id] = session
        session.publisher = asyncio.get_running_loop().create_task(self._publish(session))
        return session

    async def close(self, stream_id: str) -> None:
        session = self.sessions.pop(stream_id, None)
        if session is None:
            return  # closed already (a DELETE and the idle reaper may meet)
        self.hub.close(stream_id)
        session.publisher.cancel()
        if self.rtc is not None:
            await self.rtc.close_stream(stream_id)
        session.jpeg = None
        async with session.changed:
            session.changed.notify_all()  # viewers of an ended stream leave

    def cancel_all(self) -> None:
        """Stop every publisher and photo embedding (at shutdown; the hub is stopped by its owner)."""
        for session in self.sessions.values():
            if session.photo_task is not None:
                session.photo_task.cancel()
            session.publisher.cancel()

    async def latest_jpeg(self, session: Session) -> tuple[int, bytes] | None:
        """``(frame index, JPEG)`` of the frame the stream shows now: the publisher's when it encoded that frame
        (it does while MJPEG viewers watch), else encoded here once and kept; None before the first frame."""
        shown = session.stream.shown
        if shown is None:
            return None
        if session.jpeg is not None and session.jpeg[0] >= shown.index:
            return session.jpeg
        jpeg = await asyncio.get_running_loop().run_in_executor(None, self._encode, shown.image)
        if session.jpeg is None or session.jpeg[0] < shown.index:
            session.jpeg = (shown.index, jpeg)
        return session.jpeg

    def _encode(self, image) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=self.jpeg_quality)
        return buf.getvalue()

    async def _publish(self, session: Session) -> None:
        """Encode each newly due frame once and wake the stream's viewers."""
        loop = asyncio.get_running_loop()
        stream = session.stream
        while not stream.closed:
            frame = stream.latest(max_late=self.max_late)
            if frame is None:
                await asyncio.sleep(stream.wait_hint())
                continue
            rtc_viewers = self.rtc.viewers(stream.id) if self.rtc is not None else 0
            stream.viewers = session.viewers + rtc_viewers  # the hub's fair share weighs watched streams more
            if self.camera is not None and stream.id == self.default_id:
                await loop.run_in_executor(None, self.camera.send, frame.image)
            # JPEG only for MJPEG viewers (frame.jpg encodes on demand): WebRTC-only streams skip that cost
            encode = loop.run_in_executor(None, self._encode, frame.image) if session.viewers else None
            if rtc_viewers:  # one VP8 encoder per stream, shared by its WebRTC viewers, beside the JPEG
                try:
                    await self.rtc.publish(stream.id, frame.image, frame.index)
                except StylemotionError as exc:  # that stream's WebRTC viewers are closed; MJPEG goes on
                    log.error("WebRTC for stream %s: %s", stream.id, exc)
            if encode is None:
                continue
            jpeg = await encode
            if self.sessions.get(stream.id) is not session:
                return  # closed while encoding
            session.jpeg = (frame.index, jpeg)
            async with session.changed:
                session.changed.notify_all()

    async def reap_idle(self) -> None:
        """Close made streams that nobody watched or asked about for idle_timeout seconds (runs until cancelled)."""
        period = min(5.0, self.idle_timeout / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for session in [s for s in list(self.sessions.values()) if s.id != self.default_id]:
                rtc_viewers = self.rtc.viewers(session.id) if self.rtc is not None else 0
                if self.sessions.get(session.id) is session and session.viewers == 0 and rtc_viewers == 0 \
                        and now - session.activity > self.idle_timeout:
                    log.info("closing stream %s: idle for %.0f s", session.id, now - session.activity)
                    self.idle_closed += 1
                    await self.close(session.id)
