"""The soak's clients, each a thread: fast MJPEG viewers that reconnect now and then; slow viewers that read a frame a
second; viewers that vanish mid-stream without a word; sessions created (``POST /streams``), watched and deleted,
some abandoned (the server closes them after its idle timeout); valid and invalid control messages, each with the
status it must get (``INVALID``); frame and page pollers. ``Tally`` counts what they did and every unexpected
answer."""
from __future__ import annotations

import collections
import http.client
import json
import random
import socket
import threading
import time

EMOTIONS = ["happy", "sad", "surprise", "angry", "fear", "neutral"]
# Invalid requests and the status each must get: (method, path, body, headers, status).
INVALID = [
    ("POST", "/control", b"{not json", None, 400),
    ("POST", "/control", b'{"emotion": "hungry"}', None, 400),
    ("POST", "/control", b'{"intensity": 1e999}', None, 400),
    ("POST", "/control", b'{"mood": "sad"}', None, 400),
    ("POST", "/control", b"[1, 2]", None, 400),
    ("POST", "/control", b'{"emotion": "sad"' + b" " * (70 * 1024) + b"}", None, 413),
    ("POST", "/control", b'{"emotion": "sad"}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/streams", b'{"seed": -1}', None, 400),
    ("GET", "/streams/no-such-stream/stats", None, None, 404),
    ("GET", "/../../etc/passwd", None, None, 404),
    ("GET", "/nope", None, None, 404),
    ("PUT", "/control", b"{}", None, 405),
    ("DELETE", "/streams/default", None, None, 400),
    ("GET", "/stats", None, {"Host": "evil.example"}, 403),
]


class Tally:
    """Thread-safe counters of what the clients did and every unexpected answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.unexpected: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def bad(self, what: str) -> None:
        with self.lock:
            self.counts["unexpected"] += 1
            if len(self.unexpected) < 50:
                self.unexpected.append(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if headers is None:
            headers = {"Content-Type": "application/json"} if method == "POST" else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_mjpeg(port: int, path: str, seconds: float, pause: float, stop: threading.Event) -> int:
    """Read multipart JPEG parts for ``seconds``, sleeping ``pause`` after each; returns the parts read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            return -resp.status
        parts, end = 0, time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            line = resp.fp.readline()
            if not line:
                break  # the stream ended (a deleted or reaped session)
            if line.lower().startswith(b"content-length:"):
                resp.fp.read(int(line.split(b":")[1]) + 2)
                parts += 1
                if pause:
                    time.sleep(pause)
        return parts
    finally:
        conn.close()


async def _webrtc_session(port: int, seconds: float, vanish: bool, stop: threading.Event) -> tuple[int, int]:
    """One WebRTC viewer of the default stream for ``seconds``: an aiortc client on loopback offers, takes the
    answer and decodes frames; it closes its connection at the end, or, with ``vanish``, just goes (the server must
    notice by itself). Returns ``(HTTP status of the offer, frames decoded)``."""
    import asyncio

    import aiortc
    from aiortc.mediastreams import MediaStreamError

    from stylemotion.runtime.server.webrtc import offering_addresses

    pc = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    frames = [0]

    async def consume(track):
        try:
            while True:
                await track.recv()
                frames[0] += 1
        except MediaStreamError:
            pass

    tasks = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    try:
        with offering_addresses(["127.0.0.1"]):  # the server offers loopback only; so does this client
            await pc.setLocalDescription(await pc.createOffer())
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
        status, text = await asyncio.get_running_loop().run_in_executor(None, request, port, "POST", "/webrtc", body)
        if status != 200:
            return status, 0
        await pc.setRemoteDescription(aiortc.RTCSessionDescription(**json.loads(text)))
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            await asyncio.sleep(0.2)
        return status, frames[0]
    finally:
        for task in tasks:
            task.cancel()
        if not vanish:
            await pc.close()
        else:  # gone without a word: only the sockets close (the process, or the network, went away)
            for transceiver in pc.getTransceivers():
                transport = transceiver.receiver.transport
                if transport is not None:
                    await transport.transport.stop()


def clients(port: int, stop: threading.Event, tally: Tally, rng_seed: int, *,
            webrtc: bool = False, vanishing_webrtc: bool = False) -> list[threading.Thread]:
    """The client mix against the server on ``port``, as threads not yet started; each runs until ``stop``."""
    def loop(name, body):
        def run():
            rng = random.Random(f"{rng_seed}-{name}")
            while not stop.is_set():
                try:
                    body(rng)
                except (OSError, http.client.HTTPException) as exc:
                    if not stop.is_set():
                        tally.bad(f"{name}: {type(exc).__name__}: {exc}")
                        time.sleep(0.5)
        return threading.Thread(target=run, name=name, daemon=True)

    def viewer(kind: str, seconds: tuple[float, float], pause: float):
        def body(rng):
            n = read_mjpeg(port, "/stream.mjpg", rng.uniform(*seconds), pause, stop)
            tally.add(f"{kind}_viewer_frames", max(n, 0))
            tally.add("viewer_sessions")
            if n < 0:
                tally.bad(f"{kind} viewer got status {-n}")
        return body

    fast_viewer, slow_viewer = viewer("fast", (10, 30), 0.0), viewer("slow", (5, 20), 1.0)  # slow: a frame a second

    def vanishing_viewer(rng):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.recv(rng.choice([100, 2000, 20000]))
            time.sleep(rng.uniform(0, 0.5))
        finally:
            s.close()  # gone without a word, mid-frame
        tally.add("vanished_viewers")
        time.sleep(rng.uniform(0.1, 0.5))

    def sessions(rng):
        body = {"seed": rng.randrange(2 ** 32)}
        if rng.random() < 0.5:
            body["script"] = ",".join(f"{rng.choice(EMOTIONS)}:{rng.uniform(0.5, 2):.1f}" for _ in range(3))
        status, text = request(port, "POST", "/streams", json.dumps(body).encode())
        if status == 503:  # at the stream cap (abandoned sessions wait for the idle timeout): expected
            tally.add("sessions_refused_at_cap")
            time.sleep(2)
            return
        if status != 201:
            tally.bad(f"POST /streams -> {status}: {text[:200]!r}")
            return
        sid = json.loads(text)["id"]
        tally.add("sessions_created")
        n = read_mjpeg(port, f"/streams/{sid}/stream.mjpg", rng.uniform(1, 4), 0.0, stop)
        if n < 0:
            tally.bad(f"viewer of session {sid} got status {-n}")
        if rng.random() < 0.2:
            tally.add("sessions_abandoned")  # the server's idle timeout must close it
        else:
            status, text = request(port, "DELETE", f"/streams/{sid}")
            if status != 200:
                tally.bad(f"DELETE /streams/{sid} -> {status}: {text[:200]!r}")
            tally.add("sessions_deleted")
        time.sleep(rng.uniform(0.2, 1.0))

    def controls(rng):
        if rng.random() < 0.6:
            body = {"emotion": rng.choice(EMOTIONS)}
            if rng.random() < 0.5:
                body["intensity"] = round(rng.uniform(-10, 10), 2)
            status, text = request(port, "POST", "/control", json.dumps(body).encode())
            if status != 200:
                tally.bad(f"valid control {body} -> {status}: {text[:200]!r}")
            tally.add("controls_valid")
        else:
            method, path, body, headers, expected = rng.choice(INVALID)
            status, text = request(port, method, path, body, headers)
            if status != expected:
                tally.bad(f"{method} {path} -> {status}, expected {expected}: {text[:200]!r}")
            elif b"Traceback" in text:
                tally.bad(f"{method} {path}: a traceback in the answer")
            tally.add("requests_invalid")
        time.sleep(rng.uniform(0.05, 0.3))

    def pollers(rng):
        status, _ = request(port, "GET", "/frame.jpg")
        if status not in (200, 503):  # 503: no frame yet (start-up)
            tally.bad(f"GET /frame.jpg -> {status}")
        tally.add("frames_polled")
        if rng.random() < 0.2:
            status, _ = request(port, "GET", "/")
            if status != 200:
                tally.bad(f"GET / -> {status}")
        time.sleep(0.2)

    def webrtc_viewer(rng):
        import asyncio

        vanish = vanishing_webrtc and rng.random() < 0.2
        status, frames = asyncio.run(_webrtc_session(port, rng.uniform(3, 12), vanish, stop))
        if status == 503:  # at --max-peers: expected now and then
            tally.add("webrtc_refused_at_cap")
        elif status != 200:
            tally.bad(f"POST /webrtc -> {status}")
        else:
            tally.add("webrtc_viewers_vanished" if vanish else "webrtc_viewers_closed")
            tally.add("webrtc_frames", frames)
            if frames == 0 and not stop.is_set():
                tally.bad("a WebRTC viewer decoded no frame")
        time.sleep(rng.uniform(0.2, 2.0))

    kinds = [("fast-1", fast_viewer), ("fast-2", fast_viewer), ("slow-1", slow_viewer), ("slow-2", slow_viewer),
             ("vanish", vanishing_viewer), ("sessions", sessions), ("controls", controls), ("poll", pollers)]
    if webrtc:  # viewers that come and go over WebRTC (one shared encoder per stream on the server)
        kinds += [("webrtc-1", webrtc_viewer), ("webrtc-2", webrtc_viewer)]
    return [loop(name, body) for name, body in kinds]
