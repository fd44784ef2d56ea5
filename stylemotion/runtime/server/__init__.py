"""The live server: a page that steers a face, MJPEG for video tools, many streams sharing one engine (``Hub``).

Built on aiohttp (the ``server`` extra). Endpoints, for the default stream and for each stream made with
``POST /streams`` (under ``/streams/{id}``): ``stream.mjpg`` (multipart JPEG, any number of viewers up to the
cap), ``frame.jpg`` (the latest frame), ``POST control`` (JSON: the runtime's control fields), ``GET stats``,
``POST webrtc`` (an SDP offer -> the answer, with ``--webrtc``); ``DELETE /streams/{id}`` ends a stream; ``GET /`` is
the page (WebRTC when it can, else MJPEG). OSC over UDP (``--osc``) steers the same streams. Beyond loopback every
route but the page needs a token. When streams ask for more than the engine renders, each slows down by weighted
fair shares (``hub``), and new sessions past the measured capacity get 503.

Each stream has one publisher task: when a new frame is due it JPEG-encodes it once, and every viewer sends the
newest encoded frame it has not sent yet (a slot of one: a slow reader skips frames, a fast one is not held
back). A viewer whose connection is gone is noticed within a second. Bad requests get a 4xx with a reason and
change nothing; past the caps the answer is 503 with Retry-After.

The HTTP surface, hardened for a server that may face a browser or a network: it binds to loopback unless asked;
request bodies are capped (64 KiB: 413) and so are header lines (aiohttp's 8 KiB); each client address has a
token-bucket rate limit (429 with Retry-After); a POST must say ``Content-Type: application/json`` (415), so a
page on another site cannot steer a stream with a form or a plain ``fetch`` (that would need a CORS preflight we
never answer); on loopback, a request whose ``Host`` is not a loopback name is refused (403: DNS rebinding); no
route reads the file system (the page is one packaged file, stream ids are only dictionary keys); unknown routes
are 404; and an unexpected error is logged with a number and answered with that number only, never a traceback.
A stream made with ``POST /streams`` that has no viewer and no request for ``idle_timeout`` seconds is closed.

One role a module: ``app`` (``Server``, its routes and handlers; ``build_server``, ``run``), ``config``
(``ServerConfig``, tokens from the environment), ``sessions`` (each stream's publisher, viewers and idle reaping),
``guards`` (Host check, body caps, rate limit, tokens, content types, the error catch-all), ``messages`` (JSON bodies
parsed and checked), ``page`` (the control page), ``photos`` (decoding and embedding an upload), ``camera`` (the
virtual webcam), ``webrtc`` (``--webrtc``: one shared VP8 encoder per stream, its viewers' peer connections),
``sdp`` (offers and ICE addresses checked without aiortc), ``osc`` (``--osc``: control over UDP).
"""
from __future__ import annotations

from .app import Server, build_server, run
from .camera import open_virtual_camera
from .config import LOOPBACK_HOSTS, ServerConfig
from .guards import MAX_BODY, MAX_PHOTO, PHOTO_TYPES, RateLimiter
from .messages import BadRequest, parse_control
from .photos import decode_photo, photo_embedder

__all__ = ["BadRequest", "LOOPBACK_HOSTS", "MAX_BODY", "MAX_PHOTO", "PHOTO_TYPES", "RateLimiter", "Server",
           "ServerConfig", "build_server", "decode_photo", "open_virtual_camera", "parse_control", "photo_embedder",
           "run"]
