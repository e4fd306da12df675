"""Health: `app.health()`, `app.sync.health()` and the probes' ASGI app, on a real database
and a real node; faults are real too (a table renamed under a producer, a listener that
cannot connect, a heartbeat held by a lock, a server that is not there)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import uvicorn
from psycopg import sql

from shigoto import JobSpec, Shigoto
from shigoto.health import asgi_app
from tests.conftest import FAST, app_settings, wait_until


async def test_a_fresh_app_is_ok_and_counts_its_jobs_by_state(app: Shigoto) -> None:
    @app.worker
    async def noop() -> None:
        pass

    await app.insert_all([noop.new() for _ in range(3)])
    await app.insert(noop.new(scheduled_in=3600))
    health = await app.health()
    assert health.status == "ok" and health.ok
    assert health.problems == ()
    assert health.database
    assert health.counts == {"available": 3, "scheduled": 1}
    assert health.stale_jobs.count == 0
    assert health.node is None  # no node runs in this process
    assert health.pools["app"].size >= 1
    assert health.pools["app"].waiting == 0
    document = json.loads(json.dumps(health.to_dict()))
    assert document["status"] == "ok"
    assert document["counts"] == {"available": 3, "scheduled": 1}


async def test_jobs_executing_on_a_dead_node_make_it_degraded(
    app: Shigoto, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    @app.worker
    async def noop() -> None:
        pass

    gone, silent, alive = await app.insert_all([noop.new() for _ in range(3)])
    table = sql.Identifier(schema)
    # A node whose row is gone, one that stopped heartbeating an hour ago, one that beats.
    await db.execute(
        sql.SQL(
            "INSERT INTO {}.nodes (id, host, pid, heartbeat_at) VALUES "
            "('silent', 'h', 1, now() - interval '1 hour'), ('alive', 'h', 2, now())"
        ).format(table)
    )
    for job, node in ((gone, "gone"), (silent, "silent"), (alive, "alive")):
        await db.execute(
            sql.SQL(
                "UPDATE {}.jobs SET state = 'executing', attempt = 1, attempted_by = %s, "
                "attempted_at = now() - interval '2 minutes' WHERE id = %s"
            ).format(table),
            [node, job.id],
        )
    health = await app.health()
    assert health.status == "degraded"
    assert health.stale_jobs.count == 2
    assert health.stale_jobs.sample == (gone.id, silent.id)
    assert health.stale_jobs.oldest_age is not None and 110 < health.stale_jobs.oldest_age < 300
    (problem,) = health.problems
    assert problem.startswith("2 job(s) executing on a dead node, the oldest claimed 12")
    assert problem.endswith("s ago: no live node rescues them")
    assert health.counts == {"executing": 3}
    # The same from the sync facade.
    same = await asyncio.to_thread(app.sync.health)
    assert (same.status, same.stale_jobs.sample) == ("degraded", (gone.id, silent.id))
    assert "sync" in same.pools


async def test_an_unreachable_database_is_unhealthy_and_never_raises(schema: str) -> None:
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere", schema=schema, connect_timeout=1)
    try:
        health = await app.health()
        assert health.status == "unhealthy"
        assert not health.database
        assert health.problems[0].startswith("database: ")
        assert health.counts == {}
        same = await asyncio.to_thread(app.sync.health)
        assert same.status == "unhealthy" and same.problems[0].startswith("database: ")
    finally:
        await app.close()


async def test_a_silent_server_is_unhealthy_within_the_timeout(
    silent_server: str, schema: str
) -> None:
    app = Shigoto(dsn=silent_server, schema=schema, connect_timeout=5)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        health = await app.health(timeout=0.5)
        assert loop.time() - began < 2
        assert health.status == "unhealthy"
        assert health.problems == ("database: the check did not finish in time",)
    finally:
        await app.close()


async def test_a_schema_never_migrated_is_unhealthy(dsn: str, schema: str) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema)
    try:
        health = await app.health()
        assert health.status == "unhealthy"
        assert "does not exist" in health.problems[0]
    finally:
        await app.close()


async def test_a_running_node_reports_its_producers_listener_leader_and_heartbeat(
    fast_app: Shigoto,
) -> None:
    await fast_app.start(queues={"default": 2, "emails": 1})

    async def settled() -> Any:
        health = await fast_app.health()
        node = health.node
        ready = node is not None and node.leader and node.listener
        return health if ready and health.ok else None

    health = await wait_until(settled)
    assert health.problems == ()
    assert health.node is not None
    assert health.node.id == fast_app.node.id  # type: ignore[union-attr]
    assert health.node.producers == {"default": True, "emails": True}
    assert health.node.heartbeat_age is not None
    assert health.node.heartbeat_age < fast_app.config.node_timeout / 2
    assert {"app", "node"} <= set(health.pools)


async def test_a_crashed_producer_makes_it_degraded_until_it_runs_again(
    fast_app: Shigoto, db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    await fast_app.start(queues={"default": 1, "other": 1})
    queues = sql.SQL("{}.queues").format(sql.Identifier(schema))
    # Its claim reads the queues table: without it, the producer crashes and is restarted
    # (with a growing delay), and the health check, which does not read it, still runs.
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO queues_gone").format(queues))

    async def down() -> Any:
        health = await fast_app.health()
        node = health.node
        return health if node is not None and not all(node.producers.values()) else None

    try:
        health = await wait_until(down)
    finally:
        await db.execute(
            sql.SQL("ALTER TABLE {}.queues_gone RENAME TO queues").format(sql.Identifier(schema))
        )
    assert health.status == "degraded"
    assert any("producer of queue" in p and "is down" in p for p in health.problems)

    async def ok() -> Any:
        health = await fast_app.health()
        return health if health.ok else None

    health = await wait_until(ok, timeout=20)
    assert health.node is not None and health.node.producers == {"default": True, "other": True}


async def test_a_listener_that_cannot_connect_makes_it_degraded(dsn: str, schema: str) -> None:
    settings = {**app_settings(dsn), "listen_dsn": "postgresql://postgres@127.0.0.1:9/nowhere"}
    app = Shigoto(**settings, schema=schema, **FAST)
    await app.migrate()
    await app.start()
    try:
        health = await app.health()
        assert health.node is not None and health.node.listener is False
        assert health.status == "degraded"
        assert "the listener is not connected: new jobs wait for a poll" in health.problems
    finally:
        await app.stop(timeout=0)
        await app.close()


async def test_a_heartbeat_held_back_makes_it_degraded(
    fast_app: Shigoto, dsn: str, schema: str
) -> None:
    await fast_app.start()
    node_id = fast_app.node.id  # type: ignore[union-attr]
    # A lock on the node's row: its heartbeat (an UPDATE of it) waits, the check does not.
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute(
            sql.SQL("SELECT 1 FROM {}.nodes WHERE id = %s FOR UPDATE").format(
                sql.Identifier(schema)
            ),
            [node_id],
        )

        async def late() -> Any:
            health = await fast_app.health()
            node = health.node
            age = None if node is None else node.heartbeat_age
            return health if age is not None and age > fast_app.config.node_timeout / 2 else None

        health = await wait_until(late)
        await holder.rollback()
    assert health.status == "degraded"
    assert any(p.startswith("the last heartbeat landed") for p in health.problems)


# -- the probes, served ----------------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    """`await serve(asgi)`: the base URL of a real uvicorn server running `asgi` on this
    test's event loop (where the app's pool lives)."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(asgi: Any) -> str:
        config = uvicorn.Config(asgi, host="127.0.0.1", port=0, lifespan="on", log_level="error")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        await wait_until(lambda: _started(server))
        servers.append((server, task))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


def get(url: str) -> tuple[int, dict[str, Any]]:
    """GET `url` with the standard library's client: the status and the JSON body."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_the_probes_answer_live_and_ready_over_http(fast_app: Shigoto, serve: Any) -> None:
    await fast_app.start()
    base = await serve(asgi_app(fast_app))
    assert await asyncio.to_thread(get, f"{base}/live") == (200, {"status": "ok"})
    status, body = await asyncio.to_thread(get, f"{base}/ready")
    assert status == 200
    assert body["status"] in ("ok", "degraded")  # the listener may still be connecting
    assert body["node"]["id"] == fast_app.node.id  # type: ignore[union-attr]
    assert (await asyncio.to_thread(get, f"{base}/nope"))[0] == 404


async def test_ready_answers_503_when_the_database_is_unreachable(schema: str, serve: Any) -> None:
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere", schema=schema, connect_timeout=1)
    try:
        base = await serve(asgi_app(app))
        assert (await asyncio.to_thread(get, f"{base}/live"))[0] == 200
        status, body = await asyncio.to_thread(get, f"{base}/ready")
        assert status == 503
        assert body["status"] == "unhealthy"
        assert body["database"] is False
    finally:
        await app.close()


async def test_ready_can_refuse_a_degraded_app(
    app: Shigoto, db: psycopg.AsyncConnection[Any], schema: str, serve: Any
) -> None:
    @app.worker
    async def noop() -> None:
        pass

    job = await app.insert(noop.new())
    await db.execute(
        sql.SQL(
            "UPDATE {}.jobs SET state = 'executing', attempted_by = 'gone', attempted_at = now() "
            "WHERE id = %s"
        ).format(sql.Identifier(schema)),
        [job.id],
    )
    lenient = await serve(asgi_app(app))
    strict = await serve(asgi_app(app, ready_when_degraded=False))
    assert (await asyncio.to_thread(get, f"{lenient}/ready"))[0] == 200
    status, body = await asyncio.to_thread(get, f"{strict}/ready")
    assert (status, body["status"]) == (503, "degraded")


# -- the command -----------------------------------------------------------------------------


async def test_shigoto_health_exits_0_when_ok_and_1_otherwise(
    app: Shigoto, db: psycopg.AsyncConnection[Any], dsn: str, schema: str
) -> None:
    from typer.testing import CliRunner

    from shigoto.cli import cli

    def run(*args: str, on: str = dsn) -> Any:
        env = {"SHIGOTO_DSN": on, "SHIGOTO_SCHEMA": schema, "SHIGOTO_CONNECT_TIMEOUT": "1"}
        return CliRunner().invoke(cli, ["health", *args], env=env)

    job = await app.insert(JobSpec.build("elsewhere"))
    ok = await asyncio.to_thread(run)
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines() == ["ok", "jobs: available 1"]
    await db.execute(
        sql.SQL(
            "UPDATE {}.jobs SET state = 'executing', attempted_by = 'gone', attempted_at = now() "
            "WHERE id = %s"
        ).format(sql.Identifier(schema)),
        [job.id],
    )
    degraded = await asyncio.to_thread(run, "--json")
    assert degraded.exit_code == 1
    report = json.loads(degraded.output)
    assert report["status"] == "degraded"
    assert report["stale_jobs"] == {
        "count": 1,
        "oldest_age": report["stale_jobs"]["oldest_age"],
        "sample": [job.id],
    }
    down = await asyncio.to_thread(
        run, on="postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=1"
    )
    assert down.exit_code == 1
    assert down.output.splitlines()[0] == "unhealthy"
    assert down.output.splitlines()[1].startswith("- database: ")
