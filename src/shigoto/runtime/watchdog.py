"""The watchdog: notices, from a thread of its own, when the event loop has not run for
longer than `watchdog_threshold`, and logs one warning naming what holds it — usually an
`async def` job that calls blocking code (`time.sleep`, a synchronous client) or computes
without awaiting.

    watchdog = Watchdog(threshold=1.0, describe=node.describe_task)
    watchdog.start()        # on the event loop it watches
    ...
    watchdog.stop()

While the loop is held nothing else of the node runs on it: other jobs, job timeouts,
claims, outcome writes. The heartbeat does not depend on it, so the node does not look
dead meanwhile. The loop sets a timestamp every half threshold (one timer, whatever the
number of jobs); the thread looks at it just as often.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("shigoto.watchdog")


class Watchdog:
    """Warns when the event loop it was started on is held longer than `threshold`;
    `describe(task)` names the task the loop is running then (None: no task)."""

    def __init__(
        self, *, threshold: float, describe: Callable[[asyncio.Task[object] | None], str]
    ) -> None:
        self._threshold = threshold
        self._period = min(max(threshold / 2, 0.01), 60.0)  # bounded: timers and waits
        self._describe = describe
        self._ran = time.monotonic()  # when the loop last ran its timer
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped.clear()
        self._tick()
        threading.Thread(target=self._watch, name="shigoto-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        assert self._loop is not None
        self._ran = time.monotonic()
        self._timer = self._loop.call_later(self._period, self._tick)

    def _held(self) -> float:
        """How long the loop has been held: since its timer was due."""
        return time.monotonic() - self._ran - self._period

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        stall: float | None = None  # the `_ran` of the stall warned about
        holder = ""
        while not self._stopped.wait(self._period):
            if loop.is_closed():
                return
            if stall is not None and self._ran != stall:
                logger.info("%s let the event loop go after about %.1fs", holder, self._ran - stall)
                stall = None
            held = self._held()
            if stall is None and held > self._threshold and loop.is_running():
                stall = self._ran
                # Read from this thread: the loop's thread is busy with that very task.
                holder = self._describe(asyncio.current_task(loop))
                logger.warning(
                    "%s has held the event loop for %.1fs: nothing else on this node runs "
                    "meanwhile (other jobs, timeouts, claims); await instead of blocking, "
                    "or make the worker a plain def, which runs in a thread",
                    holder,
                    held,
                )
