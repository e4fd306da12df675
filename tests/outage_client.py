"""A long-lived client for outage tests (`python -m tests.outage_client`): inserts
`ledger.noop` jobs in a loop on pooled connections, with the async API (a few at once)
and with the sync facade (from a thread), and prints one JSON line per call:

    {"via": "async", "ok": true, "started": 1234.4, "at": 1234.5}
    {"via": "sync", "ok": false, "started": 1233.1, "at": 1235.1, "error": "..."}

`started` and `at` are `time.monotonic()` when the call began and returned: one clock
for every process of the machine. Configured from SHIGOTO_* variables, as a node is.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any

from tests.nodeapp import app, noop

PAUSE = 0.05  # seconds between rounds
_print_lock = threading.Lock()


def say(via: str, started: float, error: BaseException | None) -> None:
    line: dict[str, Any] = {"via": via, "ok": error is None, "started": started}
    line["at"] = time.monotonic()
    if error is not None:
        line["error"] = f"{type(error).__name__}: {str(error).strip()[:200]}"
    with _print_lock:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def sync_loop() -> None:
    while True:  # until the test kills the process
        started = time.monotonic()
        try:
            app.sync.insert(noop.new({}))
        except Exception as error:
            say("sync", started, error)
        else:
            say("sync", started, None)
        time.sleep(PAUSE)


async def insert_once() -> None:
    started = time.monotonic()
    try:
        await app.insert(noop.new({}))
    except Exception as error:
        say("async", started, error)
    else:
        say("async", started, None)


async def main() -> None:
    thread = threading.Thread(target=sync_loop, daemon=True)
    thread.start()
    while True:  # until the test kills the process
        await asyncio.gather(insert_once(), insert_once(), insert_once())
        await asyncio.sleep(PAUSE)


if __name__ == "__main__":
    asyncio.run(main())
