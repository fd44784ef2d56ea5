"""OSC control over UDP (``stylemotion serve --osc 9000``): the messages a lighting desk, TouchOSC, Max/MSP or
Pure Data sends, checked by the same ``check_control`` as ``POST /control`` and applied to the same streams.

Addresses (``<stream>`` is a stream id; ``default`` is the default stream), one argument each::

    /stylemotion/<stream>/emotion      <string>            e.g. "happy"
    /stylemotion/<stream>/intensity    <int|float>
    /stylemotion/<stream>/speed        <int|float>
    /stylemotion/<stream>/transition   <int|float>         seconds
    /stylemotion/<stream>/temperature  <int|float>
    /stylemotion/<stream>/identity     <int>               the seed of a new face (an integral float is taken)
    /stylemotion/<stream>/lstm         <0|1|0.0|1.0|T|F>   follow the LSTM (needs a server started with one)
    /stylemotion/<stream>/pause        <0|1|0.0|1.0|T|F>

A bundle's messages are applied in order, each on its own, as soon as the bundle arrives (time tags are not
waited for); nested bundles too, up to ``max_depth`` levels and ``max_messages`` messages a datagram.

Datagrams are parsed as data, like every reader of untrusted bytes here: the size is capped before anything is
read, the bundle framing is walked here (python-osc's own bundle parser recurses without a bound and loops
forever on a negative element size), each message's type tags are checked against the types python-osc reads,
and only then does ``pythonosc.osc_message.OscMessage`` decode it. OSC carries no credentials, so packets are
taken only from loopback and from the networks given with ``--osc-allow``.

Nothing a sender does raises: every datagram is counted (``counters``: ``osc_received`` = ``osc_applied`` +
``osc_refused``, and ``osc_refused_<reason>`` for each reason in ``REASONS``), and refusals are logged at most
``log_burst`` times per ``log_interval`` seconds, so that a flood cannot fill the log.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable

from ..._optional import require
from ...errors import ConfigError, StylemotionError
from .messages import BadRequest, check_control

log = logging.getLogger(__name__)

PREFIX = "stylemotion"
DEFAULT_HOST = "127.0.0.1"
MAX_DATAGRAM = 64 * 1024  # bytes: the most a UDP datagram carries anyway
MAX_MESSAGES = 64  # messages in one datagram, across nested bundles
MAX_DEPTH = 4  # nested bundle levels
# An address's last part -> (the control field it sets, the kind of argument it takes).
ADDRESSES = {"emotion": ("emotion", "text"), "intensity": ("intensity", "number"), "speed": ("speed", "number"),
             "transition": ("transition", "number"), "temperature": ("temperature", "number"),
             "identity": ("seed", "integer"), "lstm": ("follow_lstm", "flag"), "pause": ("pause", "flag")}
# Why a unit (a message, or a datagram refused whole) was refused: each has a counter osc_refused_<reason>.
REASONS = {
    "source": "the sender is not on loopback or in --osc-allow",
    "too_large": "the datagram is larger than max_datagram",
    "malformed": "the bytes are not an OSC message or bundle python-osc can read",
    "bundle_limit": "bundles nested deeper than max_depth, or more than max_messages messages",
    "address": "not /stylemotion/<stream>/<field> with a known field",
    "arguments": "not exactly one argument of the type the field takes",
    "value": "a value check_control or the stream refuses (out of range, unknown emotion, no LSTM, ...)",
    "stream": "no stream has that id",
    "error": "an unexpected error (a bug: logged with its traceback)",
}
_BUNDLE = b"#bundle\x00"
_TYPE_TAGS = frozenset("ihfdsbrmtTFN[]")  # the argument types python-osc's OscMessage reads


class _Refused(Exception):
    """A unit refused for ``reason`` (a key of REASONS); the message says what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# -- configuration ---------------------------------------------------------------------------------------------


def parse_osc_address(text: str) -> tuple[str, int]:
    """``--osc``'s value -> ``(host, port)``: ``9000`` (loopback, 127.0.0.1), ``HOST:PORT`` or ``[IPv6]:PORT``.
    Port 0 asks for a free port (``OscControl.start`` returns the one bound). ConfigError names the value."""
    raw = text
    text = str(text).strip()
    host = DEFAULT_HOST
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ConfigError(f"--osc {raw!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9000")
        host, port_text = text[1:end], text[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ConfigError(f"--osc {raw!r}: {host!r} is not an IPv6 address ({exc})") from exc
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"--osc {raw!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9000")
        if not host or any(c.isspace() or c in "/[]" for c in host):
            raise ConfigError(f"--osc {raw!r}: {host!r} is not a host name or IPv4 address")
    else:
        port_text = text
    if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--osc {raw!r}: the port must be a number in [0, 65535], got {port_text!r}")
    return host, int(port_text)


def parse_allow(texts: str | Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``--osc-allow``'s values (each an IP address or a CIDR network; commas separate several in one value) ->
    the networks whose packets are taken besides loopback's. Host bits are allowed (``10.0.0.5/24`` is
    ``10.0.0.0/24``). ConfigError names the value at fault."""
    if isinstance(texts, str):
        texts = [texts]
    networks = []
    for text in texts:
        for part in str(text).split(","):
            part = part.strip()
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ConfigError(f"--osc-allow {part!r} is not an IP address or CIDR network ({exc})") from exc
    return networks


def is_allowed(host: str, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether packets from ``host`` (a datagram's source address) are taken: loopback, or in ``allow``. An
    IPv4-mapped IPv6 source (a dual-stack socket) is judged as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip.version == net.version and ip in net for net in allow)


class _LogThrottle:
    """At most ``burst`` records per ``interval`` seconds; the next window first says how many were held back."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float]):
        self.interval, self.burst, self.clock = interval, burst, clock
        self.start, self.logged, self.held = -float("inf"), 0, 0

    def allow(self) -> bool:
        now = self.clock()
        if now - self.start >= self.interval:
            if self.held:
                log.warning("%d more OSC refusals were not logged in the last %g s (counts: /stats)", self.held,
                            self.interval)
            self.start, self.logged, self.held = now, 0, 0
        if self.logged < self.burst:
            self.logged += 1
            return True
        self.held += 1
        return False


# -- the receiver ----------------------------------------------------------------------------------------------


class OscControl(asyncio.DatagramProtocol):
    """Receives OSC over UDP and applies each valid message with ``apply(stream_id, changes) -> generation``,
    ``changes`` being ``check_control``'s output (one field per message). ``apply`` raises KeyError for an unknown
    stream, and may raise BadRequest / ConfigError for a change the stream refuses; both are counted refusals.

    ``allow``: networks (``parse_allow``) whose packets are taken besides loopback's; ``emotions``: the emotions
    the server has directions for (None: any); ``has_lstm``: whether ``lstm 1`` can be followed. ``counters``
    (see the module's docstring) are meant for ``/stats``. ``datagram_received`` can be fed bytes directly (the
    tests do); ``start``/``close`` put it on a UDP socket of the running event loop.
    """

    def __init__(self, apply: Callable[[str, dict], int], *,
                 allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                 emotions: list[str] | None = None, has_lstm: bool = False, max_datagram: int = MAX_DATAGRAM,
                 max_messages: int = MAX_MESSAGES, max_depth: int = MAX_DEPTH, log_interval: float = 10.0,
                 log_burst: int = 5, clock: Callable[[], float] = time.monotonic):
        for name, value, least in (("max_datagram", max_datagram, 1), ("max_messages", max_messages, 1),
                                   ("max_depth", max_depth, 0), ("log_burst", log_burst, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"OscControl {name} must be an integer >= {least}, got {value!r}")
        self._message = require("pythonosc.osc_message", extra="server", package="python-osc")
        self._types = require("pythonosc.parsing.osc_types", extra="server", package="python-osc")
        self.apply, self.allow = apply, tuple(allow)
        self.emotions, self.has_lstm = emotions, has_lstm
        self.max_datagram, self.max_messages, self.max_depth = max_datagram, max_messages, max_depth
        self.counters: dict[str, int] = {"osc_datagrams": 0, "osc_received": 0, "osc_applied": 0,
                                         "osc_refused": 0, **{f"osc_refused_{r}": 0 for r in REASONS},
                                         "osc_socket_errors": 0}
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] | None = None
        self._throttle = _LogThrottle(log_interval, log_burst, clock)

    # -- the socket ------------------------------------------------------------------------------------------

    async def start(self, host: str = DEFAULT_HOST, port: int = 9000) -> tuple[str, int]:
        """Listen on ``host:port`` (UDP) on the running loop; returns the address bound (port 0: a free one).
        ConfigError when the address cannot be bound (in use, not this machine's, ...)."""
        if self.transport is not None:
            raise ConfigError(f"OSC is listening on {self.address} already")
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen for OSC on {host}:{port} ({exc})") from exc
        self.transport = transport
        self.address = tuple(transport.get_extra_info("sockname")[:2])
        if not is_allowed(self.address[0], ()) and not self.allow:
            log.warning("OSC listens on %s:%d but takes packets only from loopback; add --osc-allow ADDRESS/NET "
                        "for the senders on the network", *self.address)
        log.info("OSC control on udp %s:%d", *self.address)
        return self.address

    def close(self) -> None:
        """Stop listening (idempotent); counters stay."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def error_received(self, exc: Exception) -> None:
        """A socket error (e.g. an ICMP port-unreachable echoed back): counted, never fatal."""
        self.counters["osc_socket_errors"] += 1
        if self._throttle.allow():
            log.warning("OSC socket error: %s", exc)

    # -- datagrams -------------------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr) -> None:
        """Apply what one datagram from ``addr`` (``(host, port, ...)``) holds, or count why not; never raises."""
        self.counters["osc_datagrams"] += 1
        source = _source(addr)
        try:
            if not isinstance(addr, tuple) or not addr or not is_allowed(str(addr[0]), self.allow):
                raise _Refused("source", f"packets from {source} are not taken (allowed: loopback"
                                         f"{''.join(', ' + str(n) for n in self.allow)}; see --osc-allow)")
            if len(data) > self.max_datagram:
                raise _Refused("too_large", f"a datagram of {len(data)} bytes (at most {self.max_datagram})")
            messages = self._messages(bytes(data), depth=0, found=[])
        except _Refused as exc:
            self._refuse(exc.reason, str(exc), source)
            return
        except Exception:  # a bug in the parsing here; a sender must never take the server down
            self._refuse("error", "reading a datagram failed", source, exc_info=True)
            return
        for message in messages:
            try:
                self._apply(message)
            except _Refused as exc:
                self._refuse(exc.reason, str(exc), source)
            except Exception:  # a bug, in the conversion here or in apply
                self._refuse("error", f"applying {message.address[:64]!r} failed", source, exc_info=True)
            else:
                self.counters["osc_received"] += 1
                self.counters["osc_applied"] += 1

    def _refuse(self, reason: str, detail: str, source: str, *, exc_info: bool = False) -> None:
        self.counters["osc_received"] += 1
        self.counters["osc_refused"] += 1
        self.counters[f"osc_refused_{reason}"] += 1
        if self._throttle.allow():
            log.warning("OSC from %s refused (%s): %s", source, reason, detail[:300], exc_info=exc_info)

    def _messages(self, data: bytes, *, depth: int, found: list) -> list:
        """The messages of a datagram or bundle element, in order, appended to ``found``; _Refused when the
        bytes are not OSC or pass a cap (the whole datagram is then refused: nothing of it is applied)."""
        if data.startswith(_BUNDLE):
            if depth >= self.max_depth:
                raise _Refused("bundle_limit", f"bundles nested more than {self.max_depth} deep")
            if len(data) < 16:
                raise _Refused("malformed", f"a bundle of {len(data)} bytes has no time tag")
            pos = 16  # "#bundle\0" and the 8-byte time tag (not waited for)
            while pos < len(data):
                if pos + 4 > len(data):
                    raise _Refused("malformed", f"a bundle element's size is cut off at byte {pos}")
                size = int.from_bytes(data[pos:pos + 4], "big", signed=True)
                pos += 4
                if size <= 0 or size % 4 or pos + size > len(data):
                    raise _Refused("malformed", f"a bundle element of {size} bytes at byte {pos - 4} "
                                                f"(a positive multiple of 4, within the {len(data)} bytes)")
                self._messages(data[pos:pos + size], depth=depth + 1, found=found)
                pos += size
            return found
        if not data.startswith(b"/"):
            raise _Refused("malformed", f"not an OSC message or bundle: {data[:16]!r}")
        if len(found) >= self.max_messages:
            raise _Refused("bundle_limit", f"more than {self.max_messages} messages in one datagram")
        found.append(self._decode(data))
        return found

    def _decode(self, data: bytes):
        """One message's bytes -> a python-osc ``OscMessage``; _Refused("malformed") names what is wrong."""
        types, message = self._types, self._message
        try:
            address, pos = types.get_string(data, 0)
            if pos < len(data):
                tags, _ = types.get_string(data, pos)
                if not tags.startswith(","):
                    raise _Refused("malformed", f"{address[:64]!r}: the type tags {tags[:16]!r} do not start "
                                                f"with ','")
                unknown = sorted(set(tags[1:]) - _TYPE_TAGS)
                if unknown:  # python-osc would skip them with a warning per message (a flood of log lines)
                    raise _Refused("malformed", f"{address[:64]!r}: unsupported OSC type tags {unknown[:8]}")
            return message.OscMessage(data)
        except (message.ParseError, types.ParseError, ValueError, OverflowError, IndexError, TypeError) as exc:
            raise _Refused("malformed", f"not a readable OSC message ({type(exc).__name__}: {exc})") from exc

    def _apply(self, message) -> None:
        """Check one message and apply it; _Refused names the reason and the value at fault."""
        address = message.address
        parts = address.split("/")
        if len(parts) != 4 or parts[0] or parts[1] != PREFIX or not parts[2] or parts[3] not in ADDRESSES:
            raise _Refused("address", f"unknown address {address[:80]!r}; known: /{PREFIX}/<stream>/"
                                      f"{{{','.join(ADDRESSES)}}}")
        stream_id, (field, kind) = parts[2], ADDRESSES[parts[3]]
        params = message.params
        if len(params) != 1:
            raise _Refused("arguments", f"{address[:80]!r} takes exactly one argument, got {len(params)}")
        value = _argument(address, kind, params[0])
        try:
            changes = check_control({field: value}, emotions=self.emotions, has_lstm=self.has_lstm)
        except BadRequest as exc:
            raise _Refused("value", f"{address[:80]!r}: {exc}") from exc
        try:
            self.apply(stream_id, changes)
        except KeyError:
            raise _Refused("stream", f"no stream {stream_id[:64]!r} ({address[:80]!r})") from None
        except StylemotionError as exc:  # BadRequest, ConfigError: the stream refuses this change
            raise _Refused("value", f"{address[:80]!r}: {exc}") from exc


def _argument(address: str, kind: str, value):
    """An OSC argument -> the value ``check_control`` expects for a field of ``kind``; _Refused("arguments") for
    the wrong type, _Refused("value") for a flag that is a number but not 0 or 1."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "text" and isinstance(value, str):
        return value
    if kind == "number" and number:
        return value
    if kind == "integer" and number:
        if isinstance(value, int):
            return value
        if value == value and abs(value) != float("inf") and value == int(value):
            return int(value)
    if kind == "flag":
        if isinstance(value, bool):
            return value
        if number:
            if value in (0, 1):
                return bool(value)
            raise _Refused("value", f"{address[:80]!r} takes 0 or 1 (or T / F), got {value!r}")
    wanted = {"text": "a string", "number": "an int or a float", "integer": "an int (or an integral float)",
              "flag": "0 or 1 (int or float) or T / F"}[kind]
    return _wrong(address, wanted, value)


def _wrong(address: str, wanted: str, value):
    shown = f"{value[:16]!r}..." if isinstance(value, (str, bytes)) and len(value) > 16 else repr(value)[:80]
    raise _Refused("arguments", f"{address[:80]!r} takes {wanted}, got {type(value).__name__} {shown}")


def _source(addr) -> str:
    """A datagram's source address, for the log."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])[:64]
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return repr(addr)[:64]
