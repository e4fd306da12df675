"""Makes due jobs available: scheduled jobs whose time has come and failed jobs whose
backoff is over, and jobs whose dependencies have completed (or cancels them
when one failed); then wakes their queues. It also closes finished batches and inserts
their callbacks.

Every node stages; `FOR UPDATE SKIP LOCKED` keeps them out of each other's way, so no
leader is needed and a dead node never stops the staging.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto.db import execution
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.features.batches import Batch
from shigoto.runtime._component import Periodic

logger = logging.getLogger("shigoto.stager")


class Stager:
    def __init__(
        self,
        *,
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        interval: float,
        on_staged: Callable[[str], None],
        on_batch_closed: Callable[[Batch], None] = lambda batch: None,
    ) -> None:
        self._db = db
        self._q = queries
        self._on_staged = on_staged
        self._on_batch_closed = on_batch_closed
        self._loop = Periodic(
            self.stage, interval=interval, logger=logger, failed="staging failed, retrying"
        )

    def poke(self) -> None:
        """Run a pass now: jobs finished that others may wait on."""
        self._loop.poke()

    async def run(self) -> None:
        """A pass now, then one every `interval` seconds or when poked."""
        await self._loop.run()

    async def stage(self) -> float | None:
        """One pass; 0 (the next pass at once) when it staged a full batch."""
        staged: dict[str, int] = await self._db(execution.stage(self._q))
        released = await self._db(execution.resolve_dependencies(self._q))
        closed = await self._db(execution.finish_batches(self._q))
        for batch in closed:
            self._on_batch_closed(batch)
        for queue in {*staged, *released}:
            self._on_staged(queue)
        return 0.0 if sum(staged.values()) >= execution.STAGE_BATCH else None
