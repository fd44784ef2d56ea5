"""Fuzz the WebRTC offer a viewer POSTs: random bytes, random JSON and mutated real offers (aiortc's and
Chromium's: lines dropped, duplicated, swapped, garbled, numbers pushed to extremes) through ``parse_offer`` and
through the whole ``WebRTCOutput.answer`` path, where aiortc parses and negotiates. Each must succeed or raise a
StylemotionError (BadRequest), never anything else, and leave no peer connection or encoder open."""
from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.offers import AIORTC_OFFER

from .harness import FUZZ, check, mutated

# Chromium 156's offer for addTransceiver("video", {direction: "recvonly"}), its codec list shortened and its
# candidates edited: one on loopback, one on another address, one mDNS name.
CHROMIUM_OFFER = (
    "v=0\r\no=- 820371994655281978 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=extmap-allow-mixed\r\n"
    "a=msid-semantic: WMS\r\nm=video 42452 UDP/TLS/RTP/SAVPF 96 97 102 103 45\r\nc=IN IP4 192.0.2.2\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:2467869967 1 udp 2113937151 127.0.0.1 42452 typ host generation 0 network-cost 999\r\n"
    "a=candidate:1484682479 1 udp 2113942271 fd00::2 38966 typ host generation 0 network-cost 999\r\n"
    "a=candidate:3 1 udp 2113937151 4a1e9f0c-3b7d-4b4e-9d1c-2f0e6c1d9a7b.local 42453 typ host generation 0\r\n"
    "a=ice-ufrag:6HM6\r\na=ice-pwd:0IwJHCyTuIq7IYbLKyYBIkIh\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 75:05:E7:73:D6:72:21:45:E6:A7:EA:A2:32:45:95:FD:F9:2F:EC:AE:D0:DE:09:A0:66:A3:BB:52:02:"
    "53:DE:B9\r\na=setup:actpass\r\na=mid:0\r\n"
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
    "a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
    "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"
    "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 ccm fir\r\n"
    "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    "a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n"
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n"
    "a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:45 AV1/90000\r\n"
    "a=fmtp:45 level-idx=5;profile=0;tier=0\r\n")

OFFERS = (AIORTC_OFFER, CHROMIUM_OFFER)
_NUMBER = re.compile(r"\d+")
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12)
_garble = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)
                  | st.sampled_from(["\r", "\n", "\x00", "\u00e9"]), max_size=40)
_extreme = st.sampled_from(["0", "-1", "65536", "4294967296", "99999999999999999999999", "", "x", "1.5"])


@st.composite
def mutated_sdp(draw) -> str:
    """A real offer with 1-5 line edits."""
    lines = draw(st.sampled_from(OFFERS)).split("\r\n")
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["drop", "duplicate", "swap", "garble", "number", "truncate"]))
        if kind == "drop" and len(lines) > 1:
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "garble":
            line = lines[at]
            start = draw(st.integers(0, len(line)))
            lines[at] = line[:start] + draw(_garble) + line[start + draw(st.integers(0, 8)):]
        elif kind == "number" and _NUMBER.search(lines[at]):
            spans = [m.span() for m in _NUMBER.finditer(lines[at])]
            lo, hi = draw(st.sampled_from(spans))
            lines[at] = lines[at][:lo] + draw(_extreme) + lines[at][hi:]
        else:
            lines[at] = lines[at][:draw(st.integers(0, len(lines[at])))]
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines)


@st.composite
def offer_body(draw, *, mostly_offers: bool = False) -> bytes:
    kinds = ["offer", "offer", "offer", "bytes", "json", "body"] if mostly_offers else ["bytes", "json", "offer",
                                                                                        "body"]
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "json":
        fields = draw(st.dictionaries(st.sampled_from(["sdp", "type", "x"]), _json | st.just("offer"), max_size=3))
        return json.dumps(draw(st.sampled_from([fields, draw(_json)]))).encode()
    body = json.dumps({"sdp": draw(mutated_sdp()), "type": "offer"}).encode()
    if kind == "body":  # byte edits of the JSON body itself
        body = draw(mutated(body))
    return body


@FUZZ
@given(body=offer_body())
def test_offer_bodies(body):
    from stylemotion.runtime.server.webrtc import parse_offer

    # An offer has no file name; its errors name the field (sdp, type) or say the body is not JSON.
    check("sdp:parse", lambda: parse_offer(body), "")


@FUZZ
@given(body=offer_body(mostly_offers=True))
def test_offer_answers(body):
    pytest.importorskip("aiortc", reason="aiortc is not installed (the server extra)")
    from stylemotion.runtime.server.webrtc import WebRTCOutput

    async def answer() -> None:
        output = WebRTCOutput(host="127.0.0.1", loopback=True)
        try:
            reply = await output.answer("default", 15.0, (32, 32), body)
            assert reply["type"] == "answer" and reply["sdp"].startswith("v=0")
        finally:
            await output.close()
            stats = output.stats()
            assert stats["peers"] == 0 and stats["encoders"] == 0, stats

    check("sdp:answer", lambda: asyncio.run(answer()), "")
