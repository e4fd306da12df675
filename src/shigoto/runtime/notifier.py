"""LISTEN on one dedicated connection per node: new jobs wake their queue's producer at
once, and control signals (cancel a running job, scale a queue) reach every node.

Notifications are coalesced at the source (one per inserting statement and queue). The
listener reconnects after a drop and then wakes every producer, since NOTIFY has no
replay. A connection can also die silently (a NAT or proxy dropping it without a reset):
every `probe_interval` the notifier sends itself a NOTIFY and, if it does not come back
within `PROBE_TIMEOUT`, reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from shigoto.db import execution, managing
from shigoto.db.operations import Operation, run_async
from shigoto.db.queries import Queries
from shigoto.runtime._component import Periodic
from shigoto.runtime.retrying import Backoff

logger = logging.getLogger("shigoto.notifier")

PROBE_TIMEOUT = 5.0


class ListenerSilent(Exception):
    """The probe NOTIFY did not come back: the LISTEN connection is dead."""


class Notifier:
    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        node_id: str,
        probe_interval: float,
        on_insert: Callable[[str], None],
        on_control: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._db = db
        self._q = queries
        self._node = node_id
        self._on_insert = on_insert
        self._on_control = on_control
        self._on_connect = on_connect
        self._insert_channel = f"{queries.schema}.jobs_inserted"
        self._control_channel = f"{queries.schema}.control"
        self._probes: dict[str, asyncio.Event] = {}
        # The database unreachable from the pool is not the listener's fault: only noted.
        self._prober = Periodic(
            self._probe,
            interval=probe_interval,
            logger=logger,
            failed="probe not sent",
            at_once=False,
            fault_level=logging.DEBUG,
        )
        self.connected = asyncio.Event()
        self.connections = 0  # how many times the listener has (re)connected

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                conn = await self._connect()
            except psycopg.OperationalError as error:
                delay = backoff.next()
                logger.warning("listener cannot connect, retrying in %.1fs: %s", delay, error)
                await asyncio.sleep(delay)
                continue
            try:
                await run_async(conn, execution.listen(self._q))
                backoff.reset()
                self.connections += 1
                self.connected.set()
                self._on_connect()  # NOTIFY has no replay: look for what we missed
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._listen(conn))
                    group.create_task(self._prober.run())
            except* (psycopg.OperationalError, ListenerSilent) as errors:
                logger.warning("listener lost, reconnecting: %s", errors.exceptions[0])
            finally:
                self.connected.clear()
                await conn.close()

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for notice in conn.notifies():
            if notice.channel == self._insert_channel:
                self._on_insert(notice.payload)
            elif notice.channel == self._control_channel:
                self._dispatch(notice.payload)

    def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            logger.warning("ignoring a control signal that is not JSON: %.200r", payload)
            return
        if not isinstance(message, dict):
            return
        if message.get("action") == "probe":
            if message.get("node") == self._node and message.get("token") in self._probes:
                self._probes[message["token"]].set()
            return
        self._on_control(message)

    async def _probe(self) -> None:
        """NOTIFY this node and wait for it to come back; ListenerSilent if it does not."""
        token = secrets.token_hex(8)
        arrived = self._probes[token] = asyncio.Event()
        try:
            await self._db(
                managing.signal(self._q, {"action": "probe", "node": self._node, "token": token})
            )
            async with asyncio.timeout(PROBE_TIMEOUT):
                await arrived.wait()
        except TimeoutError:
            raise ListenerSilent(
                f"a probe NOTIFY did not arrive within {PROBE_TIMEOUT:g}s"
            ) from None
        finally:
            del self._probes[token]
