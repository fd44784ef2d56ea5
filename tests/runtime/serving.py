"""Serving helpers shared by the server's tests: a server in a thread on a free port, plain HTTP requests."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time


@contextlib.contextmanager
def serving_app(app, host: str = "127.0.0.1"):
    """An aiohttp ``app`` on a free port of ``host``, in a thread with its own event loop; yields ``(port, loop)``
    and cleans the app up on that loop at the end."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready: list = []

    def main():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, host, 0)
        loop.run_until_complete(site.start())
        ready.append(runner.addresses[0][1])
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not ready:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield ready[0], loop
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@contextlib.contextmanager
def running(server, host: str = "127.0.0.1"):
    """The server's app on a free port of ``host`` (loopback unless asked); yields the port (requests go to
    127.0.0.1 either way)."""
    with serving_app(server.app(), host) as (port, _):
        yield port


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if headers is None:
            headers = {"Content-Type": "application/json"} if method == "POST" else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def stats(port, path="/stats"):
    return json.loads(request(port, "GET", path)[2])
