"""How a run ends: its outcome written, then `on_discard` and the `on_job_stopped` hooks, the
same way on a node, in `drain_queue` and inline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from shigoto import (
    Cancel,
    Config,
    ConfigurationError,
    Discard,
    Job,
    JobSpec,
    JobState,
    Shigoto,
    Worker,
    _validate,
)
from shigoto.testing import InlineJobFailed, drain_queue, inline
from tests.conftest import FAST, start_node, wait_until

# What each worker below does, and the hook calls its job must bring: (state, will_retry),
# one per run that ended it or failed.
EXPECTED = {
    "ok": [(JobState.COMPLETED, False)],
    "flaky": [(JobState.RETRYABLE, True), (JobState.DISCARDED, False)],
    "cancels": [(JobState.CANCELLED, False)],
    "discards": [(JobState.DISCARDED, False)],
}


def _workers(app: Shigoto) -> None:
    @app.worker(name="ok")
    async def ok() -> str:
        return "fine"

    @app.worker(name="flaky")
    class Flaky(Worker):
        max_attempts = 2

        def perform(self, job: Job) -> None:  # a sync worker: runs in a thread
            raise RuntimeError(f"run {job.attempt} failed")

        def backoff(self, attempt: int, error: BaseException) -> float:
            return 0.3

    @app.worker(name="cancels")
    async def cancels() -> object:
        return Cancel("not wanted")

    @app.worker(name="discards")
    async def discards() -> object:
        raise Discard("hopeless")


def _record(app: Shigoto, *, look: bool) -> tuple[list[tuple[Any, ...]], list[int]]:
    """Register a two-argument hook (with `will_retry`) and a one-argument one; the first
    reads the job's row from inside the hook when `look` (on a node and in a drain)."""
    calls: list[tuple[Any, ...]] = []
    plain: list[int] = []

    @app.on_job_stopped
    async def stopped(job: Job, will_retry: bool) -> None:
        row = await app.get_job(job.id) if look else None
        calls.append((job.worker, job.state, will_retry, job.attempt, len(job.errors), row))

    @app.on_job_stopped
    def old_style(job: Job) -> None:
        plain.append(job.id)

    return calls, plain


def _check(calls: list[tuple[Any, ...]], *, look: bool) -> None:
    seen: dict[str, list[tuple[JobState, bool]]] = {}
    for worker, state, will_retry, attempt, errors, row in calls:
        seen.setdefault(worker, []).append((state, will_retry))
        if worker != "ok":
            assert errors == attempt  # each failed or ended run recorded an error
        if look:
            # The hook runs after the outcome is in the row: a final state is there, and a
            # failed run's error is (its job may have been claimed again since).
            assert row is not None and len(row.errors) >= errors
            if state.is_final:
                assert row.state is state
    assert {w: sorted(s) for w, s in seen.items()} == {w: sorted(s) for w, s in EXPECTED.items()}


async def test_on_job_stopped_fires_for_each_final_state_and_failed_run_on_a_node(
    fast_app: Shigoto,
) -> None:
    _workers(fast_app)

    @fast_app.worker(name="later")
    async def later() -> None: ...

    calls, plain = _record(fast_app, look=True)
    for name in EXPECTED:
        await fast_app.enqueue(name)
    await fast_app.start()
    await wait_until(lambda: asyncio.sleep(0, len(calls) == 5 and len(plain) == 5), timeout=20)
    # Nothing more comes for those five: a job enqueued now is heard of next, and alone.
    marker = await later.enqueue()

    def heard() -> bool:
        return marker.id in plain and any(c[0] == "later" for c in calls)

    await wait_until(lambda: asyncio.sleep(0, heard()), timeout=20)
    assert len(calls) == 6 and len(plain) == 6 and plain[-1] == marker.id
    assert [c[0] for c in calls].count("later") == 1
    _check([c for c in calls if c[0] != "later"], look=True)


async def test_on_job_stopped_fires_in_drain_queue(app: Shigoto) -> None:
    _workers(app)
    calls, plain = _record(app, look=True)
    for name in EXPECTED:
        await app.enqueue(name)
    counts = await drain_queue(app, "default", with_scheduled=True)
    assert counts["completed"] == 1 and counts["retryable"] == 1 and counts["discarded"] == 2
    assert len(plain) == 5
    _check(calls, look=True)


async def test_on_job_stopped_and_on_discard_fire_inline(app: Shigoto) -> None:
    _workers(app)
    calls, plain = _record(app, look=False)
    discarded: list[int] = []

    @app.worker(name="gives_up", on_discard=lambda job: discarded.append(job.id))
    async def gives_up() -> object:
        return Discard("no")

    with inline(app):
        for name in EXPECTED:
            if name == "flaky":
                with pytest.raises(InlineJobFailed):
                    await app.enqueue(name)
            else:
                await app.enqueue(name)
        job = await gives_up.enqueue()
    assert discarded == [job.id]
    assert [c[:3] for c in calls] == [
        ("ok", JobState.COMPLETED, False),
        ("flaky", JobState.RETRYABLE, True),  # inline runs once; the job would be retried
        ("cancels", JobState.CANCELLED, False),
        ("discards", JobState.DISCARDED, False),
        ("gives_up", JobState.DISCARDED, False),
    ]
    assert len(plain) == 5


async def test_inline_job_failed_has_the_jobs_exception_as_its_cause(app: Shigoto) -> None:
    class Boom(Exception):
        pass

    @app.worker(name="boom")
    async def boom() -> None:
        raise Boom("kaput")

    with inline(app), pytest.raises(InlineJobFailed) as caught:
        await boom.enqueue()
    assert isinstance(caught.value.__cause__, Boom)
    assert str(caught.value.__cause__) == "kaput"
    assert caught.value.job.errors[-1]["message"] == "kaput"


# -- what a job returns cannot hurt the others --------------------------------------------------


async def _final(app: Shigoto, job_id: int, timeout: float = 20.0) -> Job:
    async def finished() -> Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state.is_final else None

    return await wait_until(finished, timeout=timeout)  # type: ignore[return-value]


async def _failed_once(app: Shigoto, job_id: int) -> Job:
    async def failed() -> Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.errors else None

    return await wait_until(failed, timeout=20)  # type: ignore[return-value]


POISON: dict[str, Any] = {
    "big_int": lambda: 10**5000,  # more digits than JSON (and Python) converts
    "proxy": lambda: {"a": MappingProxyType({"b": 1})},  # a mapping that is not a dict
    "thing": lambda: {"x": object()},  # nothing JSON can encode
    "huge": lambda: HUGE[0],  # more than a jsonb value can hold
}
HUGE: list[str] = []  # made before the node runs: 300 MB of copying would hold the GIL


@pytest.fixture
def huge() -> Iterator[None]:
    HUGE[:] = ["x" * 300_000_000]
    yield
    HUGE.clear()


async def test_a_result_that_cannot_be_stored_fails_its_own_run_only(
    fast_app: Shigoto, huge: None
) -> None:
    for name, make in POISON.items():
        fast_app.worker(name=name)(lambda make=make: make())
    fast_app.worker(name="retried")(POISON["big_int"])

    @fast_app.worker(name="plain")
    async def plain(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    # The poison among the good ones, so that their outcomes share batches and claims.
    specs = [JobSpec.build("plain", {"n": n}) for n in range(100)]
    for i, name in enumerate(POISON):
        specs.insert(20 * i + 10, JobSpec.build(name, max_attempts=1))
    specs.insert(90, JobSpec.build("retried", max_attempts=3))
    jobs = await fast_app.insert_all(specs)
    ids = {job.worker: job.id for job in jobs if job.worker != "plain"}
    await fast_app.start(queues={"default": 10})

    # A mapping that is not a dict is either stored as the dict it reads as (if the checks
    # turn it into one) or refused; never does it reach the acker as it is.
    plain_proxy = _validate.json_value(POISON["proxy"](), "result")
    if type(plain_proxy["a"]) is dict:
        stored = await _final(fast_app, ids["proxy"])
        assert (stored.state, stored.result) == (JobState.COMPLETED, {"a": {"b": 1}})
    for name in POISON:
        if name == "proxy" and type(plain_proxy["a"]) is dict:
            continue
        job = await _final(fast_app, ids[name])
        assert job.state is JobState.DISCARDED, name
        assert job.errors[-1]["error"] == "shigoto.outcomes.ResultNotStored"
        assert job.errors[-1]["message"].startswith("result could not be stored: "), job.errors
        assert job.result is None
    again = await _failed_once(fast_app, ids["retried"])
    assert again.state in (JobState.RETRYABLE, JobState.AVAILABLE, JobState.EXECUTING)
    assert again.errors[0]["message"].startswith("result could not be stored: ")
    done = [await _final(fast_app, job.id) for job in jobs if job.worker == "plain"]
    assert [job.result for job in done] == list(range(100))
    assert {job.state for job in done} == {JobState.COMPLETED}
    # And the node goes on claiming.
    late = await plain.enqueue({"n": 7})
    assert (await _final(fast_app, late.id)).result == 7


async def test_a_result_over_max_result_bytes_is_refused_on_the_node(dsn: str, schema: str) -> None:
    app = Shigoto(dsn=dsn, schema=schema, max_result_bytes=1000)
    await app.migrate()
    try:

        @app.worker(name="sized", max_attempts=1)
        async def sized(length: int, boxed: bool) -> object:
            return {"t": "y" * length} if boxed else "y" * length

        small = await sized.enqueue({"length": 998, "boxed": False})  # "yy...": 1,000 bytes
        refused = {
            (await sized.enqueue({"length": 999, "boxed": False})).id: "it is 1,001 bytes as JSON",
            (await sized.enqueue({"length": 993, "boxed": True})).id: "it is 1,001 bytes as JSON",
            (await sized.enqueue({"length": 5000, "boxed": False})).id: (
                "a string of 5,000 characters"
            ),
        }
        counts = await drain_queue(app, "default")
        assert counts["completed"] == 1 and counts["discarded"] == 3
        assert (await app.get_job(small.id)).result == "y" * 998  # type: ignore[union-attr]
        for job_id, why in refused.items():
            job = await app.get_job(job_id)
            assert job is not None and job.state is JobState.DISCARDED
            assert job.errors[-1]["message"] == (
                f"result could not be stored: {why}, more than max_result_bytes (1,000)"
            )
    finally:
        await app.close()


def test_max_result_bytes_is_a_setting() -> None:
    assert Config().max_result_bytes == 1 << 20
    assert Config.from_env({"SHIGOTO_MAX_RESULT_BYTES": "2048"}).max_result_bytes == 2048
    for bad in (0, -1, 1 << 30, 1.5, True):
        with pytest.raises(ConfigurationError, match="max_result_bytes"):
            Config(max_result_bytes=bad)  # type: ignore[arg-type]


SECRET = "hunter2-secret-token"


async def _refuse_poison(db: Any, schema: str) -> None:
    """The database refuses a result holding "poison": with PostgreSQL's code for a value
    over one of its limits (an `OperationalError`, as jsonb's own size errors are), and a
    detail quoting the job's args, as a server's errors may."""
    await db.execute(
        sql.SQL(
            "CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.state = 'completed' AND jsonb_typeof(NEW.result) = 'object' "
            "AND NEW.result ? 'poison' THEN RAISE EXCEPTION 'value too large to store' "
            "USING ERRCODE = '54000', DETAIL = 'args: ' || NEW.args::text; END IF; "
            "RETURN NEW; END $$; "
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON {s}.jobs FOR EACH ROW "
            "EXECUTE FUNCTION {s}.refuse()"
        ).format(s=sql.Identifier(schema))
    )


async def test_an_outcome_the_database_refuses_is_a_failure_and_no_secret_is_told(
    dsn: str, schema: str, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The server adds every bound parameter to its error messages (a per-session setting).
    loud = make_conninfo(dsn, options="-c log_parameter_max_length_on_error=-1")
    app = Shigoto(dsn=loud, schema=schema, **FAST)  # type: ignore[arg-type]
    await app.migrate()
    await _refuse_poison(db, schema)
    caplog.set_level(logging.INFO, logger="shigoto")

    @app.worker(name="poisoned")
    async def poisoned(token: str) -> dict[str, str]:
        return {"poison": token}

    @app.worker(name="own_query")
    async def own_query(token: str) -> None:  # the job's own database error
        async with app.connection() as conn:
            await conn.execute("SELECT 1 / 0 WHERE %s::text IS NOT NULL", [token])

    @app.worker(name="plain")
    async def plain(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    @app.on_job_stopped
    async def failing_hook(job: Job) -> None:  # a hook's database error, logged
        if job.worker == "own_query":
            async with app.connection() as conn:
                await conn.execute("SELECT 1 / 0 WHERE %s::text IS NOT NULL", [job.args["token"]])

    try:
        with pytest.raises(psycopg.errors.DivisionByZero) as loudly:  # the setting is on
            async with app.connection() as conn:
                await conn.execute("SELECT 1 / 0 WHERE %s::text IS NOT NULL", [SECRET])
        assert SECRET in str(loudly.value)

        specs = [JobSpec.build("plain", {"n": n}) for n in range(60)]
        specs.insert(10, JobSpec.build("poisoned", {"token": SECRET}, max_attempts=1))
        specs.insert(30, JobSpec.build("poisoned", {"token": SECRET}, max_attempts=3))
        specs.insert(50, JobSpec.build("own_query", {"token": SECRET}, max_attempts=1))
        jobs = await app.insert_all(specs)
        await app.start()

        last, retried, own = (jobs[10], jobs[30], jobs[50])
        stored = await _final(app, last.id)
        assert stored.state is JobState.DISCARDED
        assert stored.errors[-1]["error"] == "ResultNotStored"
        assert stored.errors[-1]["message"] == (
            "result could not be stored: ProgramLimitExceeded: value too large to store"
        )
        again = await _failed_once(app, retried.id)
        assert again.errors[0]["error"] == "ResultNotStored"
        assert again.state in (JobState.RETRYABLE, JobState.AVAILABLE, JobState.EXECUTING)
        failed = await _final(app, own.id)
        assert failed.errors[-1]["message"].startswith("division by zero")
        done = [await _final(app, job.id) for job in jobs if job.worker == "plain"]
        assert [job.result for job in done] == list(range(60))
        late = await plain.enqueue({"n": 7})  # the node goes on claiming
        assert (await _final(app, late.id)).result == 7
        await wait_until(lambda: asyncio.sleep(0, "failing_hook" in caplog.text))

        assert "could not be stored" in caplog.text and "division by zero" in caplog.text
        assert SECRET not in caplog.text
        for job in (stored, again, failed):
            assert SECRET not in json.dumps(job.errors)
    finally:
        await app.stop(timeout=0)
        await app.close()


async def test_a_node_claims_nothing_while_too_many_outcomes_wait(fast_app: Shigoto) -> None:
    from shigoto.db.execution import Ack
    from shigoto.runtime.acker import MAX_PENDING, MAX_PENDING_BYTES

    @fast_app.worker(name="plain")
    async def plain() -> str:
        return "done"

    await fast_app.start()
    node = fast_app.node
    assert node is not None and node._acker is not None
    acker = node._acker
    await node._cancel("acker")  # nothing is written meanwhile: what is added stays
    for n in range(MAX_PENDING):  # outcomes of runs this node does not own: none applies
        acker.add(Ack(10**9 + n, 1, JobState.COMPLETED))
    assert not acker.has_room
    job = await plain.enqueue()
    # The producer waits for the acker's room and does nothing to wait for meanwhile: this
    # window (five poll intervals, and the insert's notification) is where it must hold.
    await asyncio.sleep(1.0)
    assert (await fast_app.get_job(job.id)).state is JobState.AVAILABLE  # type: ignore[union-attr]

    node._spawn("acker", acker.run)
    acker.add(Ack(10**9 - 1, 1, JobState.COMPLETED, size=MAX_PENDING_BYTES))  # bytes count too
    assert (await _final(fast_app, job.id)).state is JobState.COMPLETED
    assert acker.pending == 0 and acker.has_room


async def test_the_node_that_rescues_a_dead_nodes_jobs_calls_the_hooks(
    app: Shigoto, ledger: Any, nodes: Any, dsn: str, schema: str
) -> None:
    """A run cut short by its node's death is a failed run: the node that rescues it calls
    the hooks for it (and `on_discard`, for one on its last attempt)."""
    victim = start_node(nodes, dsn, schema, queues="slow=2")
    again = await app.insert(JobSpec.build("ledger.sleep", {"seconds": 60}, queue="slow"))
    last = await app.insert(
        JobSpec.build("ledger.sleep", {"seconds": 60}, queue="slow", max_attempts=1)
    )

    async def both_started() -> bool:
        return len(await ledger("SELECT job_id FROM {} WHERE event = 'start'")) == 2

    await wait_until(both_started, timeout=30)
    victim.kill()
    victim.wait()

    survivor = Shigoto(dsn=dsn, schema=schema, **FAST)  # type: ignore[arg-type]
    calls: list[tuple[int, JobState, bool, str]] = []

    @survivor.on_job_stopped
    def seen(job: Job, will_retry: bool) -> None:
        calls.append((job.id, job.state, will_retry, job.errors[-1]["error"]))

    await survivor.start(queues={})  # runs nothing itself: it only rescues
    try:
        await wait_until(lambda: asyncio.sleep(0, len(calls) == 2), timeout=30)
    finally:
        await survivor.stop(timeout=0)
        await survivor.close()
    assert sorted(calls) == [
        (again.id, JobState.AVAILABLE, True, "NodeLost"),
        (last.id, JobState.DISCARDED, False, "NodeLost"),
    ]


async def test_outcomes_wait_while_the_database_refuses_every_write(app: Shigoto, dsn: str) -> None:
    """A database that refuses every write (read-only, as after a failover) is waited out:
    the outcome is neither dropped nor replaced by a failure, and is written once it can."""
    from shigoto.db import execution
    from shigoto.db.execution import Ack
    from shigoto.runtime.acker import Acker

    read_only = make_conninfo(dsn, options="-c default_transaction_read_only=on")
    refusing = Shigoto(dsn=read_only, schema=app.config.schema)
    tries: list[str] = []

    async def db(operation: Any) -> Any:
        tries.append("read-only" if refuse else "writable")
        return await (refusing if refuse else app).database.run(operation)

    refuse = True
    await app.database.run(execution.register_node(app.queries, "n1", {"default": 1}, {}))
    job = await app.insert(JobSpec.build("anything"))
    claim = execution.claim(app.queries, queue="default", limit=1, node="n1", fresh_for=30)
    [claimed] = await app.database.run(claim)
    acker = Acker(db, app.queries, "n1")
    writer = asyncio.create_task(acker.run())
    try:
        done = asyncio.ensure_future(
            acker.write(Ack(job.id, claimed.attempt, JobState.COMPLETED, result="ok"))
        )
        await wait_until(lambda: asyncio.sleep(0, tries.count("read-only") >= 4))
        assert not done.done()
        still = await app.get_job(job.id)
        assert still is not None and still.state is JobState.EXECUTING and still.errors == []
        refuse = False
        written = await asyncio.wait_for(done, 20)
        assert written is not None and written.state is JobState.COMPLETED
        stored = await app.get_job(job.id)
        assert stored is not None and (stored.state, stored.result) == (JobState.COMPLETED, "ok")
    finally:
        writer.cancel()
        await refusing.close()
