"""Soak the live server: ``stylemotion serve`` with the bundled model under a mix of clients for a long time, watching
its memory, file descriptors, threads and queues.

    python bench/soak.py --seconds 3600            # the record (make soak)
    python bench/soak.py --seconds 40 --warmup 10  # what the test runs

The server runs in its own process (the CLI, as a user starts it). The clients, each in a thread: fast MJPEG
viewers that reconnect now and then; slow viewers that read a frame a second; viewers that vanish mid-stream
without a word; WebRTC viewers (aiortc) that come and go, in a long soak some vanishing without closing; sessions
created (``POST /streams``), watched and deleted, some abandoned (the server closes them
after ``--idle-timeout``); valid and invalid control messages, each with the status it must get (200, 400, 404, 405,
413, 415, 403); frame and stats pollers. Every few seconds the sampler reads the server's RSS, open file
descriptors and threads from /proc and its queue depth, dropped frames and counters from ``/stats``.

It fails (exit 1) on RSS growth over ``--max-rss-growth`` (5 %) between the first window after warm-up and the last
one (medians), on file descriptors or threads growing past the warm-up's highest plus a small allowance, on any
response other than the expected one, on a server error or traceback, or on a hub error. Writes
``<out>/soak-<date>.json`` (figures and samples), ``.md`` and a ``.png`` chart of RSS, fds and threads over time.

This file runs the soak; the parts live beside it: ``soak_clients.py`` (the client mix), ``soak_sampling.py``
(/proc and ``/stats``), ``soak_report.py`` (the verdict, the JSON and Markdown) and ``soak_chart.py`` (the chart).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak_clients import Tally, clients, free_port, request  # noqa: E402
from bench.soak_report import judge, write  # noqa: E402
from bench.soak_sampling import sample  # noqa: E402


def soak(args) -> dict:
    """Start the server, run the clients for ``args.seconds`` while sampling, stop both, and judge."""
    port = free_port()
    log_path = Path(args.out) / f".soak-server-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "stylemotion", "serve", args.model, "--http", f"127.0.0.1:{port}", "--fps",
           str(args.fps), "--idle-timeout", str(args.idle_timeout), "--max-streams", "6"]
    if args.webrtc:
        cmd.append("--webrtc")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if request(port, "GET", "/stats", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer within 120 s")
            time.sleep(0.2)
        stop, tally = threading.Event(), Tally()
        # WebRTC viewers that vanish are noticed only when ICE consent expires (30 s): long soaks only
        threads = clients(port, stop, tally, args.seed, webrtc=args.webrtc, vanishing_webrtc=args.seconds >= 300)
        for t in threads:
            t.start()
        samples, t0 = [], time.monotonic()
        try:
            from tqdm import tqdm

            bar = tqdm(total=int(args.seconds), unit="s", desc="soak", disable=args.quiet)
        except ImportError:
            bar = None
        while (elapsed := time.monotonic() - t0) < args.seconds:
            if server.poll() is not None:
                tally.bad(f"the server exited with {server.returncode}")
                break
            samples.append(sample(server.pid, port, elapsed))
            if bar is not None:
                bar.update(int(min(args.seconds, time.monotonic() - t0)) - bar.n)
            time.sleep(args.sample)
        if bar is not None:
            bar.close()
        stop.set()
        for t in threads:
            t.join(timeout=40)
        final = json.loads(request(port, "GET", "/stats")[1])
        deadline = time.monotonic() + 60  # vanished WebRTC viewers are noticed by ICE consent (30 s): no leak after
        while args.webrtc and (final.get("webrtc") or {}).get("peers", 0) + (final.get("webrtc") or {}).get(
                "encoders", 0) and time.monotonic() < deadline:
            time.sleep(1.0)
            final = json.loads(request(port, "GET", "/stats")[1])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    server_log = log_path.read_text(errors="replace")
    log_path.unlink(missing_ok=True)
    return judge(args, samples, tally, final, server_log, server.returncode)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3600)
    p.add_argument("--warmup", type=float, default=None, help="seconds before the baseline (default 10 %%, >= 10)")
    p.add_argument("--sample", type=float, default=None, help="seconds between samples (default: 200 samples)")
    p.add_argument("--model", default="digiface-64")
    p.add_argument("--fps", type=float, default=12.0)
    p.add_argument("--idle-timeout", type=float, default=None, help="the server's (default: seconds / 20, 5..60)")
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    p.add_argument("--fd-allowance", type=int, default=8, help="fds above the warm-up's highest that still pass")
    p.add_argument("--thread-allowance", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-webrtc", dest="webrtc", action="store_false",
                   help="no WebRTC viewers (they need aiortc: the server extra)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else max(10.0, 0.1 * args.seconds)
    args.sample = args.sample if args.sample is not None else max(0.5, args.seconds / 200)
    args.idle_timeout = args.idle_timeout or min(60.0, max(5.0, args.seconds / 20))
    result = soak(args)
    path = write(result, Path(args.out))
    print(f"wrote {path} (.md, .png): RSS growth {result['rss_mib']['growth_percent']:+.2f} %, "
          f"{result['requests_served']} requests, {result['clients'].get('unexpected', 0)} unexpected answers, "
          f"{'passed' if result['passed'] else 'FAILED: ' + '; '.join(result['failures'])}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
