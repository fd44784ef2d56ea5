"""What the soak samples every few seconds: the server process's RSS, open file descriptors and threads from
/proc, and its queue depth, dropped frames and counters from ``/stats``."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.soak_clients import request


def proc_figures(pid: int) -> dict:
    """``{"rss_kib", "threads", "fds"}`` of process ``pid`` (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def sample(pid: int, port: int, elapsed: float) -> dict:
    """One sample at ``elapsed`` seconds: /proc figures, and the default stream's and the server's figures when
    ``/stats`` answers."""
    figures = {"t": round(elapsed, 1), **proc_figures(pid)}
    status, text = request(port, "GET", "/stats")
    if status == 200:
        s = json.loads(text)
        figures.update(queue=s["queue"], dropped=s["dropped"], frames=s["frames"], streams=s["hub"]["streams"],
                       hub_error=s["hub"]["error"], viewers=s["viewers"], fps=s["fps"], **s["server"])
    return figures


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
