"""The listener (LISTEN/NOTIFY): an insert wakes an idle node, the listener reconnects
after its connection is killed, one that dies silently is found by the probe, and
queue changes reach every node by signal."""

from __future__ import annotations

import asyncio
import os
import signal

from shigoto import JobState, Shigoto
from tests.conftest import Seen, app_settings, final, wait_until


async def test_an_insert_wakes_an_idle_node_without_polling(dsn: str, schema: str) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60)
    await app.migrate()
    started = asyncio.Event()

    @app.worker(name="ping")
    async def ping() -> None:
        started.set()

    polls = Seen(app, "queue.poll")
    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        await asyncio.wait_for(app.node.notifier.connected.wait(), 5)
        await polls.until(lambda: polls.named("queue.poll"))  # the startup claim is over
        await ping.enqueue()
        await asyncio.wait_for(started.wait(), 2)  # well before the 60 s poll
    finally:
        await app.stop()
        await app.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    dsn: str, schema: str, db
) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60)
    await app.migrate()
    seen: list[int] = []
    arrived = asyncio.Event()

    @app.worker(name="mark")
    async def mark(n: int) -> None:
        seen.append(n)
        arrived.set()

    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        notifier = app.node.notifier
        await asyncio.wait_for(notifier.connected.wait(), 5)
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'shigoto-listener' AND query LIKE %s",
            [f"%{schema}.jobs_inserted%"],
        )
        await wait_until(lambda: asyncio.sleep(0, result=notifier.connections == 2))
        await mark.enqueue({"n": 1})
        await asyncio.wait_for(arrived.wait(), 2)
        assert seen == [1]
    finally:
        await app.stop()
        await app.close()


async def test_a_listener_that_dies_silently_is_found_by_the_probe(
    dsn: str, schema: str, db
) -> None:
    """A frozen backend keeps its connection open but delivers nothing (like a connection a
    NAT dropped without a reset). Only the NOTIFY round-trip probe can tell."""
    app = Shigoto(
        **app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60, probe_interval=0.5
    )
    await app.migrate()
    arrived = asyncio.Event()

    @app.worker(name="mark")
    async def mark() -> None:
        arrived.set()

    frozen: list[int] = []
    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        notifier = app.node.notifier
        await asyncio.wait_for(notifier.connected.wait(), 5)
        cur = await db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'shigoto-listener' "
            "AND query LIKE %s",
            [f"%{schema}.jobs_inserted%"],
        )
        frozen = [row[0] for row in await cur.fetchall()]
        assert len(frozen) == 1
        os.kill(frozen[0], signal.SIGSTOP)
        await wait_until(lambda: asyncio.sleep(0, result=notifier.connections == 2), timeout=15)
        await mark.enqueue()
        await asyncio.wait_for(arrived.wait(), 2)  # woken by the new listener, not a poll
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        await app.stop()
        await app.close()


async def test_queue_changes_reach_every_node_by_signal(fast_app: Shigoto) -> None:
    @fast_app.worker(name="q", queue="broadcast")
    async def q() -> None: ...

    await fast_app.start(queues={"default": 1})
    assert fast_app.node is not None and fast_app.node.notifier is not None
    await asyncio.wait_for(fast_app.node.notifier.connected.wait(), 5)
    await fast_app.add_queue("broadcast", 3, everywhere=True)
    job = await q.enqueue()
    assert (await final(fast_app, job.id)).state is JobState.COMPLETED
    assert fast_app.node.producers["broadcast"].limit == 3
