"""The loop every periodic component shares: do a step, wait, do it again.

    loop = Periodic(
        prune_once,                       # async () -> float | None
        interval=60.0,
        logger=logging.getLogger("shigoto.pruner"),
        failed="pruning failed, will try again",
        at_once=False,                    # the first step after one interval
        only_if=lambda: leader.is_leader, # skipped (and waited out) on other nodes
    )
    await loop.run()                      # until cancelled; loop.poke() wakes it early

Between steps it waits `interval` seconds, or what the step returned (a float: the seconds
until the next step; None: the interval). `poke()` ends the wait at once; a poke that
arrives during a step makes the next wait end at once, so no poke is lost. A step that
fails because the database is unreachable (`TRANSIENT`) is logged on the component's
logger as `"<failed>: <error>"` and tried again after the interval, or, with a `Backoff`,
after its next delay (`"<failed>, retrying in 0.25s: <error>"`). Any other error ends the
loop, for the node's supervisor to log and restart. A step raises `Finished` when there is
nothing more for it to do, ever; the loop then returns. Cancelling the task cancels the
step or the wait, whichever is under way, and nothing is caught on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shigoto.runtime.retrying import TRANSIENT, Backoff

Step = Callable[[], Awaitable[float | None]]


class Finished(Exception):
    """Raised by a step: this component has nothing more to do; its loop returns."""


class Periodic:
    """Run `step` every `interval` seconds until cancelled (see the module's docstring).

    `interval` may be changed between steps (the vacuumer looks less often while idle);
    a step's own return value changes only the wait that follows it.
    """

    def __init__(
        self,
        step: Step,
        *,
        interval: float,
        logger: logging.Logger,
        failed: str,
        at_once: bool = True,
        only_if: Callable[[], bool] | None = None,
        backoff: Backoff | None = None,
        fault_level: int = logging.WARNING,
    ) -> None:
        self._step = step
        self.interval = interval
        self._logger = logger
        self._failed = failed
        self._at_once = at_once
        self._only_if = only_if
        self._backoff = backoff
        self._fault_level = fault_level
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Cut the current wait short: the next step runs now (or right after this one)."""
        self._poked.set()

    async def run(self) -> None:
        """Step and wait until cancelled, or until a step raises `Finished`."""
        if self._backoff is not None:
            self._backoff.reset()  # a restarted component starts with the shortest delay
        if not self._at_once:
            await self._wait(self.interval)
        while True:
            wait: float | None = None
            if self._only_if is None or self._only_if():
                try:
                    wait = await self._step()
                except Finished:
                    return
                except TRANSIENT as error:
                    wait = self._fault(error)
                else:
                    if self._backoff is not None:
                        self._backoff.reset()
            await self._wait(self.interval if wait is None else wait)

    def _fault(self, error: Exception) -> float | None:
        """Log a step that the database's absence failed; the wait before the next try."""
        if self._backoff is None:
            self._logger.log(self._fault_level, "%s: %s", self._failed, error)
            return None
        delay = self._backoff.next()
        self._logger.log(self._fault_level, "%s, retrying in %.2fs: %s", self._failed, delay, error)
        return delay

    async def _wait(self, delay: float) -> None:
        if delay > 0 and not self._poked.is_set():
            try:
                async with asyncio.timeout(delay):
                    await self._poked.wait()
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0)  # no wait, but every other task runs first
        self._poked.clear()
