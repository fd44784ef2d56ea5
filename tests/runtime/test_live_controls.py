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
