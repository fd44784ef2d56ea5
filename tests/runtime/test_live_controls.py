"""The live outputs and controls end to end, through a running server: OSC over UDP steers the stream that ``/stats``
reports, and (when Debian's chromium is here) a real browser receives the stream over WebRTC."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("aiohttp")

from stylemotion.runtime.server import ServerConfig, build_server  # noqa: E402

from .serving import request, running, stats  # noqa: E402

FPS = 12.0


def test_osc_steers_the_stream_that_stats_reports_within_half_a_second(G, dirs):
    udp = pytest.importorskip("pythonosc.udp_client")
    config = ServerConfig(port=0, fps=FPS, osc=("127.0.0.1", 0)).validate()
    server = build_server(G, directions=dirs, config=config, backend="torch")
    with running(server) as port:
        deadline = time.monotonic() + 30
        while stats(port)["frames"] < 2:  # the stream runs
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client = udp.SimpleUDPClient(*server.osc_address)
        for emotion in ("sad", "happy"):
            sent = time.monotonic()
            client.send_message("/stylemotion/default/emotion", emotion)
            while stats(port)["emotion"] != emotion:
                assert time.monotonic() - sent < 0.5, f"/stats shows {emotion} within 0.5 s of the OSC message"
                time.sleep(0.01)
        client.send_message("/stylemotion/default/intensity", 99.0)  # out of range: refused, counted
        client.send_message("/stylemotion/nope/emotion", "sad")  # no such stream
        client._sock.sendto(b"\x00garbage", server.osc_address)  # not OSC
        deadline = time.monotonic() + 5
        while stats(port)["server"]["osc_refused"] < 3:
            assert time.monotonic() < deadline, stats(port)["server"]
            time.sleep(0.02)
        counters = stats(port)["server"]
        assert counters["osc_applied"] == 2 and counters["osc_received"] == 5
        assert request(port, "GET", "/stats")[0] == 200  # the server is unharmed


def test_the_page_plays_webrtc_in_a_real_browser_and_osc_steers_it(G, dirs):
    """Headless Chromium opens the page over loopback, negotiates WebRTC with the server and counts the video's
    frames (requestVideoFrameCallback): at least 30 in 3 s, at the stream's size; the encoder is the stream's one;
    then OSC changes the emotion the page's stream shows; closing the browser leaves no peer connection."""
    webdriver = pytest.importorskip("selenium.webdriver")
    pytest.importorskip("aiortc")
    udp = pytest.importorskip("pythonosc.udp_client")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from .test_webrtc import COUNT_VIDEO_FRAMES_JS, chromium_webrtc_options

    options, driver_bin = chromium_webrtc_options(webdriver)
    config = ServerConfig(port=0, fps=20.0, webrtc=True, osc=("127.0.0.1", 0)).validate()
    server = build_server(G, directions=dirs, config=config, backend="torch")
    with running(server) as port:
        browser = webdriver.Chrome(service=Service(driver_bin), options=options)
        try:
            browser.set_script_timeout(30)
            browser.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(browser, 30).until(
                lambda b: b.find_element("id", "transport").text == "webrtc")
            counted = browser.execute_async_script(COUNT_VIDEO_FRAMES_JS)
            assert counted["frames"] >= 30, counted
            assert (counted["width"], counted["height"]) == (G.img_resolution, G.img_resolution)
            rtc = stats(port)["webrtc"]
            assert rtc["encoders"] == 1 and rtc["peers"] == 1 and rtc["frames_encoded"] >= 30
            assert stats(port)["viewers"] == 0, "the page left MJPEG once WebRTC played"
            client = udp.SimpleUDPClient(*server.osc_address)
            client.send_message("/stylemotion/default/emotion", "surprise")
            WebDriverWait(browser, 5).until(lambda b: "surprise" in b.find_element("id", "stats").text)
            browser.get("about:blank")  # the page unloads: its peer connection closes
        finally:
            browser.quit()
        deadline = time.monotonic() + 10  # the page closed its connection on leaving: freed at once, not in 30 s
        while stats(port)["webrtc"]["peers"] or stats(port)["webrtc"]["encoders"]:
            assert time.monotonic() < deadline, stats(port)["webrtc"]
            time.sleep(0.1)
