"""A queue's slots on a node: at most `limit` of its jobs run at once; jobs claimed beyond
that (the prefetch) wait here for a slot, first come first served.

    slots = Slots(10)
    if not slots.try_take():
        await slots.take()        # a prefetched job waits for a running one to finish
    try:
        ...                       # run the job
    finally:
        slots.give_back()
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """A resizable counting gate (an `asyncio.Semaphore` cannot shrink)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for it."""
        if self.taken < self.limit and not self._waiting:
            self.taken += 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot; a cancelled waiter leaves without one."""
        if self.try_take():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.give_back()  # given a slot just as it was cancelled: pass it on
            raise

    def give_back(self) -> None:
        self.taken -= 1
        self._admit()

    def resize(self, limit: int) -> None:
        """A smaller limit takes effect as running jobs finish; a bigger one at once."""
        self.limit = limit
        self._admit()

    def _admit(self) -> None:
        while self.taken < self.limit and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # a cancelled waiter's turn is skipped
                turn.set_result(None)
                self.taken += 1
