"""Leader election: one node at a time holds the lease on a role (the scheduler's).

Every node tries to take or renew the lease every `lease / 3` seconds. The holder renews
it; the others take it once it has expired or once its holder is gone (stopped, or
declared dead by the lifeline), so a killed leader is replaced within about one lease.
A node counts itself leader only while its last renewal is younger than the lease by its
own clock, so it steps down on its own when it loses the database.

    leader = Leader(db, queries, node_id, role="leader", lease=15.0)
    leader.is_leader   # True while this node holds the lease
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto.db import scheduling
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.runtime._component import Periodic
from shigoto.runtime.retrying import TRANSIENT

logger = logging.getLogger("shigoto.leader")


class Leader:
    def __init__(
        self,
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        node_id: str,
        *,
        role: str,
        lease: float,
    ) -> None:
        self._db = db
        self._q = queries
        self._node = node_id
        self.role = role
        self.lease = lease
        self._valid_until = 0.0  # monotonic time until which our lease surely holds
        self._loop = Periodic(
            self._campaign_step,
            interval=lease / 3,
            logger=logger,
            failed=f"{role} election failed",
        )

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    async def run(self) -> None:
        """Campaign now, then every `lease / 3` seconds."""
        await self._loop.run()

    async def _campaign_step(self) -> None:
        await self.campaign()

    async def campaign(self) -> bool:
        """Take or renew the lease once; True if this node holds it now. A database that
        cannot be reached raises (`DatabaseUnavailable`) and changes nothing: the lease
        this node holds, if any, lapses by its own clock."""
        began = time.monotonic()
        was_leader = self.is_leader
        holds: bool = await self._db(
            scheduling.elect(self._q, role=self.role, node=self._node, lease=self.lease)
        )
        if holds:
            # Counted from before the statement: the database's lease started no earlier.
            self._valid_until = began + self.lease
            if not was_leader:
                logger.info("node %s now leads %s", self._node, self.role)
        else:
            self._valid_until = 0.0
            if was_leader:
                logger.warning("node %s lost the %s lease", self._node, self.role)
        return holds

    async def resign(self) -> None:
        """Give the lease up (on a graceful stop) so another node takes it at once."""
        if not self.is_leader:
            return
        self._valid_until = 0.0
        try:
            await self._db(scheduling.resign(self._q, role=self.role, node=self._node))
        except TRANSIENT as error:
            logger.warning("could not resign the %s lease: %s", self.role, error)
