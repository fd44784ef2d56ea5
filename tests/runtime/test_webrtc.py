"""The WebRTC output: offers checked as data, aiortc viewers on loopback decoding one shared VP8 encoder's frames,
nothing left open after close, and the page's WebRTC path (and its MJPEG and token fallbacks) in a real browser.

``chromium_webrtc_options`` and ``COUNT_VIDEO_FRAMES_JS`` are for browser tests against the full server too."""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from stylemotion.errors import ConfigError, MissingDependencyError, ShapeError
from stylemotion.runtime.hub import CapacityError
from stylemotion.runtime.server.messages import BadRequest
from stylemotion.runtime.server.webrtc import (MAX_SDP, default_bitrate, filter_candidates, host_addresses,
                                               parse_offer)

from .offers import AIORTC_OFFER as OFFER
from .serving import serving_app

FPS = 15.0
SIZE = (48, 64)  # (height, width): not square, so a transposed frame would show

# Chromium's flags for WebRTC on loopback: host candidates on 127.0.0.1 (not mDNS names) and no GPU.
CHROMIUM_WEBRTC_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns")

# execute_async_script: count the frames #video presents for 3 s (requestVideoFrameCallback) and report its size.
# Needs browser.set_script_timeout(> 3 s). Returns {"frames", "width", "height"} (and "error" without the API).
COUNT_VIDEO_FRAMES_JS = """
const done = arguments[arguments.length - 1];
const v = document.getElementById("video");
if (!v || !v.requestVideoFrameCallback) { done({frames: 0, width: 0, height: 0, error: "no requestVideoFrameCallback"});
  return; }
let frames = 0;
const end = performance.now() + 3000;
const tick = () => { frames++; if (performance.now() < end) v.requestVideoFrameCallback(tick); };
v.requestVideoFrameCallback(tick);
setTimeout(() => done({frames, width: v.videoWidth, height: v.videoHeight}), 3000);
"""


def chromium_webrtc_options(webdriver):
    """ChromeOptions for Debian's chromium (``/usr/bin/chromium``) with WebRTC working on loopback; skips the test
    when chromium or chromedriver is missing. Returns ``(options, chromedriver path)``."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_WEBRTC_ARGS:
        options.add_argument(arg)
    return options, driver


def offer_json(sdp: str, **extra) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer", **extra}).encode()


# -- offers as data (no aiortc needed) -------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    (b"\xff\xfe", "JSON"),
    (b"{", "JSON"),
    (b"[" * 100_000, "JSON"),  # nested past the parser's recursion limit
    (b"[]", "object"),
    (b"", "object"),
    (json.dumps({"type": "offer"}).encode(), "sdp is missing"),
    (json.dumps({"sdp": "v=0\r\n"}).encode(), "type is missing"),
    (offer_json("v=0\r\n", extra=1), "unknown fields"),
    (json.dumps({"sdp": "v=0\r\n", "type": "answer"}).encode(), "type must be"),
    (json.dumps({"sdp": 5, "type": "offer"}).encode(), "sdp must be text"),
    (offer_json("v=0\r\n" + "a" * MAX_SDP), "sdp is"),
    (offer_json("o=- 1 1 IN IP4 0.0.0.0\r\n"), "sdp must start with 'v=0'"),
    (offer_json("v=0\r\ns=\x00\r\n"), "sdp has a character"),
    (offer_json("v=0\r\ns=caf\u00e9\r\n"), "sdp has a character"),
])
def test_parse_offer_refusals_name_the_field(body, field):
    with pytest.raises(BadRequest, match=field):
        parse_offer(body)


def test_parse_offer_gives_the_sdp_text():
    assert parse_offer(offer_json(OFFER)) == OFFER


def test_a_loopback_server_keeps_only_loopback_candidates():
    sdp = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
           "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
           "a=candidate:2 1 udp 2130706431 192.168.1.7 5000 typ host\r\n"
           "a=candidate:3 1 udp 2130706431 0b3c2f1e-4d2a.local 5000 typ host\r\n"
           "a=candidate:4 1 udp 2130706431 ::1 5001 typ host\r\n"
           "a=candidate:5 1 udp\r\n"
           "a=mid:0\r\n")
    kept = filter_candidates(sdp, loopback=True)
    assert "127.0.0.1 5000" in kept and "::1 5001" in kept and "a=mid:0\r\n" in kept
    assert "192.168" not in kept and ".local" not in kept and "candidate:5" not in kept
    assert filter_candidates(sdp, loopback=False) == sdp


def test_host_addresses_follow_the_bind_address(monkeypatch):
    assert host_addresses("127.0.0.1") == ["127.0.0.1"]
    assert host_addresses("localhost") == ["127.0.0.1"]
    assert host_addresses("[::1]") == ["::1"]
    assert host_addresses("192.0.2.5") == ["192.0.2.5"]
    assert host_addresses("0.0.0.0") is None and host_addresses("::") is None  # aioice's own list

    def no_dns(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("socket.getaddrinfo", no_dns)
    with pytest.raises(ConfigError, match="no-such-host"):
        host_addresses("no-such-host")


def test_default_bitrate_scales_with_pixels_and_fps():
    assert default_bitrate((1024, 1024), 30.0) == 3_000_000
    assert default_bitrate((512, 512), 30.0) == 750_000
    assert default_bitrate((32, 32), 30.0) == 250_000  # the floor
    assert default_bitrate((2048, 2048), 60.0) == 8_000_000  # the ceiling


def test_the_module_imports_without_aiortc_and_says_what_to_install():
    code = ("import sys\n"
            "for name in ('aiortc', 'aioice', 'av'): sys.modules[name] = None  # as if not installed\n"
            "from stylemotion.runtime.server import webrtc\n"
            "assert webrtc.parse_offer(b'{\"sdp\": \"v=0\", \"type\": \"offer\"}') == 'v=0'\n"
            "try:\n"
            "    webrtc.WebRTCOutput(host='127.0.0.1', loopback=True)\n"
            "except webrtc.StylemotionError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert MissingDependencyError.__name__ in out.stdout and "stylemotion[server]" in out.stdout, out.stdout


# -- aiortc viewers on loopback ---------------------------------------------------------------------------------

@pytest.fixture
def aiortc():
    pytest.importorskip("av", reason="PyAV is not installed (the server extra)")
    return pytest.importorskip("aiortc", reason="aiortc is not installed (the server extra)")


def frame(index: int) -> np.ndarray:
    """[48, 64, 3] uint8: left half red, right half blue, a grey bar moving down."""
    image = np.zeros((*SIZE, 3), np.uint8)
    image[:, :SIZE[1] // 2, 0] = 220
    image[:, SIZE[1] // 2:, 2] = 220
    row = index % SIZE[0]
    image[row:row + 2] = 128
    return image


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.02)


class Viewer:
    """An aiortc client on loopback receiving one stream; ``frames``: (width, height, left rgb, right rgb) of each
    decoded frame."""

    def __init__(self):
        import aiortc

        self.pc = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames: list = []
        self.task: asyncio.Task | None = None
        self.pc.on("track", lambda track: setattr(self, "task", asyncio.ensure_future(self._consume(track))))

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                decoded = await track.recv()
                rgb = decoded.to_ndarray(format="rgb24")
                half = rgb.shape[1] // 2
                self.frames.append((decoded.width, decoded.height, rgb[:, :half].mean(axis=(0, 1)),
                                    rgb[:, half:].mean(axis=(0, 1))))

    async def offer(self) -> bytes:
        from stylemotion.runtime.server.webrtc import offering_addresses

        with offering_addresses(["127.0.0.1"]):  # aioice alone would leave loopback out
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return offer_json(self.pc.localDescription.sdp)

    async def join(self, output, stream_id: str = "default") -> dict:
        import aiortc

        answer = await output.answer(stream_id, FPS, SIZE, await self.offer())
        await self.pc.setRemoteDescription(aiortc.RTCSessionDescription(**answer))
        return answer

    async def close(self) -> None:
        await self.pc.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def feeding(output, stream_id: str = "default"):
    """Publish ``frame(i)`` to ``output`` at FPS from a task, as the server's publisher does; yields a dict whose
    ``calls`` counts the publish calls."""
    count = {"calls": 0}

    async def run() -> None:
        index = 0
        while True:
            await output.publish(stream_id, frame(index), index)
            count["calls"] += 1
            index += 1
            await asyncio.sleep(1 / FPS)  # the stream's frame clock

    task = asyncio.get_running_loop().create_task(run())
    try:
        yield count
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


def candidates(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def test_two_viewers_share_one_encoder_and_close_leaves_nothing(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="127.0.0.1", loopback=True)
        a, b = Viewer(), Viewer()
        try:
            async with feeding(output) as fed:
                answer = await a.join(output)
                assert candidates(answer["sdp"]) and set(candidates(answer["sdp"])) == {"127.0.0.1"}, answer["sdp"]
                assert "VP8/90000" in answer["sdp"] and "H264" not in answer["sdp"]
                await b.join(output)
                assert output.viewers("default") == 2 and output.viewers("other") == 0
                await until(lambda: len(a.frames) >= 10 and len(b.frames) >= 10, "10 decoded frames per viewer")
                stats = output.stats()
                assert stats["encoders"] == 1 and stats["peers"] == 2 and stats["connected"] == 2, stats
                # One encode per published frame for both viewers (per-viewer encoders would make it ~2x).
                assert 0 < stats["frames_encoded"] <= stats["frames_published"] <= fed["calls"], (stats, fed)
                assert stats["keyframes"] >= 1 and stats["bytes_encoded"] > 0
                for viewer in (a, b):
                    width, height, left, right = viewer.frames[-1]
                    assert (width, height) == (SIZE[1], SIZE[0])
                    assert left[0] > 150 and left[2] < 80 and right[2] > 150 and right[0] < 80, (left, right)
                # A viewer's PLI/FIR (aiortc calls its sender's _send_keyframe) reaches the shared encoder.
                sender = next(iter(output._peers.values())).pc.getTransceivers()[0].sender
                requests, forced = stats["keyframe_requests"], output.stats()["keyframes_forced"]
                sender._send_keyframe()
                assert output.stats()["keyframe_requests"] == requests + 1
                await until(lambda: output.stats()["keyframes_forced"] > forced, "a keyframe forced by a PLI")
                with pytest.raises(ShapeError, match=r"\[48, 64, 3\] uint8"):
                    await output.publish("default", np.zeros((64, 48, 3), np.uint8), 10_000)
                await a.close()  # one viewer leaves: the server notices, the encoder stays for the other
                await until(lambda: output.viewers("default") == 1, "the server to notice a viewer leaving")
                assert output.stats()["encoders"] == 1
                seen = len(b.frames)
                await until(lambda: len(b.frames) >= seen + 5, "frames after the other viewer left")
            await output.close()
            stats = output.stats()
            assert stats["peers"] == 0 and stats["encoders"] == 0 and stats["streams"] == {}, stats
            await until(lambda: b.pc.connectionState in ("closed", "failed"), "the client to see the server close")
        finally:
            await a.close()
            await b.close()
            await output.close()

    asyncio.run(main())


def test_the_last_viewer_leaving_stops_the_encoder(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="localhost", loopback=True)
        viewer = Viewer()
        try:
            async with feeding(output, "s1"):
                await output.publish("s1", frame(0), 0)  # no viewer yet: nothing is encoded
                assert output.stats()["frames_published"] == 0 and output.stats()["encoders"] == 0
                await viewer.join(output, "s1")
                await until(lambda: len(viewer.frames) >= 3, "decoded frames")
                await viewer.close()
                await until(lambda: output.stats()["encoders"] == 0, "the encoder to stop with its last viewer")
                assert output.stats()["peers"] == 0 and output.viewers("s1") == 0
                encoded = output.stats()["frames_encoded"]
                await output.publish("s1", frame(10_000), 10_000)
                assert output.stats()["frames_encoded"] == encoded  # no viewer: publish is a no-op
        finally:
            await viewer.close()
            await output.close()

    asyncio.run(main())


def test_close_stream_ends_only_that_streams_viewers(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="127.0.0.1", loopback=True)
        a, b = Viewer(), Viewer()
        try:
            await a.join(output, "one")
            await b.join(output, "two")
            assert output.stats()["encoders"] == 2 and output.stats()["streams"] == {"one": 1, "two": 1}
            await output.close_stream("one")
            assert output.stats()["streams"] == {"two": 1} and output.stats()["encoders"] == 1
        finally:
            await a.close()
            await b.close()
            await output.close()
        assert output.stats()["peers"] == 0 and output.stats()["encoders"] == 0

    asyncio.run(main())


def test_the_address_hook_answers_only_inside_its_block(aiortc):
    import aioice.ice

    from stylemotion.runtime.server.webrtc import _install_address_hook, offering_addresses

    _install_address_hook()
    hook = aioice.ice.get_host_addresses
    _install_address_hook()  # idempotent: one hook, wrapping aioice's own function
    assert aioice.ice.get_host_addresses is hook and not getattr(hook.original, "stylemotion_hook", False)
    assert "127.0.0.1" not in hook(True, True)  # outside a block: aioice's own list (never loopback)
    with offering_addresses(["127.0.0.1", "::1"]):
        assert hook(True, False) == ["127.0.0.1"] and hook(True, True) == ["127.0.0.1", "::1"]
    assert "127.0.0.1" not in hook(True, True)


def test_a_wildcard_bind_offers_aioices_addresses(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="0.0.0.0", loopback=False)
        assert output.addresses is None
        try:
            answer = await output.answer("default", FPS, SIZE, offer_json(OFFER))
            assert "127.0.0.1" not in candidates(answer["sdp"])  # the machine's interfaces, as aioice lists them
        finally:
            await output.close()

    asyncio.run(main())


HOSTILE = {
    "garbled media line": "v=0\r\nm=video x y\r\n",
    "no media": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    "H264 only": None,  # made from OFFER below
    "sendonly video": None,
    "audio only": None,
    "truncated": None,
    "bad candidate": None,
    "bad rtpmap": None,
    "bad setup": None,
    "two video sections": None,
}


def _hostile(name: str) -> str:
    if HOSTILE[name] is not None:
        return HOSTILE[name]
    if name == "H264 only":
        return OFFER.replace("a=rtpmap:97 VP8/90000", "a=rtpmap:97 H263/90000")
    if name == "sendonly video":
        return OFFER.replace("a=recvonly", "a=sendonly")
    if name == "audio only":
        return OFFER.replace("m=video", "m=audio")
    if name == "truncated":
        return OFFER[:len(OFFER) // 2]
    if name == "bad candidate":
        return OFFER.replace("udp 2130706431 127.0.0.1", "udp xx 127.0.0.1")
    if name == "bad rtpmap":
        return OFFER.replace("a=rtpmap:97 VP8/90000", "a=rtpmap:97 VP8")
    if name == "bad setup":
        return OFFER.replace("a=setup:actpass", "a=setup:bogus")
    return OFFER + OFFER[OFFER.index("m=video"):]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_offers_are_bad_requests_and_leave_nothing(aiortc, name):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="127.0.0.1", loopback=True)
        try:
            with pytest.raises(BadRequest, match="sdp"):
                await output.answer("default", FPS, SIZE, offer_json(_hostile(name)))
            stats = output.stats()
            assert stats["refused_offers"] == 1 and stats["answered"] == 0, stats
            assert stats["peers"] == 0 and stats["encoders"] == 0, stats
        finally:
            await output.close()

    asyncio.run(main())


def test_capacity_and_configuration(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    with pytest.raises(ConfigError, match="loopback"):
        WebRTCOutput(host="0.0.0.0", loopback=True)
    with pytest.raises(ConfigError, match="max_peers"):
        WebRTCOutput(host="127.0.0.1", loopback=True, max_peers=0)

    async def main():
        output = WebRTCOutput(host="127.0.0.1", loopback=True, max_peers=1)
        a, b = Viewer(), Viewer()
        try:
            await a.join(output)
            with pytest.raises(CapacityError, match="at most 1"):
                await b.join(output)
            assert output.stats()["refused_capacity"] == 1 and output.stats()["peers"] == 1
        finally:
            await a.close()
            await b.close()
            await output.close()
        with pytest.raises(CapacityError, match="closed"):
            await output.answer("default", FPS, SIZE, offer_json(OFFER))

    asyncio.run(main())


def test_a_peer_that_never_connects_is_closed(aiortc):
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def main():
        output = WebRTCOutput(host="127.0.0.1", loopback=True, connect_timeout=0.5)
        try:  # OFFER's candidate is a port nobody listens on
            await output.answer("default", FPS, SIZE, offer_json(OFFER))
            assert output.stats()["peers"] == 1
            await until(lambda: output.stats()["peers"] == 0, "the unconnected peer to be closed", timeout=20)
            assert output.stats()["timed_out"] == 1 and output.stats()["encoders"] == 0
        finally:
            await output.close()

    asyncio.run(main())


# -- the page in a real browser -------------------------------------------------------------------------------

@contextlib.contextmanager
def page_server(output):
    """A small aiohttp app on a free loopback port: the real page and ``output`` fed frames, served three ways:
    ``/`` (WebRTC), ``/plain/`` (no webrtc route: the page falls back to MJPEG) and ``/auth/`` (every route
    answers 401 without the token ``sesame``). Yields ``(port, seen)``; ``seen``: ``mjpeg_open`` (MJPEG responses
    now streaming), ``tokens`` (the tokens that reached each route)."""
    from aiohttp import web

    from stylemotion.runtime.server.page import render_page

    seen = {"mjpeg_open": 0, "tokens": []}
    jpeg = _jpeg(frame(0))

    def authorised(request) -> bool:
        if not request.path.startswith("/auth/"):
            return True
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("token", "")
        seen["tokens"].append((request.path, sent))
        return sent == "sesame"

    async def page(request):
        return web.Response(text=render_page(["happy", "sad"], False), content_type="text/html")

    async def offer(request):
        if not authorised(request):
            raise web.HTTPUnauthorized(text="token needed")
        try:
            return web.json_response(await output.answer("default", FPS, SIZE, await request.read()))
        except BadRequest as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None

    async def mjpeg(request):
        if not authorised(request):
            raise web.HTTPUnauthorized(text="token needed")
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=f"})
        await response.prepare(request)
        seen["mjpeg_open"] += 1
        try:
            while request.transport is not None and not request.transport.is_closing():
                await response.write(b"--f\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.sleep(0.2)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            seen["mjpeg_open"] -= 1
        return response

    async def stats(request):
        if not authorised(request):
            raise web.HTTPUnauthorized(text="token needed")
        raise web.HTTPNotFound(text="no stats in this test")

    app = web.Application()
    for prefix in ("", "/plain", "/auth"):
        app.router.add_get(prefix + "/", page)
        app.router.add_get(prefix + "/stream.mjpg", mjpeg)
        app.router.add_get(prefix + "/stats", stats)
        if prefix != "/plain":
            app.router.add_post(prefix + "/webrtc", offer)

    feeder = web.AppKey("feeder", asyncio.Task)

    async def publish_frames(app):
        async def run():
            index = 0
            while True:
                await output.publish("default", frame(index), index)
                index += 1
                await asyncio.sleep(1 / FPS)

        app[feeder] = asyncio.get_running_loop().create_task(run())

    async def stop(app):
        app[feeder].cancel()
        await output.close()

    app.on_startup.append(publish_frames)
    app.on_cleanup.append(stop)
    with serving_app(app) as (port, loop):
        yield port, seen, loop


def _jpeg(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.slow
def test_the_page_plays_webrtc_and_falls_back_to_mjpeg(aiortc):
    pytest.importorskip("aiohttp")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from stylemotion.runtime.server.webrtc import WebRTCOutput

    options, driver = chromium_webrtc_options(webdriver)
    output = WebRTCOutput(host="127.0.0.1", loopback=True)

    def on_loop(loop, fn):  # read the output's state on its own event loop
        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    with page_server(output) as (port, seen, loop):
        browser = webdriver.Chrome(service=Service(driver), options=options)
        browser.set_script_timeout(15)
        try:
            wait = WebDriverWait(browser, 30)
            transport = lambda b: b.find_element("id", "transport").text  # noqa: E731
            browser.get(f"http://127.0.0.1:{port}/")
            wait.until(lambda b: transport(b) == "webrtc")
            counted = browser.execute_async_script(COUNT_VIDEO_FRAMES_JS)
            assert counted["frames"] >= 5 and (counted["width"], counted["height"]) == (SIZE[1], SIZE[0]), counted
            wait.until(lambda b: seen["mjpeg_open"] == 0)  # the image's MJPEG stream stopped
            stats = on_loop(loop, output.stats)
            assert stats["connected"] == 1 and stats["encoders"] == 1, stats

            browser.get(f"http://127.0.0.1:{port}/plain/")  # no webrtc route: 404, the page shows MJPEG
            wait.until(lambda b: transport(b) == "mjpeg" and "404" in b.find_element("id", "transport-why").text)
            wait.until(lambda b: b.execute_script("const i = document.getElementById('face');"
                                                  "return i.complete && i.naturalWidth > 0;"))
            wait.until(lambda b: on_loop(loop, output.stats)["peers"] == 0)  # the first page's viewer left

            browser.get(f"http://127.0.0.1:{port}/auth/")  # 401: the page asks once for the token
            prompt = WebDriverWait(browser, 30).until(expected_conditions.alert_is_present())
            prompt.send_keys("sesame")
            prompt.accept()
            wait.until(lambda b: transport(b) == "webrtc")
            assert browser.execute_script("return sessionStorage.getItem('stylemotion-token')") == "sesame"
            assert ("/auth/webrtc", "sesame") in seen["tokens"]
            assert ("/auth/stream.mjpg", "sesame") in seen["tokens"]  # ?token= on the image
        finally:
            browser.quit()
    assert output.stats()["peers"] == 0 and output.stats()["encoders"] == 0
