"""Fuzz the OSC receiver (``stylemotion serve --osc``): random bytes, messages python-osc builds with random
addresses and arguments, bundles nested past the cap, and garbled encodings of them, fed to the protocol's
``datagram_received`` directly (no socket). Each datagram must be applied or counted as refused, the counters must
add up, and nothing may raise, not even a typed error: UDP has nobody to answer."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import FUZZ, check, mutated

pytest.importorskip("pythonosc")

EMOTIONS = ["happy", "sad", "neutral"]
FIELDS = ["emotion", "intensity", "speed", "transition", "temperature", "identity", "lstm", "pause", "mood", ""]
SOURCES = [("127.0.0.1", 9000), ("::1", 9000, 0, 0), ("::ffff:10.0.0.7", 1, 0, 0), ("10.0.0.5", 1234),
           ("10.0.1.5", 1234), ("fe80::1%lo", 1, 0, 1)]
_text = st.text(st.characters(blacklist_characters="\x00", max_codepoint=0x2FF), max_size=12)

_address = st.one_of(
    st.builds("/stylemotion/{}/{}".format, st.sampled_from(["default", "s1", "nobody", "*", "", "default/x"]),
              st.sampled_from(FIELDS)),
    _text.map("/{}".format),
)
# (value, OSC type tag or None to let python-osc choose: T/F for bools, i/h for ints, f for floats, [ ] for lists)
_arg = st.one_of(
    st.tuples(st.integers(-2 ** 31, 2 ** 31 - 1), st.just("i")),
    st.tuples(st.integers(-2 ** 63, 2 ** 63 - 1), st.just("h")),
    st.tuples(st.floats(width=32), st.just("f")),
    st.tuples(st.floats(), st.just("d")),
    st.tuples(_text | st.sampled_from(EMOTIONS + ["SAD", "angry", "grumpy"]), st.just("s")),
    st.tuples(st.binary(min_size=1, max_size=16), st.just("b")),
    st.tuples(st.booleans() | st.sampled_from([0, 1, 2, -1, 0.0, 1.0, 0.5]), st.none()),
    st.tuples(st.none(), st.just("N")),
    st.tuples(st.lists(st.integers(0, 3) | st.floats(width=32), max_size=2), st.none()),
)


@st.composite
def message(draw, address=_address) -> bytes:
    """A well-formed OSC message (usually one argument, sometimes none or several)."""
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(draw(address))
    for value, tag in draw(st.lists(_arg, min_size=1, max_size=1) | st.lists(_arg, max_size=3)):
        builder.add_arg(value, tag)
    return builder.build().dgram


def _frame(contents: list[bytes]) -> bytes:
    """A bundle (time tag: immediately) of messages' or bundles' bytes."""
    return b"#bundle\x00" + struct.pack(">Q", 1) + b"".join(struct.pack(">i", len(c)) + c for c in contents)


_bundle = st.recursive(message(), lambda inner: st.lists(inner, max_size=4).map(_frame), max_leaves=24)


def datagram() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=256),
        message(),
        _bundle,
        st.one_of(message(), _bundle).flatmap(lambda base: mutated(base, head=24)),
        st.integers(1, 8).map(lambda depth: _nested(depth)),  # around the depth cap
        st.sampled_from([b"", b"#bundle\x00", b"/" + b"a" * 70_000]),
    )


def _nested(depth: int) -> bytes:
    data = b"/stylemotion/default/speed\x00\x00,f\x00\x00\x3f\x80\x00\x00"  # speed 1.0
    for _ in range(depth):
        data = _frame([data])
    return data


def feed(data: bytes, source: tuple, *, has_lstm: bool) -> None:
    """One datagram into a fresh receiver; checks the accounting and what reached ``apply``."""
    from stylemotion.runtime.server.messages import check_control
    from stylemotion.runtime.server.osc import REASONS, OscControl, parse_allow

    calls = []

    def apply(stream_id: str, changes: dict) -> int:
        if stream_id not in ("default", "s1"):
            raise KeyError(stream_id)
        calls.append((stream_id, changes))
        return len(calls)

    osc = OscControl(apply, allow=parse_allow("10.0.0.0/24"), emotions=EMOTIONS, has_lstm=has_lstm)
    try:
        osc.datagram_received(data, source)
    except Exception as exc:  # a typed error too: datagram_received must never raise
        raise AssertionError(f"datagram_received raised {type(exc).__name__}: {exc}") from exc
    c = osc.counters
    assert c["osc_datagrams"] == 1
    assert c["osc_received"] == c["osc_applied"] + c["osc_refused"]
    assert c["osc_refused"] == sum(c[f"osc_refused_{reason}"] for reason in REASONS)
    assert c["osc_refused_error"] == 0, "an unexpected exception inside the receiver (see the log)"
    assert c["osc_received"] >= 1 or data.startswith(b"#bundle\x00")  # only a bundle may hold nothing
    assert c["osc_applied"] == len(calls)
    for _, changes in calls:  # what reached the stream is exactly one checked control field
        assert len(changes) == 1 and check_control(changes, emotions=EMOTIONS, has_lstm=has_lstm) == changes


@FUZZ
@given(data=datagram(), source=st.sampled_from(SOURCES), has_lstm=st.booleans())
def test_osc_datagrams(data, source, has_lstm):
    check("osc", lambda: feed(data, source, has_lstm=has_lstm), "")


@FUZZ
@given(data=message(st.builds("/stylemotion/{}/{}".format, st.sampled_from(["default", "s1", "nobody"]),
                              st.sampled_from(FIELDS))),
       has_lstm=st.booleans())
def test_osc_controls(data, has_lstm):
    # Well-formed messages to real addresses: the conversions and check_control, rather than the framing.
    check("osc-controls", lambda: feed(data, ("127.0.0.1", 9000), has_lstm=has_lstm), "")
