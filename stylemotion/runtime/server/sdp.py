"""What a WebRTC offer and ICE may hold, checked without aiortc: ``parse_offer`` (the body as data), ``filter_candidates``
(loopback only on a loopback bind), ``host_addresses`` (where this server gathers), ``default_bitrate`` and
``offering_addresses`` (aioice gathers on the chosen addresses only; see ``webrtc``'s docstring for why)."""
from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import json
import re
import socket
from collections.abc import Iterator, Sequence

from ..._optional import require
from ...errors import ConfigError
from .messages import BadRequest

MAX_SDP = 64 * 1024  # characters of an offer's SDP
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")
_NOT_SDP_TEXT = re.compile(r"[^\x20-\x7e\r\n]")


# -- pure checks (no aiortc needed) ---------------------------------------------------------------------------

def parse_offer(body: bytes) -> str:
    """A ``POST .../webrtc`` body -> the offer's SDP text. The body must be a JSON object with exactly ``sdp``
    (text of at most 64 Ki characters, printable ASCII and CR/LF only, starting with ``v=0``) and ``type``
    (``"offer"``); ``BadRequest`` names the field at fault."""
    try:
        data = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object {"sdp": "v=0...", "type": "offer"}')
    unknown = sorted(set(data) - {"sdp", "type"})
    if unknown:
        raise BadRequest(f"unknown fields {[name[:40] for name in unknown[:8]]}; an offer has only sdp and type")
    for name in ("sdp", "type"):
        if name not in data:
            raise BadRequest(f"{name} is missing: the body must be {{\"sdp\": \"v=0...\", \"type\": \"offer\"}}")
    if data["type"] != "offer":
        raise BadRequest(f'type must be "offer", got {str(data["type"])[:40]!r}')
    sdp = data["sdp"]
    if not isinstance(sdp, str):
        raise BadRequest(f"sdp must be text, got {type(sdp).__name__}")
    if len(sdp) > MAX_SDP:
        raise BadRequest(f"sdp is {len(sdp)} characters, more than {MAX_SDP}")
    bad = _NOT_SDP_TEXT.search(sdp)
    if bad is not None:
        raise BadRequest(f"sdp has a character that is not printable ASCII or CR/LF at offset {bad.start()} "
                         f"(U+{ord(bad.group()):04X})")
    if not sdp.startswith("v=0"):
        raise BadRequest(f"sdp must start with 'v=0', got {sdp[:20]!r}")
    return sdp


def filter_candidates(sdp: str, *, loopback: bool) -> str:
    """The offer's SDP with the ICE candidates this server may contact: all of them when it serves a network;
    on loopback only ``a=candidate`` lines whose address is 127.0.0.1 or ::1 (mDNS ``.local`` names and every
    other address dropped). Other lines and line endings are kept as they are."""
    if not loopback:
        return sdp
    kept = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or fields[4] not in LOOPBACK_ADDRESSES:
                continue
        kept.append(line)
    return "".join(kept)


def host_addresses(host: str) -> list[str] | None:
    """The local addresses offered as ICE host candidates by a server bound to ``host``: a loopback name or
    address -> that loopback address only (``localhost`` -> 127.0.0.1); a wildcard (``0.0.0.0``, ``::``, empty)
    -> None, aioice's own list (every interface but loopback); another address -> that address; another name ->
    its addresses (resolved once, when the output is made). ConfigError names a host that does not resolve."""
    name = host.strip().strip("[]").lower()
    if name in WILDCARD_HOSTS:
        return None
    if name == "localhost":
        return ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(f"host {host!r} does not resolve to an address to offer WebRTC on: {exc}") from exc
    return sorted({info[4][0] for info in infos})


def default_bitrate(size: tuple[int, int], fps: float) -> int:
    """A stream's constant VP8 bitrate (bits/s) for frames of ``size`` ``(height, width)`` at ``fps``:
    3 Mbit/s at 1024x1024 and 30 fps, proportional to pixels and fps, within [250 kbit/s, 8 Mbit/s]."""
    height, width = size
    scale = (height * width) / (1024 * 1024) * (fps / 30.0)
    return int(min(8_000_000, max(250_000, 3_000_000 * scale)))


# -- which local addresses aioice gathers on -------------------------------------------------------------------

_OFFERED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("stylemotion_ice_addresses",
                                                                                  default=None)


def _install_address_hook() -> None:
    """Replace ``aioice.ice.get_host_addresses`` (once; a second call finds the hook and returns) with one that
    answers the addresses of the current ``offering_addresses`` block, else calls aioice's own."""
    ice = require("aioice.ice", extra="server")
    if getattr(ice.get_host_addresses, "stylemotion_hook", False):
        return
    original = ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _OFFERED.get()
        if chosen is None:
            return original(use_ipv4, use_ipv6)
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    get_host_addresses.stylemotion_hook = True
    get_host_addresses.original = original
    ice.get_host_addresses = get_host_addresses


@contextlib.contextmanager
def offering_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Within the block (this task and the tasks it starts), aiortc peer connections gather ICE host candidates
    on ``addresses`` only (None: aioice's own list). Wrap ``setLocalDescription`` with it."""
    _install_address_hook()
    token = _OFFERED.set(None if addresses is None else tuple(addresses))
    try:
        yield
    finally:
        _OFFERED.reset(token)
