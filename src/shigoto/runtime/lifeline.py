"""Heartbeats and rescue (decision D3): a node proves it is alive by updating its row;
jobs held by a node whose heartbeat went stale go back to the queue.

Every `heartbeat_interval` the lifeline refreshes this node's row, stops local jobs this
node no longer owns (cancelled while its listener was away, say), and rescues the jobs of
dead nodes. It also protects the promise that a job never runs on two live nodes: if this
node finds its own row gone (another node declared it dead) or has not managed a heartbeat
for nearly `node_timeout`, it stops its running jobs itself — they were, or are about to
be, rescued elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shigoto.db import execution
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.job import Job
from shigoto.runtime.retrying import TRANSIENT

logger = logging.getLogger("shigoto.lifeline")


class Lifeline:
    def __init__(
        self,
        *,
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        node_id: str,
        queues: Callable[[], Mapping[str, int]],
        interval: float,
        node_timeout: float,
        on_rescued: Callable[[list[Job]], Awaitable[None]],
        on_fence: Callable[[str], None],
        audit: Callable[[], Awaitable[None]],
    ) -> None:
        self._db = db
        self._q = queries
        self._node = node_id
        self._queues = queues
        self._interval = interval
        self._node_timeout = node_timeout
        self._on_rescued = on_rescued
        self._on_fence = on_fence
        self._audit = audit
        self._last_beat = time.monotonic()
        self._fenced = False

    @property
    def healthy(self) -> bool:
        """Whether this node may claim: a recent heartbeat, so no one is about to declare it
        dead (a claim made then would be rescued out from under it)."""
        return not self._fenced and time.monotonic() - self._last_beat < self.fence_after

    @property
    def fence_after(self) -> float:
        """Stop local jobs this long without a heartbeat: one interval before others may
        declare this node dead."""
        return max(self._node_timeout - self._interval, self._interval)  # Config.claim_window

    async def run(self) -> None:
        while True:
            if await self._beat():
                await self._audit()  # a cancel signal may have been missed
                await self._rescue()  # only with a fresh heartbeat of our own
            await asyncio.sleep(self._interval)

    async def _beat(self) -> bool:
        try:
            # Bounded: a heartbeat stuck waiting for a connection is a missed heartbeat.
            async with asyncio.timeout(max(self._interval, 1.0)):
                alive = await self._db(execution.heartbeat(self._q, self._node, self._queues()))
        except (*TRANSIENT, TimeoutError) as error:
            silent = time.monotonic() - self._last_beat
            reason = str(error) or type(error).__name__
            logger.warning("heartbeat failed (%.0fs since the last one): %s", silent, reason)
            if silent > self.fence_after and not self._fenced:
                self._fenced = True
                self._on_fence(f"no heartbeat for {silent:.0f}s")
            return False
        if not alive:
            logger.error("node %s was declared dead by another node; re-registering", self._node)
            self._on_fence("declared dead by another node")
            await self._db(execution.register_node(self._q, self._node, self._queues(), {}))
        self._last_beat = time.monotonic()
        self._fenced = False
        return True

    async def _rescue(self) -> None:
        try:
            rescued: list[Job] = await self._db(
                execution.rescue(self._q, node=self._node, node_timeout=self._node_timeout)
            )
        except TRANSIENT as error:
            logger.warning("rescue failed, will retry: %s", error)
            return
        if rescued:
            logger.warning(
                "rescued %d job(s) from dead nodes: %s",
                len(rescued),
                ", ".join(sorted({job.attempted_by or "?" for job in rescued})),
            )
            await self._on_rescued(rescued)
