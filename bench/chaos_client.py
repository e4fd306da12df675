"""A client process for the chaos harness: a long-lived program (a web app, say) that
keeps inserting jobs on pooled connections, with the async API and with the sync facade
from a thread, while the harness restarts the server and purges connections under it.

    python -m bench.chaos_client --id 100 --seconds 40

It reports on stdout (JSON) which inserts committed (meta {"producer": id, "seq": n} for
the async ones, id + 1 for the sync ones, as the producers do) and every call that
raised, with when it started and ended (`time.monotonic()`, one clock for every process
of the machine), so the harness can tell a call cut off by a fault from one that failed
after the server was back. A failed insert is uncertain: it may have committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.chaos_app import build
from shigoto import JobSpec, Shigoto

BURST = 3  # async inserts at once, so that the pool holds several connections
PAUSE = 0.1  # seconds between rounds


class Tally:
    """What one producer id saw: the seqs that committed, those that may have, the errors."""

    def __init__(self, producer: int) -> None:
        self.producer = producer
        self.seq = 0
        self.confirmed: list[int] = []
        self.uncertain: list[int] = []
        self.errors: list[dict[str, Any]] = []

    def spec(self) -> tuple[int, JobSpec]:
        seq, self.seq = self.seq, self.seq + 1
        return seq, build("chaos.fast", meta={"producer": self.producer, "seq": seq})

    def failed(self, seq: int, started: float, error: BaseException, via: str) -> None:
        self.uncertain.append(seq)
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        self.errors.append(
            {
                "via": via,
                "started": started,
                "ended": time.monotonic(),
                "error": f"{type(error).__name__}: {first_line}",
            }
        )

    def report(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "confirmed": self.confirmed,
            "uncertain": self.uncertain,
            "errors": self.errors,
        }


async def _insert(tally: Tally, call: Callable[[JobSpec], Awaitable[Any]], via: str) -> None:
    seq, spec = tally.spec()
    started = time.monotonic()
    try:
        await call(spec)
    except Exception as error:
        tally.failed(seq, started, error, via)
    else:
        tally.confirmed.append(seq)


def _sync_loop(app: Shigoto, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        seq, spec = tally.spec()
        started = time.monotonic()
        try:
            app.sync.insert(spec)
        except Exception as error:
            tally.failed(seq, started, error, "sync")
        else:
            tally.confirmed.append(seq)
        time.sleep(PAUSE)


async def run(producer: int, seconds: float) -> list[dict[str, Any]]:
    app = Shigoto()
    async_tally, sync_tally = Tally(producer), Tally(producer + 1)
    until = time.monotonic() + seconds
    thread = threading.Thread(target=_sync_loop, args=(app, sync_tally, until))
    thread.start()
    while time.monotonic() < until:
        await asyncio.gather(*(_insert(async_tally, app.insert, "async") for _ in range(BURST)))
        await asyncio.sleep(PAUSE)
    await asyncio.to_thread(thread.join)
    await app.close()
    return [async_tally.report(), sync_tally.report()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(run(options.id, options.seconds))))


if __name__ == "__main__":
    main()
