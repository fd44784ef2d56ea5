"""The live server over one engine: validation, viewers that cannot hurt the stream, independent streams, the
page in a real browser, and the HTTP surface's guards (the soak is bench/soak.py, tested in tests/bench)."""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from stylemotion.runtime import stream  # noqa: E402
from stylemotion.runtime.server import ServerConfig, build_server  # noqa: E402

from .serving import request, running, stats  # noqa: E402


FPS = 12.0


def make_server(G, dirs, **kw):
    config = ServerConfig(port=0, fps=FPS, max_streams=kw.pop("max_streams", 6), max_viewers=kw.pop("max_viewers", 40),
                          photo_steps=kw.pop("photo_steps", 200))
    return build_server(G, directions=dirs, config=config, backend="torch", **kw)


def read_parts(port, path, *, seconds: float, pause: float = 0.0) -> int:
    """Read an MJPEG stream for ``seconds``, sleeping ``pause`` after each part; returns the parts read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200 and "multipart/x-mixed-replace" in resp.getheader("Content-Type")
    assert resp.getheader("X-Accel-Buffering") == "no"
    parts, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        line = resp.fp.readline()
        if line.lower().startswith(b"content-length:"):
            resp.fp.read(int(line.split(b":")[1]) + 2)
            parts += 1
            if pause:
                time.sleep(pause)
    conn.close()
    return parts


def test_bad_requests_change_nothing_and_say_why(G, dirs):
    with running(make_server(G, dirs, script="happy:1,sad:1")) as port:
        before = stats(port)["generation"]
        cases = [(b"{not json", 400, "not JSON"), (b"[1, 2]", 400, "JSON object"),
                 (b'{"emotion": "hungry"}', 400, "hungry"), (b'{"intensity": 1e999}', 400, "intensity"),
                 (b'{"speed": -1}', 400, "speed must be"), (b'{"mood": "sad"}', 400, "unknown fields"),
                 (b'{"seed": "x"}', 400, "seed must be"), (b'{"pause": 1}', 400, "pause must be"),
                 (b'{"follow_lstm": true}', 400, "--lstm"), (b"{}", 400, "JSON object")]
        for body, code, reason in cases:
            status, _, text = request(port, "POST", "/control", body)
            assert status == code and reason in text.decode(), (body, status, text)
        status, _, _ = request(port, "POST", "/control", b'{"emotion": "sad"' + b" " * (70 * 1024) + b"}")
        assert status == 413
        assert request(port, "GET", "/streams/nope/stats")[0] == 404
        assert request(port, "POST", "/streams", b'{"seed": -4}')[0] == 400
        assert request(port, "DELETE", "/streams/default")[0] == 400
        assert stats(port)["generation"] == before  # nothing above changed the stream
        status, _, text = request(port, "POST", "/control", b'{"emotion": "sad", "intensity": 4}')
        assert status == 200 and json.loads(text)["applied"] == {"emotion": "sad", "intensity": 4.0}


def test_a_slow_viewer_does_not_hold_back_a_fast_one_and_viewers_leave(G, dirs):
    with running(make_server(G, dirs, script="happy:1,sad:1,surprise:1")) as port:
        time.sleep(0.5)
        slow = threading.Thread(target=read_parts, args=(port, "/stream.mjpg"), kwargs=dict(seconds=4, pause=1.0))
        slow.start()
        fast = read_parts(port, "/stream.mjpg", seconds=4)
        slow.join()
        assert fast >= 0.9 * FPS * 4, fast
        socks = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            socks.append(s)
        deadline = time.monotonic() + 10
        while stats(port)["viewers"] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for s in socks:
            s.close()
        dropped = time.monotonic()
        while stats(port)["viewers"] > 0:
            assert time.monotonic() - dropped < 2.0, stats(port)["viewers"]
            time.sleep(0.05)


def test_streams_share_the_engine_and_render_what_they_render_alone(G, dirs):
    server = make_server(G, dirs)
    scripts = {1: "happy:1,sad:0.5", 2: "surprise:0.7,angry:0.8", 3: "fear:1.5", 4: "disgust:0.5,happy:1"}
    frames: dict[int, dict[int, np.ndarray]] = {seed: {} for seed in scripts}
    with running(server) as port:
        ids = {}
        for seed, script in scripts.items():
            status, _, text = request(port, "POST", "/streams", json.dumps({"seed": seed, "script": script}).encode())
            assert status == 201
            ids[seed] = json.loads(text)["id"]
            hub_stream = server.hub.streams[ids[seed]]
            hub_stream.on_frame = lambda f, seed=seed: frames[seed].__setitem__(f.index, f.image)
        time.sleep(2.5)
        assert server.hub.stats()["mean_batch"] > 1  # frames of several streams rode in one engine call
        for seed in scripts:
            assert request(port, "DELETE", f"/streams/{ids[seed]}")[0] == 200
    for seed, script in scripts.items():
        alone = [f.image for f in stream(G, directions=dirs, script=script, seed=seed, fps=FPS, backend="torch")]
        got = {i: img for i, img in frames[seed].items() if i < len(alone)}
        assert len(got) >= 0.8 * len(alone), (seed, len(got))
        worst = max(np.abs(img.astype(int) - alone[i].astype(int)).max() for i, img in got.items())
        assert worst <= 1, (seed, worst)  # the batch a frame rides in changes nothing but rounding


def test_caps_answer_503_with_retry_after(G, dirs):
    with running(make_server(G, dirs, max_streams=2, max_viewers=1)) as port:
        assert request(port, "POST", "/streams", b"{}")[0] == 201
        status, headers, _ = request(port, "POST", "/streams", b"{}")
        assert status == 503 and "Retry-After" in headers
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/stream.mjpg")
        assert conn.getresponse().status == 200
        status, headers, _ = request(port, "GET", "/stream.mjpg")
        assert status == 503 and "Retry-After" in headers
        conn.close()


@pytest.mark.slow
def test_the_page_in_a_real_browser(G, dirs, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    photo = None
    try:
        from skimage import data

        from stylemotion.checkpoints.mtcnn import default_mtcnn_dir

        default_mtcnn_dir()
        photo = tmp_path / "astronaut.jpg"
        from PIL import Image

        Image.fromarray(data.astronaut()).save(photo)
    except Exception:  # no MTCNN weights here: the page is still checked, the upload is not
        photo = None
    with running(make_server(G, dirs, photo_steps=10)) as port:
        browser = webdriver.Chrome(service=Service(driver_bin), options=options)
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: b.execute_script("const i = document.getElementById('face');"
                                                  "return i.complete && i.naturalWidth > 0;"))
            grab = ("const i = document.getElementById('face'), c = document.createElement('canvas');"
                    "c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d');"
                    "x.drawImage(i, 0, 0); return Array.from(x.getImageData(0, 0, c.width, c.height).data)"
                    ".reduce((a, v) => (a * 31 + v) % 1000000007, 7);")
            first = browser.execute_script(grab)
            browser.find_element("id", "emotion-sad").click()
            wait.until(lambda b: stats(port)["emotion"] == "sad")
            wait.until(lambda b: b.execute_script(grab) != first)  # the stream image updates on the page
            wait.until(lambda b: "sad" in b.find_element("id", "stats").text)  # and the page shows the stats
            assert stats(port)["control_latency_ms"]["count"] >= 1
            if photo is not None:  # "use my photo": the file input uploads, the page shows the embedding's end
                generation = stats(port)["generation"]
                browser.find_element("id", "photo").send_keys(str(photo))
                WebDriverWait(browser, 120).until(
                    lambda b: "done" in b.find_element("id", "photo-state").text)
                assert stats(port)["photo"]["state"] == "done" and stats(port)["generation"] == generation + 1
        finally:
            browser.quit()


def test_virtual_camera_says_what_is_missing(monkeypatch):
    import importlib.util

    from stylemotion.errors import ConfigError, MissingDependencyError
    from stylemotion.runtime.server import open_virtual_camera

    if importlib.util.find_spec("pyvirtualcam") is None:
        with pytest.raises(MissingDependencyError, match=r"stylemotion\[camera\]"):
            open_virtual_camera(32, 12)
    else:  # installed: without a v4l2loopback device the error says how to get one
        with pytest.raises(ConfigError, match="v4l2loopback"):
            open_virtual_camera(32, 12)


def test_the_http_surface_refuses_what_it_should_and_never_shows_a_traceback(G, dirs):
    """The security review's checks: loopback by default, size/type/rate limits, Host guard, no file system
    route, 404/405 for the rest, and a bug answered with a number, not a traceback."""
    assert ServerConfig().host == "127.0.0.1"
    from stylemotion.cli import build_parser

    assert build_parser().parse_args(["serve"]).http.startswith("127.0.0.1:")
    server = make_server(G, dirs, script="happy:1")
    with running(server) as port:
        before = stats(port)["generation"]
        for path in ["/nope", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/streams/..%2F..%2Fetc%2Fpasswd/stats",
                     "/static/page.html", "/streams/default/../../../etc/passwd"]:
            status, _, body = request(port, "GET", path)
            assert status == 404 and b"root:" not in body, (path, status, body[:200])
        assert request(port, "PUT", "/control", b"{}")[0] == 405
        status, _, body = request(port, "POST", "/control", b'{"emotion": "sad"}', {"Content-Type": "text/plain"})
        assert status == 415 and b"application/json" in body
        status, _, body = request(port, "GET", "/stats", headers={"Host": "evil.example:8080"})
        assert status == 403 and b"Host" in body
        assert request(port, "GET", "/stats", headers={"Host": f"localhost:{port}"})[0] == 200
        assert stats(port)["generation"] == before  # nothing refused changed the stream

        def broken():
            raise RuntimeError("secret detail /home/someone/model.pt")

        server.hub.stats = broken
        status, headers, body = request(port, "GET", "/stats")
        assert status == 500 and b"internal error #1" in body, body
        assert b"Traceback" not in body and b"secret" not in body and b"RuntimeError" not in body
        assert headers.get("X-Content-Type-Options") == "nosniff"
        del server.hub.stats
        assert stats(port)["server"]["errors"] == 1


def test_rate_limit_and_idle_streams(G, dirs):
    config = ServerConfig(port=0, fps=FPS, rate=20, burst=10, idle_timeout=1.0)
    server = build_server(G, directions=dirs, config=config, backend="torch")
    with running(server) as port:
        codes = [request(port, "GET", "/frame.jpg")[0] for _ in range(40)]
        assert 429 in codes and codes[0] != 429, codes
        status, headers, _ = next(r for r in (request(port, "GET", "/stats") for _ in range(40)) if r[0] == 429)
        assert headers.get("Retry-After") == "1"
        time.sleep(1.0)  # the bucket refills
        status, _, body = request(port, "POST", "/streams", b'{"seed": 3}')
        assert status == 201
        sid = json.loads(body)["id"]
        deadline = time.monotonic() + 15
        while sid in server.hub.streams:  # nobody watches it: closed after idle_timeout
            assert time.monotonic() < deadline, "an idle stream was never closed"
            time.sleep(0.2)
        assert request(port, "GET", f"/streams/{sid}/stats")[0] == 404
        assert stats(port)["server"]["idle_closed"] == 1
        assert "default" in server.hub.streams  # the default stream is never closed


def _photo_bytes(image, fmt="PNG", exif_orientation=None) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(image)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, fmt, exif=exif)
    else:
        im.save(buf, fmt)
    return buf.getvalue()


def test_use_my_photo_refuses_what_is_not_a_face_photo_and_embeds_one(G, dirs):
    from stylemotion.checkpoints.mtcnn import default_mtcnn_dir
    from stylemotion.errors import MissingDependencyError

    try:
        default_mtcnn_dir()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    from skimage import data

    config = ServerConfig(port=0, fps=FPS, photo_steps=12)
    server = build_server(G, directions=dirs, config=config, backend="torch")
    with running(server) as port:
        before = stats(port)["generation"]
        png = {"Content-Type": "image/png"}
        status, _, body = request(port, "POST", "/photo", b"hello", {"Content-Type": "text/plain"})
        assert status == 415, body
        status, _, body = request(port, "POST", "/photo", b"\x89PNG but not really", png)
        assert status == 422 and b"not a readable image" in body, body
        status, _, body = request(port, "POST", "/photo", _photo_bytes(data.astronaut(), "JPEG"), png)
        assert status == 422 and b"JPEG, not the PNG" in body, body
        status, _, body = request(port, "POST", "/photo", b"\0" * (9 * 2 ** 20), png)
        assert status == 413, body
        status, _, body = request(port, "POST", "/photo", _photo_bytes(data.coffee()), png)
        assert status == 422 and b"no face found" in body, body
        assert stats(port)["generation"] == before and stats(port)["photo"] is None  # nothing changed
        # A real face, stored rotated with an EXIF orientation tag (6: turn 90 degrees clockwise to view).
        rotated = np.ascontiguousarray(np.rot90(data.astronaut(), k=1))
        status, _, body = request(port, "POST", "/photo", _photo_bytes(rotated, "PNG"), png)
        assert status == 422, body  # lying on its side MTCNN finds no face: the EXIF turn below is what helps
        status, _, body = request(port, "POST", "/photo", _photo_bytes(rotated, "PNG", exif_orientation=6), png)
        assert status == 202, body
        assert json.loads(body)["faces"] == 1
        deadline = time.monotonic() + 120
        while (s := stats(port))["photo"]["state"] == "embedding":
            assert time.monotonic() < deadline, s["photo"]
            time.sleep(0.2)
        assert s["photo"]["state"] == "done" and s["photo"]["step"] == 12, s["photo"]
        assert s["generation"] == before + 1  # the stream moved to the new face (one control)


def test_the_default_stream_can_start_from_an_embedded_face(G, dirs, tmp_path):
    """serve --identity: the default stream's face is the latents file's row, not the seed's."""
    import torch

    from stylemotion.pipeline.latents_io import write_latents

    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3))).detach()
    lat = write_latents(tmp_path / "lat.npz", ws=ws.numpy(), frame_index=np.arange(2), source=np.array(["a", "b"]),
                        loss=np.zeros(2))
    from stylemotion.commands import _identity_for

    server = build_server(G, directions=dirs, config=ServerConfig(port=0, fps=FPS), backend="torch",
                          identity=_identity_for(G, f"{lat}:1"))
    with running(server):
        planner = server.hub.streams["default"].planner
        assert torch.allclose(planner.identity.cpu(), ws[1:2])


def test_a_stream_slows_down_rather_than_freezing_when_every_frame_is_late():
    """Frames later than max_late are dropped (a live stream shows the present), but when nothing was shown for
    STALL seconds the newest late frame is shown: on an overloaded machine the stream slows down, never stops."""
    from stylemotion.runtime.hub import STALL, HubFrame, HubStream

    def frame(i, due):
        return HubFrame(index=i, due=due, image=np.zeros((2, 2, 3), np.uint8), emotion=None, generation=0)

    s = HubStream("s", planner=None, fps=10.0, start=100.0)
    s.ready.extend([frame(0, 100.0), frame(1, 100.1)])
    assert s.latest(now=100.5, max_late=0.25) is None  # both late, but the stream only just started
    assert s.stats.dropped_late == 2
    s.ready.extend([frame(2, 100.2), frame(3, 100.3)])
    shown = s.latest(now=100.0 + STALL + 0.5, max_late=0.25)  # nothing shown for longer than STALL
    assert shown is not None and shown.index == 3 and s.stats.dropped_late == 3 and s.stats.delivered == 1
    s.ready.append(frame(4, 100.4))
    assert s.latest(now=100.0 + STALL + 0.6, max_late=0.25) is None  # shown a moment ago: late frames drop again
