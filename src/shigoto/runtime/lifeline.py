"""Fencing and rescue: jobs held by a node whose heartbeat went stale go back
to the queue, and a node that may have been declared dead stops its own jobs first.

The heartbeat itself beats from a thread of its own (see `heartbeat`). Every
`heartbeat_interval` the lifeline stops local jobs this node no longer owns (cancelled
while its listener was away, say) and rescues the jobs of dead nodes. It also protects the
promise that a job never runs on two live nodes: if this node finds its own row gone
(another node declared it dead) or the database has not answered its heartbeat for nearly
`node_timeout`, it stops its running jobs itself — they were, or are about to be, rescued
elsewhere. A blocked event loop or a starved pool is neither: the heartbeat goes on, so
nobody rescues this node's jobs and it fences nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto.db import execution
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.job import Job
from shigoto.runtime._component import Periodic
from shigoto.runtime.heartbeat import Heartbeat

logger = logging.getLogger("shigoto.lifeline")


class Lifeline:
    def __init__(
        self,
        *,
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        node_id: str,
        heart: Heartbeat,
        interval: float,
        node_timeout: float,
        on_rescued: Callable[[list[Job]], Awaitable[None]],
        on_fence: Callable[[str], None],
        audit: Callable[[], Awaitable[None]],
    ) -> None:
        self._db = db
        self._q = queries
        self._node = node_id
        self._heart = heart
        self._interval = interval
        self._node_timeout = node_timeout
        self._on_rescued = on_rescued
        self._on_fence = on_fence
        self._audit = audit
        self._fenced = False  # this silence was already fenced
        self._loop = Periodic(
            self._look, interval=interval, logger=logger, failed="rescue failed, will retry"
        )

    @property
    def healthy(self) -> bool:
        """Whether this node may claim: the database answered a heartbeat recently, so no
        one is about to declare it dead (a claim made then would be rescued from under it)."""
        return not self._heart.declared_dead and self._heart.silence < self.fence_after

    @property
    def fence_after(self) -> float:
        """Stop local jobs this long without a heartbeat: one interval before others may
        declare this node dead."""
        return max(self._node_timeout - self._interval, self._interval)  # Config.claim_window

    async def run(self) -> None:
        """Judge, audit and rescue now, then every `interval` seconds."""
        await self._loop.run()

    async def _look(self) -> None:
        self.judge()
        if self.healthy:
            await self._audit()  # a cancel signal may have been missed
            await self._rescue()  # only with a fresh heartbeat of our own

    def judge(self) -> None:
        """Fence if this node was declared dead, or if the database has not answered its
        heartbeat for `fence_after`. Called by the heartbeat's news, and every interval."""
        if self._heart.declared_dead:
            logger.error("node %s was declared dead by another node; re-registering", self._node)
            self._on_fence("declared dead by another node")
            self._heart.rejoin()
            return
        silence = self._heart.silence
        if silence <= self.fence_after:
            self._fenced = False
        elif not self._fenced:
            self._fenced = True
            self._on_fence(f"the database has not answered a heartbeat for {silence:.1f}s")

    async def _rescue(self) -> None:
        rescued: list[Job] = await self._db(
            execution.rescue(self._q, node=self._node, node_timeout=self._node_timeout)
        )
        if rescued:
            logger.warning(
                "rescued %d job(s) from dead nodes: %s",
                len(rescued),
                ", ".join(sorted({job.attempted_by or "?" for job in rescued})),
            )
            await self._on_rescued(rescued)
