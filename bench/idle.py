"""What a node costs: CPU and RSS of an idle node process, and its RSS under load.

    python -m bench idle [--seconds 60] [--jobs 20000] [--dsn ...]

Reads the node process's own counters in /proc (Linux): CPU time (user + system) over the
idle window, resident memory at rest, and the peak resident memory (VmHWM) after it has
drained `jobs` no-op jobs.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.common import fresh_app
from bench.run import _node_process, _wait_completed, _wait_nodes
from shigoto import JobSpec

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def memory_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


async def run(dsn: str, seconds: float, jobs: int) -> dict[str, Any]:
    async with fresh_app(dsn) as app:
        process = _node_process(dsn, app.config.schema, 10)
        try:
            await _wait_nodes(app, 1)
            await asyncio.sleep(2)  # past start-up (imports, first heartbeat)
            cpu_before, began = cpu_seconds(process.pid), time.monotonic()
            await asyncio.sleep(seconds)
            idle_cpu = cpu_seconds(process.pid) - cpu_before
            elapsed = time.monotonic() - began
            idle_rss = memory_mb(process.pid, "VmRSS")
            await app.insert_all([JobSpec.build("bench.noop", {"n": i}) for i in range(jobs)])
            await _wait_completed(app)
            loaded_peak = memory_mb(process.pid, "VmHWM")
            after_rss = memory_mb(process.pid, "VmRSS")
        finally:
            process.terminate()
            process.wait()
    return {
        "idle_seconds": round(elapsed, 1),
        "idle_cpu_percent": round(100 * idle_cpu / elapsed, 3),
        "idle_rss_mb": round(idle_rss, 1),
        "load_jobs": jobs,
        "peak_rss_mb": round(loaded_peak, 1),
        "rss_after_load_mb": round(after_rss, 1),
    }
