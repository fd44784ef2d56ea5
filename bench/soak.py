"""Soak the live server: ``stylemotion serve`` with the bundled model under a mix of clients for a long time, watching
its memory, file descriptors, threads and queues.

    python bench/soak.py --seconds 3600            # the record (make soak)
    python bench/soak.py --seconds 40 --warmup 10  # what the test runs

The server runs in its own process (the CLI, as a user starts it). The clients, each in a thread: fast MJPEG
viewers that reconnect now and then; slow viewers that read a frame a second; viewers that vanish mid-stream
without a word; sessions created (``POST /streams``), watched and deleted, some abandoned (the server closes them
after ``--idle-timeout``); valid and invalid control messages, each with the status it must get (200, 400, 404, 405,
413, 415, 403); frame and stats pollers. Every few seconds the sampler reads the server's RSS, open file
descriptors and threads from /proc and its queue depth, dropped frames and counters from ``/stats``.

It fails (exit 1) on RSS growth over ``--max-rss-growth`` (5 %) between the first window after warm-up and the last
one (medians), on file descriptors or threads growing past the warm-up's highest plus a small allowance, on any
response other than the expected one, on a server error or traceback, or on a hub error. Writes
``<out>/soak-<date>.json`` (figures and samples), ``.md`` and a ``.png`` chart of RSS, fds and threads over time.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stylemotion.atomic import atomic_path  # noqa: E402

EMOTIONS = ["happy", "sad", "surprise", "angry", "fear", "neutral"]
# Invalid requests and the status each must get: (method, path, body, headers, status).
INVALID = [
    ("POST", "/control", b"{not json", None, 400),
    ("POST", "/control", b'{"emotion": "hungry"}', None, 400),
    ("POST", "/control", b'{"intensity": 1e999}', None, 400),
    ("POST", "/control", b'{"mood": "sad"}', None, 400),
    ("POST", "/control", b"[1, 2]", None, 400),
    ("POST", "/control", b'{"emotion": "sad"' + b" " * (70 * 1024) + b"}", None, 413),
    ("POST", "/control", b'{"emotion": "sad"}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/streams", b'{"seed": -1}', None, 400),
    ("GET", "/streams/no-such-stream/stats", None, None, 404),
    ("GET", "/../../etc/passwd", None, None, 404),
    ("GET", "/nope", None, None, 404),
    ("PUT", "/control", b"{}", None, 405),
    ("DELETE", "/streams/default", None, None, 400),
    ("GET", "/stats", None, {"Host": "evil.example"}, 403),
]


class Tally:
    """Thread-safe counters of what the clients did and every unexpected answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.unexpected: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def bad(self, what: str) -> None:
        with self.lock:
            self.counts["unexpected"] += 1
            if len(self.unexpected) < 50:
                self.unexpected.append(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if headers is None:
            headers = {"Content-Type": "application/json"} if method == "POST" else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_mjpeg(port: int, path: str, seconds: float, pause: float, stop: threading.Event) -> int:
    """Read multipart JPEG parts for ``seconds``, sleeping ``pause`` after each; returns the parts read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            return -resp.status
        parts, end = 0, time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            line = resp.fp.readline()
            if not line:
                break  # the stream ended (a deleted or reaped session)
            if line.lower().startswith(b"content-length:"):
                resp.fp.read(int(line.split(b":")[1]) + 2)
                parts += 1
                if pause:
                    time.sleep(pause)
        return parts
    finally:
        conn.close()


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


# ------------------------------------------------------------------------------------------------ the clients


def clients(port: int, stop: threading.Event, tally: Tally, rng_seed: int) -> list[threading.Thread]:
    def loop(name, body):
        def run():
            rng = random.Random(f"{rng_seed}-{name}")
            while not stop.is_set():
                try:
                    body(rng)
                except (OSError, http.client.HTTPException) as exc:
                    if not stop.is_set():
                        tally.bad(f"{name}: {type(exc).__name__}: {exc}")
                        time.sleep(0.5)
        return threading.Thread(target=run, name=name, daemon=True)

    def viewer(kind: str, seconds: tuple[float, float], pause: float):
        def body(rng):
            n = read_mjpeg(port, "/stream.mjpg", rng.uniform(*seconds), pause, stop)
            tally.add(f"{kind}_viewer_frames", max(n, 0))
            tally.add("viewer_sessions")
            if n < 0:
                tally.bad(f"{kind} viewer got status {-n}")
        return body

    fast_viewer, slow_viewer = viewer("fast", (10, 30), 0.0), viewer("slow", (5, 20), 1.0)  # slow: a frame a second

    def vanishing_viewer(rng):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.recv(rng.choice([100, 2000, 20000]))
            time.sleep(rng.uniform(0, 0.5))
        finally:
            s.close()  # gone without a word, mid-frame
        tally.add("vanished_viewers")
        time.sleep(rng.uniform(0.1, 0.5))

    def sessions(rng):
        body = {"seed": rng.randrange(2 ** 32)}
        if rng.random() < 0.5:
            body["script"] = ",".join(f"{rng.choice(EMOTIONS)}:{rng.uniform(0.5, 2):.1f}" for _ in range(3))
        status, text = request(port, "POST", "/streams", json.dumps(body).encode())
        if status == 503:  # at the stream cap (abandoned sessions wait for the idle timeout): expected
            tally.add("sessions_refused_at_cap")
            time.sleep(2)
            return
        if status != 201:
            tally.bad(f"POST /streams -> {status}: {text[:200]!r}")
            return
        sid = json.loads(text)["id"]
        tally.add("sessions_created")
        n = read_mjpeg(port, f"/streams/{sid}/stream.mjpg", rng.uniform(1, 4), 0.0, stop)
        if n < 0:
            tally.bad(f"viewer of session {sid} got status {-n}")
        if rng.random() < 0.2:
            tally.add("sessions_abandoned")  # the server's idle timeout must close it
        else:
            status, text = request(port, "DELETE", f"/streams/{sid}")
            if status != 200:
                tally.bad(f"DELETE /streams/{sid} -> {status}: {text[:200]!r}")
            tally.add("sessions_deleted")
        time.sleep(rng.uniform(0.2, 1.0))

    def controls(rng):
        if rng.random() < 0.6:
            body = {"emotion": rng.choice(EMOTIONS)}
            if rng.random() < 0.5:
                body["intensity"] = round(rng.uniform(-10, 10), 2)
            status, text = request(port, "POST", "/control", json.dumps(body).encode())
            if status != 200:
                tally.bad(f"valid control {body} -> {status}: {text[:200]!r}")
            tally.add("controls_valid")
        else:
            method, path, body, headers, expected = rng.choice(INVALID)
            status, text = request(port, method, path, body, headers)
            if status != expected:
                tally.bad(f"{method} {path} -> {status}, expected {expected}: {text[:200]!r}")
            elif b"Traceback" in text:
                tally.bad(f"{method} {path}: a traceback in the answer")
            tally.add("requests_invalid")
        time.sleep(rng.uniform(0.05, 0.3))

    def pollers(rng):
        status, _ = request(port, "GET", "/frame.jpg")
        if status not in (200, 503):  # 503: no frame yet (start-up)
            tally.bad(f"GET /frame.jpg -> {status}")
        tally.add("frames_polled")
        if rng.random() < 0.2:
            status, _ = request(port, "GET", "/")
            if status != 200:
                tally.bad(f"GET / -> {status}")
        time.sleep(0.2)

    kinds = [("fast-1", fast_viewer), ("fast-2", fast_viewer), ("slow-1", slow_viewer), ("slow-2", slow_viewer),
             ("vanish", vanishing_viewer), ("sessions", sessions), ("controls", controls), ("poll", pollers)]
    return [loop(name, body) for name, body in kinds]


# ------------------------------------------------------------------------------------------------ the run


def soak(args) -> dict:
    port = free_port()
    log_path = Path(args.out) / f".soak-server-{os.getpid()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "stylemotion", "serve", args.model, "--http", f"127.0.0.1:{port}", "--fps",
           str(args.fps), "--idle-timeout", str(args.idle_timeout), "--max-streams", "6"]
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
        threads = clients(port, stop, tally, args.seed)
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
            sample = {"t": round(elapsed, 1), **proc_figures(server.pid)}
            status, text = request(port, "GET", "/stats")
            if status == 200:
                s = json.loads(text)
                sample.update(queue=s["queue"], dropped=s["dropped"], frames=s["frames"], streams=s["hub"]["streams"],
                              hub_error=s["hub"]["error"], viewers=s["viewers"], fps=s["fps"], **s["server"])
            samples.append(sample)
            if bar is not None:
                bar.update(int(min(args.seconds, time.monotonic() - t0)) - bar.n)
            time.sleep(args.sample)
        if bar is not None:
            bar.close()
        stop.set()
        for t in threads:
            t.join(timeout=40)
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


def _median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def judge(args, samples: list[dict], tally: Tally, final: dict, server_log: str, exit_code: int) -> dict:
    after = [s for s in samples if s["t"] >= args.warmup]
    window = max(3, int(0.05 * len(after)))
    first, last = after[:window], after[-window:]
    rss0, rss1 = _median([s["rss_kib"] for s in first]), _median([s["rss_kib"] for s in last])
    growth = (rss1 - rss0) / rss0 if rss0 else float("nan")
    warm_fds = max((s["fds"] for s in samples if s["t"] < args.warmup + 1e-9), default=0)
    warm_threads = max((s["threads"] for s in samples if s["t"] < args.warmup + 1e-9), default=0)
    end_fds, end_threads = max(s["fds"] for s in last), max(s["threads"] for s in last)
    tracebacks = server_log.count("Traceback (most recent call last)")
    failures = []
    if len(after) < 2 * window:
        failures.append(f"too few samples after warm-up ({len(after)}): run longer or sample more often")
    if not growth <= args.max_rss_growth:
        failures.append(f"RSS grew {100 * growth:.1f} % after warm-up (limit {100 * args.max_rss_growth:g} %)")
    if end_fds > warm_fds + args.fd_allowance:
        failures.append(f"open file descriptors grew from {warm_fds} (warm-up's highest) to {end_fds}")
    if end_threads > warm_threads + args.thread_allowance:
        failures.append(f"threads grew from {warm_threads} (warm-up's highest) to {end_threads}")
    if tally.counts["unexpected"]:
        failures.append(f"{tally.counts['unexpected']} unexpected answers, e.g. {tally.unexpected[:3]}")
    if final["server"]["errors"] or tracebacks:
        failures.append(f"server errors: {final['server']['errors']}, tracebacks in its log: {tracebacks}")
    if final["hub"]["error"]:
        failures.append(f"hub error: {final['hub']['error']}")
    if exit_code not in (0, -15):
        failures.append(f"the server ended with exit code {exit_code} on SIGTERM")
    return {
        "date": dt.date.today().isoformat(), "model": args.model, "fps": args.fps, "seconds": args.seconds,
        "warmup_seconds": args.warmup, "sample_every_seconds": args.sample, "cpu": _cpu_name(),
        "cores": os.cpu_count(), "passed": not failures, "failures": failures,
        "rss_mib": {"after_warmup": round(rss0 / 1024, 1), "end": round(rss1 / 1024, 1),
                    "growth_percent": round(100 * growth, 2), "limit_percent": 100 * args.max_rss_growth,
                    "max": round(max(s["rss_kib"] for s in samples) / 1024, 1)},
        "fds": {"warmup_max": warm_fds, "end_max": end_fds, "max": max(s["fds"] for s in samples)},
        "threads": {"warmup_max": warm_threads, "end_max": end_threads, "max": max(s["threads"] for s in samples)},
        "queue_depth": {"max": max(s.get("queue", 0) for s in samples),
                        "mean": round(statistics.fmean(s.get("queue", 0) for s in samples), 2)},
        "default_stream": {"frames": final["frames"], "dropped": final["dropped"], "fps": final["fps"],
                           "target_fps": final["target_fps"]},
        "requests_served": final["server"]["requests"], "server_counters": final["server"],
        "server_errors": final["server"]["errors"], "server_tracebacks": tracebacks,
        "clients": dict(sorted(tally.counts.items())), "unexpected": tally.unexpected,
        "samples": samples,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def chart(path: Path, result: dict) -> None:
    """RSS, open fds and threads against time, the warm-up shaded (Pillow)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from stylemotion.imaging import save_png

    samples = result["samples"]
    panels = [("RSS (MiB)", [s["rss_kib"] / 1024 for s in samples]), ("open fds", [s["fds"] for s in samples]),
              ("threads", [s["threads"] for s in samples])]
    width, ph, left = 900, 160, 80
    img = Image.new("RGB", (width, 40 + len(panels) * (ph + 30)), "white")
    draw = ImageDraw.Draw(img)
    verdict = "passed" if result["passed"] else "FAILED"
    draw.text((left, 8), f"soak {result['seconds'] / 60:.1f} min, {result['model']}, RSS growth "
                         f"{result['rss_mib']['growth_percent']:+.2f} % after warm-up: {verdict}", fill="black")
    ts = [s["t"] for s in samples]
    t_max = max(ts[-1], 1e-9)
    for i, (label, ys) in enumerate(panels):
        top = 30 + i * (ph + 30)
        lo, hi = min(ys), max(ys)
        pad = max((hi - lo) * 0.1, 1e-9 + 0.5)
        lo, hi = lo - pad, hi + pad
        x = lambda t: left + (t / t_max) * (width - left - 20)  # noqa: E731
        y = lambda v: top + ph - (v - lo) / (hi - lo) * ph  # noqa: E731
        draw.rectangle([x(0), top, x(min(result["warmup_seconds"], t_max)), top + ph], fill=(235, 235, 235))
        draw.line([(left, top), (left, top + ph), (width - 20, top + ph)], fill="black")
        draw.text((4, top + ph // 2 - 6), label, fill="black")
        draw.text((left - 60, top - 2), f"{hi:.0f}", fill="gray")
        draw.text((left - 60, top + ph - 12), f"{lo:.0f}", fill="gray")
        draw.line([(x(t), y(v)) for t, v in zip(ts, ys)], fill=(31, 119, 180), width=2)
        draw.text((width - 80, top + ph + 4), f"{t_max:.0f} s", fill="gray")
    save_png(path, np.asarray(img))


def write(result: dict, out: Path) -> Path:
    stem = f"soak-{result['date']}" + (f"-{int(result['seconds'])}s" if result["seconds"] < 3600 else "")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    r = result
    lines = [f"# Soak of `stylemotion serve {r['model']}`: {r['seconds'] / 60:.1f} minutes, "
             f"{'passed' if r['passed'] else 'FAILED'}", "",
             f"{r['cpu']}, {r['cores']} cores; {r['fps']:g} fps; warm-up {r['warmup_seconds']:g} s; "
             f"`python bench/soak.py --seconds {r['seconds']:g}`.", "",
             "| figure | value |", "|---|---|",
             f"| RSS after warm-up / end / max (MiB) | {r['rss_mib']['after_warmup']} / {r['rss_mib']['end']} / "
             f"{r['rss_mib']['max']} |",
             f"| RSS growth after warm-up | {r['rss_mib']['growth_percent']:+.2f} % (limit {r['rss_mib']['limit_percent']:g} %) |",
             f"| open fds: warm-up max / end max / max | {r['fds']['warmup_max']} / {r['fds']['end_max']} / {r['fds']['max']} |",
             f"| threads: warm-up max / end max / max | {r['threads']['warmup_max']} / {r['threads']['end_max']} / "
             f"{r['threads']['max']} |",
             f"| queue depth (default stream): mean / max | {r['queue_depth']['mean']} / {r['queue_depth']['max']} |",
             f"| default stream: frames / dropped / fps (target) | {r['default_stream']['frames']} / "
             f"{r['default_stream']['dropped']} / {r['default_stream']['fps'] or 0:.2f} ({r['fps']:g}) |",
             f"| requests served | {r['requests_served']} |",
             f"| rate-limited / refused Host / refused type | {r['server_counters']['rate_limited']} / "
             f"{r['server_counters']['refused_host']} / {r['server_counters']['refused_type']} |",
             f"| streams closed when idle | {r['server_counters']['idle_closed']} |",
             f"| server errors / tracebacks | {r['server_errors']} / {r['server_tracebacks']} |",
             f"| unexpected answers | {r['clients'].get('unexpected', 0)} |", "",
             "Clients: " + ", ".join(f"{k} {v}" for k, v in r["clients"].items()), ""]
    if r["failures"]:
        lines += ["Failures:", *[f"- {f}" for f in r["failures"]], ""]
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines))
    chart(out / f"{stem}.png", result)
    return out / f"{stem}.json"


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
