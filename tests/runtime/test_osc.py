"""OSC control: valid messages apply the right control fields over a real UDP socket, every kind of bad datagram
is refused and counted with its reason (never raised), sources are filtered, refusals are logged at a bounded
rate, and ``--osc`` / ``--osc-allow`` values are parsed with errors naming the value. The end-to-end check against
a running server (a control over OSC changes the emotion ``/stats`` reports) belongs with the server's tests."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import struct
import time

import pytest

pytest.importorskip("pythonosc")

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402
from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from stylemotion.errors import ConfigError, MissingDependencyError  # noqa: E402
from stylemotion.runtime.server.messages import BadRequest, check_control, parse_control  # noqa: E402
from stylemotion.runtime.server.osc import (  # noqa: E402
    MAX_DEPTH, MAX_MESSAGES, REASONS, OscControl, is_allowed, parse_allow, parse_osc_address)

EMOTIONS = ["happy", "sad", "neutral"]


class Recorder:
    """A server's ``apply``: records ``(stream_id, changes)``; KeyError for a stream it does not have."""

    def __init__(self, streams=("default", "s1")):
        self.streams, self.calls = set(streams), []

    def __call__(self, stream_id: str, changes: dict) -> int:
        if stream_id not in self.streams:
            raise KeyError(stream_id)
        self.calls.append((stream_id, changes))
        return len(self.calls)


def message(address: str, *args) -> bytes:
    """An OSC message's bytes; an argument may be ``(value, type tag)`` to choose its OSC type."""
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, tuple):
            builder.add_arg(*arg)
        else:
            builder.add_arg(arg)
    return builder.build().dgram


def bundle(*contents: bytes) -> bytes:
    """A bundle (time tag: immediately) of messages' or bundles' bytes, framed by hand so that any nesting works."""
    out = b"#bundle\x00" + struct.pack(">Q", IMMEDIATELY)
    return out + b"".join(struct.pack(">i", len(c)) + c for c in contents)


def make(**kw) -> tuple[OscControl, Recorder]:
    apply = kw.pop("apply", None) or Recorder()
    kw.setdefault("emotions", EMOTIONS)
    kw.setdefault("has_lstm", True)
    return OscControl(apply, **kw), apply


def refusals(osc: OscControl) -> dict[str, int]:
    """The non-zero per-reason refusal counts, checking that the counters add up."""
    c = osc.counters
    by_reason = {r: c[f"osc_refused_{r}"] for r in REASONS}
    assert c["osc_received"] == c["osc_applied"] + c["osc_refused"]
    assert c["osc_refused"] == sum(by_reason.values())
    return {r: n for r, n in by_reason.items() if n}


async def until(condition, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` with a deadline (polling the loop, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def listening(**kw):
    osc, apply = make(**kw)
    host, port = await osc.start("127.0.0.1", 0)
    try:
        yield osc, apply, port
    finally:
        osc.close()


# -- over a real socket ----------------------------------------------------------------------------------------


def test_valid_messages_apply_the_fields_they_name():
    sent = [("/stylemotion/default/emotion", "SAD", {"emotion": "sad"}),
            ("/stylemotion/default/intensity", 3, {"intensity": 3.0}),
            ("/stylemotion/s1/intensity", -2.5, {"intensity": -2.5}),
            ("/stylemotion/default/speed", 0.5, {"speed": 0.5}),
            ("/stylemotion/default/transition", 2, {"transition": 2.0}),
            ("/stylemotion/default/temperature", 1.25, {"temperature": 1.25}),
            ("/stylemotion/default/identity", 7, {"seed": 7}),
            ("/stylemotion/default/identity", 9.0, {"seed": 9}),  # Max/MSP and TouchOSC send floats
            ("/stylemotion/default/lstm", 1, {"follow_lstm": True}),
            ("/stylemotion/default/lstm", 0.0, {"follow_lstm": False}),
            ("/stylemotion/default/lstm", True, {"follow_lstm": True}),  # T
            ("/stylemotion/s1/pause", False, {"pause": False})]  # F

    async def main():
        async with listening() as (osc, apply, port):
            client = SimpleUDPClient("127.0.0.1", port)
            for address, value, _ in sent:
                client.send_message(address, value)
            await until(lambda: osc.counters["osc_received"] == len(sent))
            return osc, apply

    osc, apply = asyncio.run(main())
    assert refusals(osc) == {}
    assert osc.counters["osc_applied"] == osc.counters["osc_datagrams"] == len(sent)
    assert apply.calls == [(address.split("/")[2], changes) for address, _, changes in sent]


def test_bad_datagrams_over_the_socket_are_counted_and_the_receiver_goes_on():
    bad = [b"\x00\x01garbage", b"/stylemotion/default/emotion\x00\x00\x00\x00,s\x00\x00",  # the string is cut off
           message("/stylemotion/default/emotion", "grumpy"), message("/stylemotion/nobody/emotion", "sad")]

    async def main():
        async with listening() as (osc, apply, port):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for data in bad:
                    sock.sendto(data, ("127.0.0.1", port))
                sock.sendto(message("/stylemotion/default/emotion", "happy"), ("127.0.0.1", port))
            await until(lambda: osc.counters["osc_received"] == len(bad) + 1)
            return osc, apply

    osc, apply = asyncio.run(main())
    assert refusals(osc) == {"malformed": 2, "value": 1, "stream": 1}
    assert apply.calls == [("default", {"emotion": "happy"})]


def test_start_returns_the_bound_address_and_close_is_idempotent():
    async def main():
        osc, _ = make()
        host, port = await osc.start("127.0.0.1", 0)
        assert host == "127.0.0.1" and 0 < port < 65536 and osc.address == (host, port)
        with pytest.raises(ConfigError, match="listening on"):
            await osc.start("127.0.0.1", 0)
        other, _ = make()
        with pytest.raises(ConfigError, match=f"cannot listen for OSC on 127.0.0.1:{port}"):
            await other.start("127.0.0.1", port)  # in use
        osc.close()
        osc.close()
        again = await osc.start("127.0.0.1", 0)  # a closed receiver can listen again
        osc.close()
        return again

    assert asyncio.run(main())[1] > 0


def test_a_receiver_on_all_interfaces_without_an_allow_list_warns(caplog):
    async def main():
        osc, _ = make()
        await osc.start("0.0.0.0", 0)
        osc.close()

    with caplog.at_level(logging.WARNING, logger="stylemotion.runtime.server.osc"):
        asyncio.run(main())
    assert "only from loopback" in caplog.text and "--osc-allow" in caplog.text


# -- each kind of refusal (fed to the protocol directly) -------------------------------------------------------


def _nested(depth: int) -> bytes:
    data = message("/stylemotion/default/speed", 2.0)
    for _ in range(depth):
        data = bundle(data)
    return data


_EMOTION = message("/stylemotion/default/emotion", "sad")
BAD = {
    # unknown addresses
    "no prefix": (message("/other/default/emotion", "sad"), "address", "unknown address '/other/default/emotion'"),
    "no stream": (message("/stylemotion/emotion", "sad"), "address", "known: /stylemotion/<stream>/"),
    "empty stream": (message("/stylemotion//emotion", "sad"), "address", "unknown address"),
    "unknown field": (message("/stylemotion/default/mood", "sad"), "address", "'/stylemotion/default/mood'"),
    "too deep": (message("/stylemotion/default/emotion/x", "sad"), "address", "unknown address"),
    # arity and types
    "no argument": (message("/stylemotion/default/emotion"), "arguments", "exactly one argument, got 0"),
    "two arguments": (message("/stylemotion/default/intensity", 1.0, 2.0), "arguments", "got 2"),
    "text for a number": (message("/stylemotion/default/intensity", "3"), "arguments", "takes an int or a float"),
    "bool for a number": (message("/stylemotion/default/speed", True), "arguments", "got bool True"),
    "blob for a number": (message("/stylemotion/default/speed", b"\x01\x02"), "arguments", "got bytes"),
    "nil for a number": (message("/stylemotion/default/speed", None), "arguments", "got NoneType"),
    "array": (message("/stylemotion/default/speed", [1.0]), "arguments", "got list"),
    "number for an emotion": (message("/stylemotion/default/emotion", 3), "arguments", "takes a string"),
    "fraction for an identity": (message("/stylemotion/default/identity", 1.5), "arguments", "an int"),
    "nan for an identity": (message("/stylemotion/default/identity", (float("nan"), "d")), "arguments", "nan"),
    "text for a flag": (message("/stylemotion/default/lstm", "1"), "arguments", "0 or 1"),
    # values
    "intensity out of range": (message("/stylemotion/default/intensity", 99), "value",
                               re.escape("intensity must be a finite number in [-30, 30], got 99")),
    "nan intensity": (message("/stylemotion/default/intensity", float("nan")), "value", "got nan"),
    "infinite speed": (message("/stylemotion/default/speed", (float("inf"), "d")), "value", "got inf"),
    "zero speed": (message("/stylemotion/default/speed", 0), "value", "speed must be"),
    "unknown emotion": (message("/stylemotion/default/emotion", "grumpy"), "value", "'grumpy' is not one of"),
    "emotion without a direction": (message("/stylemotion/default/emotion", "angry"), "value",
                                    "'angry' has no direction here"),
    "negative identity": (message("/stylemotion/default/identity", -1), "value", "seed must be an integer"),
    "identity past 2**32": (message("/stylemotion/default/identity", (2 ** 40, "h")), "value", "2\\*\\*32"),
    "flag of 2": (message("/stylemotion/default/lstm", 2), "value", "takes 0 or 1"),
    "flag of 0.5": (message("/stylemotion/default/pause", 0.5), "value", "takes 0 or 1"),
    # streams
    "unknown stream": (message("/stylemotion/nobody/emotion", "sad"), "stream", "no stream 'nobody'"),
    "a pattern for a stream": (message("/stylemotion/*/emotion", "sad"), "stream", "no stream"),
    # bytes that are not OSC
    "empty datagram": (b"", "malformed", "not an OSC message or bundle"),
    "random bytes": (b"\x9f\x00\xffabc", "malformed", "not an OSC message or bundle"),
    "unterminated address": (b"/stylemotion", "malformed", "not a readable OSC message"),
    "cut-off argument": (_EMOTION[:-4], "malformed", "not a readable OSC message"),
    "type tags without a comma": (b"/a\x00\x00s\x00\x00\x00", "malformed", "do not start with ','"),
    "unsupported type tag": (b"/stylemotion/default/speed\x00\x00,x\x00\x00", "malformed", "unsupported"),
    "address not UTF-8": (b"/\xff\xfe\x00,f\x00\x00\x00\x00\x00\x00", "malformed", "UnicodeDecodeError"),
    "unbalanced array": (b"/a\x00\x00,[f\x00\x00\x00\x00\x00", "malformed", "not a readable OSC message"),
    "bundle without a time tag": (b"#bundle\x00\x00\x00", "malformed", "no time tag"),
    "negative element size": (bundle(_EMOTION)[:16] + struct.pack(">i", -4) + _EMOTION, "malformed",
                              "element of -4 bytes"),  # python-osc's own parser loops forever on this one
    "element past the end": (bundle(_EMOTION)[:-4], "malformed", "within the"),
    "element size not a multiple of 4": (bundle(_EMOTION)[:16] + struct.pack(">i", 3) + _EMOTION, "malformed",
                                         "multiple of 4"),
    "element cut in its size": (bundle(_EMOTION) + b"\x00\x00", "malformed", "size is cut off"),
    "element neither": (bundle(b"xxxx"), "malformed", "not an OSC message or bundle"),
    "a good message then garbage": (bundle(_EMOTION, b"\x00" * 8), "malformed", "not an OSC message"),
    # caps
    "nested too deep": (_nested(MAX_DEPTH + 1), "bundle_limit", f"nested more than {MAX_DEPTH} deep"),
    "too many messages": (bundle(*[_EMOTION] * (MAX_MESSAGES + 1)), "bundle_limit",
                          f"more than {MAX_MESSAGES} messages"),
    "too many across bundles": (bundle(*[bundle(*[_EMOTION] * 8)] * (MAX_MESSAGES // 8 + 1)), "bundle_limit",
                                "messages in one datagram"),
    "too large": (message("/stylemotion/default/emotion", "x" * (64 * 1024)), "too_large", "at most 65536"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_datagram_is_refused_with_its_reason(case, caplog):
    data, reason, detail = BAD[case]
    osc, apply = make(emotions=EMOTIONS)
    with caplog.at_level(logging.WARNING, logger="stylemotion.runtime.server.osc"):
        osc.datagram_received(data, ("127.0.0.1", 4000))
    assert apply.calls == []
    assert refusals(osc) == {reason: 1}
    assert osc.counters["osc_received"] == 1 and osc.counters["osc_datagrams"] == 1
    assert re.search(detail, caplog.text), caplog.text
    assert f"refused ({reason})" in caplog.text and "127.0.0.1:4000" in caplog.text


def test_every_reason_is_exercised():
    assert {reason for _, reason, _ in BAD.values()} | {"source", "error"} == set(REASONS)


def test_lstm_needs_a_server_with_an_lstm_and_zero_is_harmless():
    osc, apply = make(has_lstm=False)
    osc.datagram_received(message("/stylemotion/default/lstm", 1), ("127.0.0.1", 1))
    osc.datagram_received(message("/stylemotion/default/lstm", 0), ("127.0.0.1", 1))
    assert refusals(osc) == {"value": 1}  # as POST /control: only follow_lstm true is refused
    assert apply.calls == [("default", {"follow_lstm": False})]


def test_any_emotion_when_the_server_does_not_list_them():
    osc, apply = make(emotions=None)
    osc.datagram_received(message("/stylemotion/default/emotion", "Angry"), ("127.0.0.1", 1))
    assert apply.calls == [("default", {"emotion": "angry"})]


def test_a_bundle_applies_each_message_in_order_and_counts_the_bad_ones():
    data = bundle(message("/stylemotion/default/emotion", "sad"), message("/stylemotion/default/intensity", 99),
                  bundle(message("/stylemotion/s1/speed", 2), message("/nope", 1),
                         bundle(message("/stylemotion/default/intensity", 4.0))),
                  message("/stylemotion/gone/emotion", "happy"))
    osc, apply = make()
    osc.datagram_received(data, ("127.0.0.1", 1))
    assert apply.calls == [("default", {"emotion": "sad"}), ("s1", {"speed": 2.0}), ("default", {"intensity": 4.0})]
    assert refusals(osc) == {"value": 1, "address": 1, "stream": 1}
    assert osc.counters["osc_received"] == 6 and osc.counters["osc_datagrams"] == 1


def test_bundles_built_by_python_osc_are_read():
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessageBuilder("/stylemotion/default/speed").build())  # no argument: refused
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(OscMessageBuilder("/stylemotion/default/emotion").build())
    builder = OscMessageBuilder("/stylemotion/default/emotion")
    builder.add_arg("happy")
    outer.add_content(builder.build())
    outer.add_content(inner.build())
    osc, apply = make()
    osc.datagram_received(outer.build().dgram, ("127.0.0.1", 1))
    assert apply.calls == [("default", {"emotion": "happy"})]
    assert refusals(osc) == {"arguments": 2}


def test_an_empty_bundle_is_valid_and_holds_nothing():
    osc, apply = make()
    osc.datagram_received(bundle(), ("127.0.0.1", 1))
    assert osc.counters["osc_datagrams"] == 1 and osc.counters["osc_received"] == 0 and apply.calls == []


def test_the_caps_can_be_set():
    osc, apply = make(max_depth=0, max_messages=2, max_datagram=200)
    osc.datagram_received(bundle(_EMOTION), ("127.0.0.1", 1))  # no bundles at all
    osc.datagram_received(_EMOTION, ("127.0.0.1", 1))  # a plain message still is
    osc.datagram_received(b"/" + b"a" * 300, ("127.0.0.1", 1))
    assert refusals(osc) == {"bundle_limit": 1, "too_large": 1} and len(apply.calls) == 1
    for name in ("max_datagram", "max_messages"):
        with pytest.raises(ConfigError, match=f"{name} must be an integer >= 1, got 0"):
            make(**{name: 0})
    with pytest.raises(ConfigError, match="max_depth must be an integer >= 0, got -1"):
        make(max_depth=-1)


def test_refusals_by_the_stream_are_counted():
    def refusing(stream_id, changes):
        raise BadRequest("this stream has no directions; emotions cannot be controlled")

    def config_error(stream_id, changes):
        raise ConfigError("seed 5 cannot be used here")

    for apply in (refusing, config_error):
        osc, _ = make(apply=apply)
        osc.datagram_received(_EMOTION, ("127.0.0.1", 1))
        assert refusals(osc) == {"value": 1}


def test_a_failing_apply_is_logged_with_its_traceback_and_never_raised(caplog):
    def broken(stream_id, changes):
        raise RuntimeError("a bug in the server")

    osc, _ = make(apply=broken)
    with caplog.at_level(logging.WARNING, logger="stylemotion.runtime.server.osc"):
        osc.datagram_received(bundle(_EMOTION, _EMOTION), ("127.0.0.1", 1))
    assert refusals(osc) == {"error": 2}
    assert "RuntimeError: a bug in the server" in caplog.text and "Traceback" in caplog.text


# -- sources ---------------------------------------------------------------------------------------------------


def test_only_loopback_and_allowed_networks_are_taken(caplog):
    osc, apply = make(allow=parse_allow(["10.0.0.0/24", "fd00::/8", "192.168.1.7"]))
    taken = [("127.0.0.1", 1), ("127.8.9.10", 1), ("::1", 1, 0, 0), ("::ffff:127.0.0.1", 1, 0, 0),
             ("10.0.0.5", 1234), ("::ffff:10.0.0.200", 1, 0, 0), ("fd00::5", 1, 0, 0), ("192.168.1.7", 1)]
    refused = [("10.0.1.5", 1234), ("192.168.1.8", 1), ("fe80::1", 1, 0, 0), ("8.8.8.8", 53), ("not-an-ip", 1),
               ("", 1), "odd", ()]
    with caplog.at_level(logging.WARNING, logger="stylemotion.runtime.server.osc"):
        for addr in taken + refused:
            osc.datagram_received(_EMOTION, addr)
    assert len(apply.calls) == len(taken)
    assert refusals(osc) == {"source": len(refused)}
    assert "packets from 10.0.1.5:1234 are not taken" in caplog.text and "10.0.0.0/24" in caplog.text


def test_without_an_allow_list_only_loopback_is_taken():
    osc, apply = make()
    osc.datagram_received(_EMOTION, ("10.0.0.5", 1234))
    osc.datagram_received(b"\x00garbage", ("10.0.0.5", 1234))  # not even read
    assert refusals(osc) == {"source": 2} and apply.calls == []
    assert is_allowed("127.0.0.1", ()) and is_allowed("::1", ()) and not is_allowed("0.0.0.0", ())


# -- logging at a bounded rate ---------------------------------------------------------------------------------


def test_a_flood_of_bad_datagrams_logs_a_bounded_number_of_lines(caplog):
    now = [100.0]
    osc, _ = make(log_interval=10.0, log_burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="stylemotion.runtime.server.osc"):
        for _ in range(1000):
            osc.datagram_received(b"garbage", ("127.0.0.1", 1))
        assert len(caplog.records) == 3
        now[0] += 10.0
        osc.datagram_received(b"garbage", ("127.0.0.1", 1))
    assert len(caplog.records) == 5
    assert "997 more OSC refusals were not logged in the last 10 s" in caplog.records[3].getMessage()
    assert refusals(osc) == {"malformed": 1001}


# -- --osc and --osc-allow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("9000", ("127.0.0.1", 9000)), (" 9000 ", ("127.0.0.1", 9000)), ("0", ("127.0.0.1", 0)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)), ("localhost:57120", ("localhost", 57120)),
    ("[::1]:9000", ("::1", 9000)), ("[::]:65535", ("::", 65535)),
])
def test_osc_addresses(text, expected):
    assert parse_osc_address(text) == expected


@pytest.mark.parametrize("text, match", [
    ("", "the port must be a number"), ("abc", "'abc'"), ("-1", "'-1'"), ("65536", "'65536'"),
    ("127.0.0.1:", "got ''"), (":9000", "'' is not a host name"), ("::1:9000", "write an IPv6 address as"),
    ("[::1]9000", "write an IPv6 address as"), ("[::1", "write an IPv6 address as"),
    ("[10.0.0.1]:9000", "'10.0.0.1' is not an IPv6 address"), ("a b:9000", "'a b' is not a host name"),
    ("127.0.0.1:9x", "'9x'"), ("127.0.0.1:٩٠٠٠", "the port must be"),
])
def test_bad_osc_addresses_name_the_value(text, match):
    with pytest.raises(ConfigError, match=re.escape(f"--osc {text!r}") + ".*" + re.escape(match)):
        parse_osc_address(text)


def test_allow_lists():
    assert parse_allow([]) == []
    assert parse_allow("10.0.0.5") == [ipaddress.ip_network("10.0.0.5/32")]
    assert parse_allow(["10.0.0.5/24, ::1", "fd00::/8"]) == [
        ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128"), ipaddress.ip_network("fd00::/8")]
    for bad in ("10.0.0.300", "10.0.0.0/33", "host.example", "", "10.0.0.0/24,,"):
        culprit = "" if bad.endswith(",,") else bad
        with pytest.raises(ConfigError, match=re.escape(f"--osc-allow {culprit!r} is not an IP address")):
            parse_allow(["127.0.0.1", bad])


def test_missing_python_osc_says_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pythonosc.osc_message", None)
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'stylemotion[server]'")):
        OscControl(Recorder(), emotions=None, has_lstm=False)


# -- check_control: the validation OSC shares with POST /control -----------------------------------------------


def test_check_control_is_parse_controls_validation():
    assert check_control({"emotion": "SAD", "seed": 3}, emotions=None) == {"emotion": "sad", "seed": 3}
    assert parse_control(b'{"emotion": "SAD", "seed": 3}', emotions=None) == {"emotion": "sad", "seed": 3}
    assert check_control({"follow_lstm": False}, emotions=None, has_lstm=False) == {"follow_lstm": False}
    with pytest.raises(BadRequest, match="follow_lstm needs a server started with --lstm"):
        check_control({"follow_lstm": True}, emotions=None, has_lstm=False)
    assert check_control({"follow_lstm": True}, emotions=None) == {"follow_lstm": True}
    with pytest.raises(BadRequest, match="follow_lstm needs a server started with --lstm"):
        parse_control(b'{"follow_lstm": true}', emotions=None, has_lstm=False)
    for data in ({}, None, ["emotion"]):
        with pytest.raises(BadRequest, match="non-empty mapping of control fields"):
            check_control(data, emotions=None)
    with pytest.raises(BadRequest, match="field names must be text"):
        check_control({1: 2, "emotion": "sad"}, emotions=None)
    with pytest.raises(BadRequest, match=re.escape("unknown fields ['mood']")):
        check_control({"mood": "sad"}, emotions=None)


@pytest.mark.parametrize("body, match", [
    (b'{"intensity": 1' + b"0" * 400 + b"}", "intensity must be a finite number in"),  # was an OverflowError
    (b'{"intensity": 1' + b"0" * 5000 + b"}", "the body is not JSON"),  # past int's digit limit: was ValueError
    (b"[" * 100_000, "the body is not JSON"),  # was a RecursionError
])
def test_control_bodies_that_used_to_escape_as_other_errors(body, match):
    with pytest.raises(BadRequest, match=match):
        parse_control(body, emotions=None)
