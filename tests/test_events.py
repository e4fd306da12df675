"""Events: every state change is published on the app's bus, with its fields, and handlers
(sync or async, hooks included) hear of it without being able to change what happens."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from psycopg import sql

from shigoto import (
    Cancel,
    Discard,
    Event,
    InvalidEventError,
    Job,
    JobSpec,
    JobState,
    Shigoto,
    Snooze,
    report_progress,
)
from shigoto.events import EVENT_NAMES, EventBus
from shigoto.schedules import Every
from tests.conftest import FAST, Seen, app_settings, start_node, wait_until

OUTCOMES = {"job.completed", "job.discarded", "job.cancelled"}


def _workers(app: Shigoto) -> dict[str, int]:
    runs: dict[str, int] = {}

    @app.worker(name="ok", priority=3, tags=["t"])
    async def ok(n: int) -> int:
        report_progress(50)
        return n

    @app.worker(name="fails", max_attempts=2, backoff=lambda attempt, error: 0)
    def fails() -> None:  # a plain function: runs in a thread
        raise RuntimeError("no luck")

    @app.worker(name="snoozes")
    async def snoozes() -> object:
        runs["snoozes"] = runs.get("snoozes", 0) + 1
        return Snooze(0) if runs["snoozes"] == 1 else "woke"

    @app.worker(name="cancels")
    async def cancels() -> object:
        return Cancel("not wanted")

    @app.worker(name="discards")
    async def discards() -> None:
        raise Discard("hopeless")

    return runs


async def test_a_node_publishes_every_job_event_with_its_fields(fast_app: Shigoto) -> None:
    _workers(fast_app)
    seen = Seen(fast_app)
    ok = await fast_app.enqueue("ok", {"n": 424242})
    fails = await fast_app.enqueue("fails")
    snoozes = await fast_app.enqueue("snoozes")
    cancels = await fast_app.enqueue("cancels")
    discards = await fast_app.enqueue("discards")
    ids = [ok.id, fails.id, snoozes.id, cancels.id, discards.id]
    await fast_app.start()
    node = fast_app.node
    assert node is not None
    await seen.until(lambda: all(any(e.name in OUTCOMES for e in seen.of(i)) for i in ids))
    await fast_app.stop()

    def names(job_id: int) -> list[str]:
        return [e.name for e in seen.of(job_id) if e.name != "job.progress"]

    run = ["job.claimed", "job.started"]
    assert names(ok.id) == ["job.inserted", *run, "job.completed"]
    assert names(fails.id) == ["job.inserted", *run, "job.failed", *run, "job.failed",
                               "job.discarded"]  # fmt: skip
    assert names(snoozes.id) == ["job.inserted", *run, "job.snoozed", *run, "job.completed"]
    assert names(cancels.id) == ["job.inserted", *run, "job.cancelled"]
    assert names(discards.id) == ["job.inserted", *run, "job.discarded"]

    inserted, claimed, started, completed = [e for e in seen.of(ok.id) if e.name != "job.progress"]
    assert (inserted.worker, inserted.queue, inserted.priority, inserted.attempt) == (
        "ok", "default", 3, 0
    )  # fmt: skip
    assert inserted.node is None and inserted.job is not None and inserted.job.args == {"n": 424242}
    for event in (claimed, started, completed):
        assert (event.job_id, event.worker, event.queue, event.priority, event.attempt) == (
            ok.id, "ok", "default", 3, 1
        )  # fmt: skip
        assert event.node == node.id
    assert claimed.data["queue_wait"] >= 0
    assert completed.data["duration"] >= 0 and completed.data["queue_wait"] >= 0
    assert completed.job is not None and completed.job.result == 424242
    assert completed.job.state is JobState.COMPLETED
    [progress] = seen.named("job.progress")
    assert (progress.job_id, progress.data["progress"]) == (ok.id, 50.0)

    first, last = [e for e in seen.of(fails.id) if e.name == "job.failed"]
    assert (first.attempt, first.data["will_retry"], first.data["kind"]) == (
        1,
        True,
        "RuntimeError",
    )
    assert (last.attempt, last.data["will_retry"]) == (2, False)
    assert isinstance(first.error, RuntimeError) and str(first.error) == "no luck"
    assert first.data["duration"] >= 0
    [discarded] = [e for e in seen.of(fails.id) if e.name == "job.discarded"]
    assert discarded.data["kind"] == "RuntimeError"
    [snoozed] = [e for e in seen.of(snoozes.id) if e.name == "job.snoozed"]
    assert snoozed.data["seconds"] == 0
    [cancelled] = [e for e in seen.of(cancels.id) if e.name == "job.cancelled"]
    assert cancelled.data["by"] == "worker"
    [gone] = [e for e in seen.of(discards.id) if e.name == "job.discarded"]
    assert gone.data["kind"] == "Discard"

    polls = seen.named("queue.poll")
    assert polls and all(p.queue == "default" and p.node == node.id for p in polls)
    assert sum(p.data["claimed"] for p in polls) == 7  # five jobs, two of them twice
    [up] = seen.named("node.started")
    assert (up.node, up.data["queues"]) == (node.id, {"default": 10})
    [down] = seen.named("node.stopped")
    assert down.node == node.id
    assert {e.name for e in seen.events} <= EVENT_NAMES
    # As JSON (for logs and streams): no args, no result.
    document = completed.to_dict()
    assert document["name"] == "job.completed" and "424242" not in str(document)
    assert set(document) == {"name", "at", "job_id", "worker", "queue", "attempt", "priority",
                             "node", "data"}  # fmt: skip


async def test_admin_changes_are_events_too(app: Shigoto) -> None:
    seen = Seen(app)
    job = await app.insert(JobSpec.build("elsewhere.worker"))
    assert await app.cancel(job.id)
    await app.pause_queue("mail")
    await app.resume_queue("mail")
    ids = await app.insert_many(JobSpec.build("elsewhere.worker", priority=2), [{}, {}])
    assert [e.name for e in seen.events] == [
        "job.inserted",
        "job.cancelled",
        "queue.paused",
        "queue.resumed",
        "job.inserted",
        "job.inserted",
    ]
    cancelled = seen.events[1]
    assert (cancelled.job_id, cancelled.data["by"], cancelled.job) == (job.id, "cancel", None)
    assert seen.events[2].queue == "mail" and seen.events[3].queue == "mail"
    many = seen.events[4:]
    assert [e.job_id for e in many] == ids
    assert {(e.worker, e.priority, e.attempt) for e in many} == {("elsewhere.worker", 2, 0)}


async def test_the_sync_facade_publishes_from_its_thread(app: Shigoto) -> None:
    seen = Seen(app)
    threads: list[str] = []
    app.bus.subscribe("job.inserted", lambda event: threads.append(threading.current_thread().name))
    job = await asyncio.to_thread(app.sync.insert, JobSpec.build("elsewhere.worker"))
    await asyncio.to_thread(app.sync.cancel, job.id)
    await asyncio.to_thread(app.sync.pause_queue, "q")
    assert [e.name for e in seen.events] == ["job.inserted", "job.cancelled", "queue.paused"]
    assert threads and threads[0] != threading.current_thread().name
    await asyncio.to_thread(app.sync.close)


async def test_an_async_handler_hears_events_published_from_another_thread(app: Shigoto) -> None:
    heard: list[int | None] = []
    done = asyncio.Event()

    @app.on("job.inserted")
    async def record(event: Event) -> None:
        heard.append(event.job_id)
        done.set()

    await app.insert(JobSpec.build("elsewhere.worker"))  # this loop is the bus's now
    job = await asyncio.to_thread(app.sync.insert, JobSpec.build("elsewhere.worker"))
    async with asyncio.timeout(5):
        while len(heard) < 2:
            done.clear()
            await done.wait()
    assert heard[1] == job.id
    await asyncio.to_thread(app.sync.close)


async def test_a_handler_that_fails_changes_nothing(
    fast_app: Shigoto, caplog: pytest.LogCaptureFixture
) -> None:
    @fast_app.worker(name="ok")
    async def ok() -> str:
        return "fine"

    @fast_app.on("job.completed")
    def broken(event: Event) -> None:
        raise ValueError("handler bug")

    @fast_app.on("job.*")
    async def broken_async(event: Event) -> None:
        raise KeyError("async handler bug")

    seen = Seen(fast_app, "job.completed")
    jobs = [await fast_app.enqueue("ok") for _ in range(3)]
    await fast_app.start()
    await seen.until(lambda: len(seen.events) == 3)
    await fast_app.bus.settle()
    for job in jobs:
        done = await fast_app.get_job(job.id)
        assert done is not None and (done.state, done.result) == (JobState.COMPLETED, "fine")
    failures = [r for r in caplog.records if r.name == "shigoto.events"]
    assert any("handler bug" in str(r.exc_info[1]) for r in failures if r.exc_info)
    assert any("async handler bug" in str(r.exc_info[1]) for r in failures if r.exc_info)


async def test_hooks_are_sugar_over_the_events(app: Shigoto) -> None:
    calls: list[tuple[str, Any]] = []

    @app.worker(name="ok")
    async def ok() -> str:
        return "fine"

    @app.worker(name="fails", max_attempts=1)
    async def fails() -> None:
        raise RuntimeError("kaput")

    app.on_job_start(lambda job: calls.append(("start", job.worker)))

    @app.on_job_complete
    async def complete(job: Job) -> None:
        calls.append(("complete", job.result))

    app.on_job_fail(lambda job, error: calls.append(("fail", (job.state, str(error)))))
    await app.enqueue("ok")
    await app.enqueue("fails")
    await app.drain_queue()
    assert calls == [
        ("start", "ok"),
        ("complete", "fine"),
        ("start", "fails"),
        ("fail", (JobState.DISCARDED, "kaput")),
    ]


async def test_batch_completed_and_on_batch_stopped(fast_app: Shigoto) -> None:
    @fast_app.worker(name="ok")
    async def ok() -> None:
        pass

    closed: list[Any] = []
    fast_app.on_batch_stopped(closed.append)
    seen = Seen(fast_app, "batch.completed")
    batch = await fast_app.batch([ok.new(), ok.new()], meta={"album": 7})
    await fast_app.start()
    await seen.until(lambda: seen.events)
    [event] = seen.events
    assert event.data == {"batch_id": batch.id, "total": 2, "completed": 2, "discarded": 0,
                          "cancelled": 0}  # fmt: skip
    assert event.node == fast_app.node.id  # type: ignore[union-attr]
    await fast_app.bus.settle()
    assert [(b.id, b.completed, b.meta) for b in closed] == [(batch.id, 2, {"album": 7})]


async def test_drain_queue_publishes_batch_completed(app: Shigoto) -> None:
    @app.worker(name="ok")
    async def ok() -> None:
        pass

    seen = Seen(app, "batch.completed")
    batch = await app.batch([ok.new()])
    await app.drain_queue()
    assert [e.data["batch_id"] for e in seen.events] == [batch.id]


async def test_cron_scheduled(fast_app: Shigoto) -> None:
    @fast_app.worker(name="tick")
    async def tick() -> None:
        pass

    seen = Seen(fast_app, "cron.scheduled")
    await fast_app.schedule("every-tenth", Every(0.1), tick)
    await fast_app.start()
    await seen.until(lambda: seen.events)
    event = seen.events[0]
    assert (event.worker, event.data["schedule"]) == ("tick", "every-tenth")
    assert event.job_id is not None and await fast_app.get_job(event.job_id) is not None


async def test_a_crashed_component_is_an_event(fast_app: Shigoto, db: Any, schema: str) -> None:
    seen = Seen(fast_app, "component.crashed")
    await fast_app.start()
    # The stager closes batches: without their table it fails, and is restarted.
    await db.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(schema, "batches")))
    await seen.until(lambda: seen.events)
    event = seen.events[0]
    assert event.node == fast_app.node.id  # type: ignore[union-attr]
    assert (event.data["component"], event.data["error"]) == ("stager", "MigrationError")
    assert event.data["restart_in"] > 0


async def test_a_rescued_job_is_an_event(
    dsn: str, schema: str, nodes: list[Any], ledger: Any
) -> None:
    rescuer = Shigoto(**app_settings(dsn), schema=schema, **FAST)
    seen = Seen(rescuer)
    victim = start_node(nodes, dsn, schema, queues="other=1")
    job = await rescuer.insert(JobSpec.build("ledger.sleep", {"seconds": 30}, queue="other"))

    async def started() -> list[Any]:
        return await ledger("SELECT pid FROM {} WHERE event = 'start'")

    await wait_until(started, timeout=30)
    victim.kill()
    victim.wait()
    await rescuer.start(queues={"unrelated": 1})
    try:
        await seen.until(lambda: seen.named("job.failed"))
    finally:
        await rescuer.stop()
        await rescuer.close()
    rescued, failed = [e for e in seen.of(job.id) if e.name in ("job.rescued", "job.failed")]
    assert rescued.name == "job.rescued" and rescued.data["state"] == "available"
    assert (failed.data["kind"], failed.data["will_retry"], failed.attempt) == ("NodeLost", True, 1)
    assert failed.node == rescued.node == rescuer.node.id  # type: ignore[union-attr]


# -- streams ------------------------------------------------------------------------------------


async def test_a_stream_drops_its_oldest_events_when_its_reader_falls_behind(app: Shigoto) -> None:
    async with app.events("custom.*", size=3) as stream:
        for i in range(5):
            await app.emit(None, "tick", {"i": i})
        assert stream.dropped == 2
        got = [(await anext(stream)).data["i"] for _ in range(3)]
    assert got == [2, 3, 4]
    assert [e async for e in stream] == []  # closed: the iteration ends
    assert not app.bus.active  # and nothing is subscribed any more


async def test_a_slow_async_handler_loses_its_oldest_events_counted() -> None:
    bus = EventBus()
    heard: list[int] = []
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        await gate.wait()
        heard.append(event.data["i"])

    bus.subscribe("custom.*", slow, buffer=2)
    bus.emit("custom.tick", data={"i": 0})
    await asyncio.sleep(0)  # the handler's task takes the first event, then waits
    for i in range(1, 8):
        bus.emit("custom.tick", data={"i": i})
    gate.set()
    await bus.settle()
    assert heard == [0, 6, 7]  # the two newest kept while it was busy
    assert bus.dropped == 5


async def test_patterns_are_checked(app: Shigoto) -> None:
    for bad in ("", "job.", "JOB.completed", "job*", "*.completed", 7):
        with pytest.raises(Exception, match="event pattern"):
            app.on(bad)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="size"):
        app.events("*", size=0)


# -- custom events ------------------------------------------------------------------------------


async def test_custom_events_reach_this_process_at_once(app: Shigoto) -> None:
    seen = Seen(app, "custom.*")
    exact = Seen(app, "custom.Import:files.chunk")
    await app.emit(42, "progress", {"pct": 75})
    await app.emit(None, "Import:files.chunk", {"done": 1})
    first, second = seen.events
    assert (first.name, first.job_id, dict(first.data)) == ("custom.progress", 42, {"pct": 75})
    assert exact.events == [second] and second.job_id is None


async def test_custom_events_are_checked(app: Shigoto) -> None:
    with pytest.raises(InvalidEventError, match="name"):
        await app.emit(None, "<script>", {})
    with pytest.raises(InvalidEventError, match="name"):
        await app.emit(None, "", {})
    with pytest.raises(InvalidEventError, match="JSON"):
        await app.emit(None, "x", {"thing": object()})
    with pytest.raises(InvalidEventError, match="7,000"):
        await app.emit(None, "big", {"blob": "x" * 8000})
    with pytest.raises(Exception, match="job_id"):
        await app.emit(-1, "x", {})


async def test_custom_events_cross_node_processes(
    app: Shigoto, dsn: str, schema: str, nodes: list[Any], ledger: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("NODEAPP_HEAR_CUSTOM", "1")  # each node notes the custom events it hears
    first = start_node(nodes, dsn, schema, queues="emit=1")
    second = start_node(nodes, dsn, schema, queues="other=1")

    async def both_listen() -> bool:
        # The nodes listen once they hear this process's pings.
        await app.emit(None, "ping", {})
        heard = await ledger("SELECT DISTINCT pid FROM {} WHERE event = 'custom.ping'")
        return len(heard) == 2

    await wait_until(both_listen, timeout=30, every=0.2)
    job = await app.insert(JobSpec.build("ledger.emit", {"name": "hello"}, queue="emit"))

    async def heard_by_both() -> list[Any]:
        rows = await ledger(
            "SELECT pid FROM {} WHERE event = 'custom.hello' AND job_id = %s ORDER BY pid", [job.id]
        )
        return rows if len(rows) == 2 else []

    rows = await wait_until(heard_by_both, timeout=30)
    assert sorted(pid for (pid,) in rows) == sorted([first.pid, second.pid])  # type: ignore[union-attr]


def test_an_event_no_loop_can_take_is_counted_as_dropped() -> None:
    """Published outside any event loop before one ran here, an event an async handler
    would get has nowhere to run: it is counted, not lost unseen."""
    bus = EventBus()

    async def handler(event: Event) -> None:
        raise AssertionError("never called")

    bus.subscribe("custom.*", handler)
    bus.emit("custom.tick")
    assert bus.dropped == 1


async def test_the_sync_facade_emits_custom_events(app: Shigoto) -> None:
    """`app.sync.emit`, as a plain-function job would call it: heard here at once, and
    checked as the async one is."""
    seen = Seen(app, "custom.*")
    await asyncio.to_thread(app.sync.emit, 9, "import.chunk", {"done": 3})
    [event] = seen.events
    assert (event.name, event.job_id, dict(event.data)) == ("custom.import.chunk", 9, {"done": 3})
    with pytest.raises(InvalidEventError, match="name"):
        await asyncio.to_thread(app.sync.emit, None, "<b>", {})
    await asyncio.to_thread(app.sync.close)
