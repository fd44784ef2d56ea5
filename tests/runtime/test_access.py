"""Who may steer and who may watch: a server bound beyond loopback refuses to start without a control token; with
one, every steering route answers 401 without it, the view token watches but cannot steer (403), and tokens are
compared in constant time. On loopback without a token, nothing changes."""
from __future__ import annotations

import http.client
import json

import pytest

pytest.importorskip("aiohttp")

from stylemotion.errors import ConfigError  # noqa: E402
from stylemotion.runtime.server import ServerConfig, build_server  # noqa: E402
from stylemotion.runtime.server.config import tokens_from_env  # noqa: E402
from stylemotion.runtime.server.guards import authorize  # noqa: E402

from .serving import request, running  # noqa: E402

TOKEN = "control-token-0123456789abcdef"
VIEW = "view-token-0123456789abcdefgh"
STEERING = [("POST", "/control", b'{"emotion": "sad"}'), ("POST", "/streams", b"{}"),
            ("POST", "/streams/default/control", b'{"intensity": 2}'), ("DELETE", "/streams/s1", None)]
WATCHING = [("GET", "/stats"), ("GET", "/frame.jpg"), ("GET", "/streams/default/stats")]


def test_beyond_loopback_needs_a_control_token_and_says_how_to_make_one():
    with pytest.raises(ConfigError, match="needs a control token.*STYLEMOTION_TOKEN.*secrets"):
        ServerConfig(host="0.0.0.0").validate()
    with pytest.raises(ConfigError, match="at least 16"):
        ServerConfig(host="0.0.0.0", token="short").validate()
    with pytest.raises(ConfigError, match="must differ"):
        ServerConfig(host="0.0.0.0", token=TOKEN, view_token=TOKEN).validate()
    with pytest.raises(ConfigError, match="without a control token"):
        ServerConfig(view_token=VIEW).validate()
    ServerConfig(host="0.0.0.0", token=TOKEN, view_token=VIEW).validate()
    ServerConfig().validate()  # loopback: no token needed
    assert tokens_from_env(None, None, {"STYLEMOTION_TOKEN": TOKEN}) == (TOKEN, None)
    assert tokens_from_env("given-token-000000", None, {"STYLEMOTION_TOKEN": TOKEN})[0] == "given-token-000000"
    assert tokens_from_env(None, None, {"STYLEMOTION_TOKEN": ""}) == (None, None)


def test_the_cli_refuses_to_serve_beyond_loopback_without_a_token(capsys, monkeypatch):
    from stylemotion.cli import main

    monkeypatch.delenv("STYLEMOTION_TOKEN", raising=False)
    code = main(["serve", "--http", "0.0.0.0:0"])
    assert code != 0
    assert "needs a control token" in capsys.readouterr().err


class _Req:
    def __init__(self, method, path, headers=None, query=None):
        self.method, self.path, self.headers, self.query = method, path, headers or {}, query or {}


def test_authorize_rules():
    config = ServerConfig(host="0.0.0.0", token=TOKEN, view_token=VIEW).validate()
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    assert authorize(_Req("GET", "/"), config) is None  # the page itself is public (it holds no secret)
    assert authorize(_Req("GET", "/stats"), config) == "unauthorized"
    assert authorize(_Req("GET", "/stats", bearer(VIEW)), config) is None
    assert authorize(_Req("GET", "/stream.mjpg", query={"token": VIEW}), config) is None
    assert authorize(_Req("POST", "/control", bearer(VIEW)), config) == "forbidden"
    assert authorize(_Req("POST", "/control", query={"token": TOKEN}), config) == "unauthorized"  # not on POST
    assert authorize(_Req("POST", "/control", bearer(TOKEN)), config) is None
    assert authorize(_Req("POST", "/streams/s1/webrtc", bearer(VIEW)), config) is None  # viewers may connect
    assert authorize(_Req("POST", "/control", bearer(TOKEN + "x")), config) == "unauthorized"
    assert authorize(_Req("POST", "/control", {"Authorization": TOKEN}), config) == "unauthorized"  # no scheme
    assert authorize(_Req("POST", "/control"), ServerConfig().validate()) is None  # loopback, no token set


def test_tokens_on_a_non_loopback_bind(G, dirs):
    config = ServerConfig(host="0.0.0.0", port=0, fps=12.0, token=TOKEN, view_token=VIEW).validate()
    server = build_server(G, directions=dirs, config=config, backend="torch", script="happy:1,sad:1")
    with running(server, host="0.0.0.0") as port:
        for method, path, body in STEERING:  # nothing steers without the control token
            headers = {"Content-Type": "application/json"}
            status, head, text = request(port, method, path, body, headers)
            assert status == 401, (method, path, status, text)
            assert head.get("WWW-Authenticate", "").startswith("Bearer")
            status, _, _ = request(port, method, path, body, {**headers, "Authorization": f"Bearer {VIEW}"})
            assert status == 403, (method, path, status)
        for method, path in WATCHING:
            assert request(port, method, path, None, {})[0] == 401
            status, _, _ = request(port, method, path, None, {"Authorization": f"Bearer {VIEW}"})
            assert status in (200, 503), (path, status)  # 503: no frame yet for frame.jpg
        # the view token watches MJPEG from a URL (no header possible in an <img>)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/stream.mjpg?token={VIEW}")
        resp = conn.getresponse()
        assert resp.status == 200 and "multipart/x-mixed-replace" in resp.getheader("Content-Type")
        resp.close()  # the response holds the socket open otherwise
        conn.close()
        assert request(port, "GET", "/", None, {})[0] == 200  # the page asks for the token itself
        # the control token steers
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        status, _, body = request(port, "POST", "/control", b'{"emotion": "sad"}', auth)
        assert status == 200 and json.loads(body)["applied"] == {"emotion": "sad"}
        status, _, body = request(port, "POST", "/streams", b'{"seed": 3}', auth)
        assert status == 201, body
        counters = json.loads(request(port, "GET", "/stats", None, {"Authorization": f"Bearer {TOKEN}"})[2])
        assert counters["server"]["unauthorized"] >= len(STEERING) + len(WATCHING)
        assert counters["server"]["forbidden"] >= len(STEERING)


def test_loopback_without_a_token_is_unchanged(G, dirs):
    server = build_server(G, directions=dirs, config=ServerConfig(port=0, fps=12.0), backend="torch")
    with running(server) as port:
        assert request(port, "POST", "/control", b'{"emotion": "sad"}')[0] == 200
        assert request(port, "GET", "/stats")[0] == 200
