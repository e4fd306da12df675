"""A node process for benchmarks: `python -m bench.node` (SHIGOTO_DSN, SHIGOTO_SCHEMA,
SHIGOTO_QUEUES from the environment). Its one worker, `bench.noop`, returns the wall-clock
time it started, so latency can be read off the jobs table afterwards."""

from __future__ import annotations

import time

from shigoto import Shigoto
from shigoto.cli import run_on_fastest_loop, serve

app = Shigoto()


@app.worker(name="bench.noop")
async def noop(n: int = 0) -> float:
    return time.time()


if __name__ == "__main__":
    run_on_fastest_loop(serve(app))  # as `shigoto worker` runs it: uvloop when installed
