"""What a soak found: the verdict (``judge``: growth of RSS, file descriptors and threads after warm-up, unexpected
answers, server errors) and the record it leaves (``write``: ``soak-<date>.json``, ``.md`` and the ``.png`` chart)."""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
from pathlib import Path

from bench.soak_chart import chart
from bench.soak_clients import Tally
from bench.soak_sampling import cpu_name
from stylemotion.atomic import atomic_path


def _median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def judge(args, samples: list[dict], tally: Tally, final: dict, server_log: str, exit_code: int) -> dict:
    """The result of a soak: every figure, the samples, and ``passed`` with the ``failures`` that decided it.
    ``args``: the limits (``warmup``, ``max_rss_growth``, ``fd_allowance``, ``thread_allowance``) and the run's
    description (``model``, ``fps``, ``seconds``, ``sample``)."""
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
    rtc = final.get("webrtc") or {}
    if rtc.get("peers") or rtc.get("encoders"):
        failures.append(f"WebRTC left open after the clients stopped: {rtc.get('peers')} peer connections, "
                        f"{rtc.get('encoders')} encoders")
    if rtc.get("encoder_errors"):
        failures.append(f"{rtc['encoder_errors']} WebRTC encoder errors")
    if final["hub"]["error"]:
        failures.append(f"hub error: {final['hub']['error']}")
    if exit_code not in (0, -15):
        failures.append(f"the server ended with exit code {exit_code} on SIGTERM")
    return {
        "date": dt.date.today().isoformat(), "model": args.model, "fps": args.fps, "seconds": args.seconds,
        "warmup_seconds": args.warmup, "sample_every_seconds": args.sample, "cpu": cpu_name(),
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
        "webrtc": {k: rtc.get(k) for k in ("peers", "encoders", "offers", "answered", "refused_offers",
                                           "frames_encoded", "keyframes", "viewer_resets", "encoder_errors")}
        if rtc else None,
        "server_errors": final["server"]["errors"], "server_tracebacks": tracebacks,
        "clients": dict(sorted(tally.counts.items())), "unexpected": tally.unexpected,
        "samples": samples,
    }


def write(result: dict, out: Path) -> Path:
    """Write ``<out>/soak-<date>[-<seconds>s].json``, ``.md`` and ``.png``; returns the JSON's path."""
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
             *([f"| WebRTC: offers answered / frames encoded / peers and encoders left at the end | "
                f"{r['webrtc']['answered']} / {r['webrtc']['frames_encoded']} / {r['webrtc']['peers']} and "
                f"{r['webrtc']['encoders']} |"] if r.get("webrtc") else []),
             f"| server errors / tracebacks | {r['server_errors']} / {r['server_tracebacks']} |",
             f"| unexpected answers | {r['clients'].get('unexpected', 0)} |", "",
             "Clients: " + ", ".join(f"{k} {v}" for k, v in r["clients"].items()), ""]
    if r["failures"]:
        lines += ["Failures:", *[f"- {f}" for f in r["failures"]], ""]
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(lines))
    chart(out / f"{stem}.png", result)
    return out / f"{stem}.json"
