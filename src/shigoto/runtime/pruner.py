"""Archival and pruning, on the leader only.

Every `prune_interval` seconds the leading node moves jobs finished more than
`prune_after` ago to `jobs_archive`, and deletes archived jobs older than
`archive_retention`, each in batches of 5,000 rows, one short transaction per batch, with
a pause between batches: a table of millions never sees a long lock, and inserts and
claims go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto.db import maintenance
from shigoto.db.queries import Queries
from shigoto.runtime._component import Periodic
from shigoto.runtime.leader import Leader

logger = logging.getLogger("shigoto.pruner")

BATCHES_PER_STEP = 1  # batches per statement run; the pause between them lets others in
PAUSE = 0.05


class Pruner:
    def __init__(
        self,
        db: Callable[..., Awaitable[Any]],
        queries: Queries,
        leader: Leader,
        *,
        prune_after: float,
        retention: float,
        interval: float,
    ) -> None:
        self._db = db
        self._q = queries
        self._leader = leader
        self._prune_after = prune_after
        self._retention = retention
        self._loop = Periodic(
            self._prune_step,
            interval=interval,
            logger=logger,
            failed="pruning failed, will try again",
            at_once=False,
            only_if=lambda: leader.is_leader,
        )

    async def run(self) -> None:
        """Prune every `interval` seconds (the first time after one), while leading."""
        await self._loop.run()

    async def _prune_step(self) -> None:
        await self.prune()

    async def prune(self) -> tuple[int, int]:
        """Archive and delete until nothing is left, a batch at a time; the counts."""
        archived = deleted = 0
        while self._leader.is_leader:
            moved, removed = await self._db(
                maintenance.prune(
                    self._q,
                    prune_after=self._prune_after,
                    retention=self._retention,
                    batches=BATCHES_PER_STEP,
                )
            )
            archived += moved
            deleted += removed
            if moved < maintenance.PRUNE_BATCH and removed < maintenance.PRUNE_BATCH:
                break
            await asyncio.sleep(PAUSE)
        if archived or deleted:
            logger.info("archived %d finished job(s), deleted %d archived", archived, deleted)
        return archived, deleted
