"""Bad input: each rejection names the field and the problem, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shigoto import (
    ConfigurationError,
    DuplicateWorkerError,
    InvalidJobError,
    JobSpec,
    Shigoto,
    ShigotoError,
    Worker,
)


@pytest.fixture
def greet(app: Shigoto):
    @app.worker(name="greet")
    async def greet(name: str = "") -> None: ...

    return greet


NAIVE = datetime(2030, 1, 1, 12, 0)
LONG_QUEUE = "q" * 129

# (options for Worker.new / enqueue, field named in the error, words of the problem)
BAD_OPTIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"args": [1, 2]}, "args", "must be a JSON object (a dict), got list"),
    ({"args": "to=a@b.c"}, "args", "must be a JSON object (a dict), got str"),
    ({"args": {"a": {"b": [1, {2, 3}]}}}, 'args["a"]["b"][1]', "set is not JSON-serializable"),
    ({"args": {"when": datetime.now(UTC)}}, 'args["when"]', "datetime is not JSON-serializable"),
    ({"args": {"obj": object()}}, 'args["obj"]', "object is not JSON-serializable"),
    ({"args": {1: "one"}}, "args[1]", "keys must be strings, got int"),
    ({"args": {"x": float("nan")}}, 'args["x"]', "nan is not a JSON number"),
    ({"args": {"x": [float("inf")]}}, 'args["x"][0]', "inf is not a JSON number"),
    ({"args": {"name": "a\x00b"}}, 'args["name"]', "NUL character"),
    ({"args": {"a\x00": 1}}, "args['a\\x00']", "NUL character"),
    ({"args": {"name": "a\ud800b"}}, 'args["name"]', "lone surrogate"),
    ({"meta": ["not", "an", "object"]}, "meta", "must be a JSON object"),
    ({"meta": {"note": "\x00"}}, 'meta["note"]', "NUL character"),
    ({"queue": ""}, "queue", "must not be empty"),
    ({"queue": LONG_QUEUE}, "queue", "is 129 characters long; at most 128"),
    ({"queue": "a\x00b"}, "queue", "NUL character"),
    ({"queue": "a\udc00"}, "queue", "lone surrogate"),
    ({"queue": 5}, "queue", "must be a string, got int"),
    ({"priority": 40_000}, "priority", "must be between -32768 and 32767, got 40000"),
    ({"priority": -40_000}, "priority", "must be between -32768 and 32767"),
    ({"priority": "high"}, "priority", "must be an integer, got str"),
    ({"priority": True}, "priority", "must be an integer, got bool"),
    ({"priority": 1.5}, "priority", "must be an integer, got float"),
    ({"max_attempts": 0}, "max_attempts", "must be between 1 and 10000, got 0"),
    ({"max_attempts": 10_001}, "max_attempts", "must be between 1 and 10000"),
    ({"max_attempts": "3"}, "max_attempts", "must be an integer, got str"),
    ({"scheduled_at": NAIVE}, "scheduled_at", "naive datetime"),
    ({"scheduled_at": "2030-01-01"}, "scheduled_at", "must be a datetime, got str"),
    (
        {"scheduled_at": datetime.now(UTC), "scheduled_in": 5},
        "scheduled_at",
        "give scheduled_at or scheduled_in, not both",
    ),
    ({"scheduled_in": -1}, "scheduled_in", "must be >= 0"),
    ({"scheduled_in": "soon"}, "scheduled_in", "must be a number of seconds or a timedelta"),
    ({"tags": "urgent"}, "tags", "must be a list of strings"),
    ({"tags": ["ok", ""]}, "tags[1]", "must not be empty"),
    ({"tags": [7]}, "tags[0]", "must be a string, got int"),
    ({"tags": ["a\x00"]}, "tags[0]", "NUL character"),
    ({"tags": [f"t{i}" for i in range(65)]}, "tags", "has 65 tags; at most 64"),
    ({"partition_key": ""}, "partition_key", "must not be empty"),
    ({"partition_key": "p\x00"}, "partition_key", "NUL character"),
    ({"origin": "o" * 256}, "origin", "at most 255"),
]


def _ids(case: tuple[dict[str, Any], str, str]) -> str:
    return case[1]


@pytest.mark.parametrize(("options", "field", "problem"), BAD_OPTIONS, ids=map(_ids, BAD_OPTIONS))
async def test_bad_job_input_is_rejected_and_nothing_is_written(
    app: Shigoto, greet, count_jobs, options: dict[str, Any], field: str, problem: str
) -> None:
    options = dict(options)
    args = options.pop("args", {"name": "x"})

    with pytest.raises(InvalidJobError) as raised:
        await greet.enqueue(args, **options)
    with pytest.raises(InvalidJobError):
        app.sync.enqueue("greet", args, **options)

    error = raised.value
    assert isinstance(error, ShigotoError)
    assert error.field == field
    assert problem in str(error)
    assert str(error).startswith(f"{field}: ")
    assert await count_jobs() == 0


async def test_a_bad_spec_in_a_bulk_insert_writes_none_of_them(
    app: Shigoto, greet, count_jobs
) -> None:
    specs: list[Any] = [greet.new({"name": "a"}), {"worker": "greet"}, greet.new({"name": "b"})]
    with pytest.raises(InvalidJobError, match=r"^spec: expected a JobSpec"):
        await app.insert_all(specs)
    with pytest.raises(InvalidJobError, match=r"^spec: expected a JobSpec"):
        await app.insert("greet")  # type: ignore[arg-type]
    assert await count_jobs() == 0


@pytest.mark.parametrize(
    ("worker", "problem"),
    [("", "worker: must not be empty"), ("w" * 256, "worker: is 256 characters long")],
)
async def test_bad_worker_names_are_rejected(
    app: Shigoto, count_jobs, worker: str, problem: str
) -> None:
    with pytest.raises(InvalidJobError, match=problem):
        JobSpec.build(worker, {})
    with pytest.raises(InvalidJobError, match=problem):
        await app.enqueue(worker, {})
    assert await count_jobs() == 0


async def test_registering_two_workers_under_one_name_fails(app: Shigoto, greet) -> None:
    with pytest.raises(DuplicateWorkerError, match="'greet' is already registered"):

        @app.worker(name="greet")
        def other() -> None: ...

    assert app.workers.get("greet") is type(greet)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"queue": ""}, InvalidJobError, "queue: must not be empty"),
        ({"timeout": 0}, InvalidJobError, "timeout: must be > 0"),
        ({"max_attempts": 0}, InvalidJobError, "max_attempts: must be between 1 and 10000"),
        ({"name": "n\x00"}, InvalidJobError, "name: contains a NUL character"),
        ({"backoff": 5}, ConfigurationError, "backoff must be callable"),
        ({"retries": 5}, ConfigurationError, "unknown option(s) retries"),
    ],
)
def test_bad_worker_options_are_rejected(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    app = Shigoto(dsn="postgresql://unused")
    with pytest.raises(error) as raised:
        app.worker(**options)(lambda: None)
    assert message in str(raised.value)
    assert len(app.workers) == 0


def test_class_attributes_are_checked_too() -> None:
    app = Shigoto(dsn="postgresql://unused")

    class Bad(Worker):
        priority = 99_999

        def perform(self, job: Any) -> None: ...

    with pytest.raises(InvalidJobError, match="priority: must be between"):
        app.worker(Bad)


def test_worker_without_perform_is_rejected() -> None:
    app = Shigoto(dsn="postgresql://unused")

    class Empty(Worker):
        pass

    with pytest.raises(ConfigurationError, match="must define perform"):
        app.worker(Empty)


def test_unregistered_worker_cannot_make_jobs() -> None:
    class Loose(Worker):
        def perform(self, job: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="not registered"):
        Loose.new({})


BAD_FILTERS: list[tuple[str, Callable[[Shigoto], Any], type[Exception], str]] = [
    ("no filter", lambda app: app.cancel_by(), InvalidJobError, "filter: give at least one"),
    (
        "final state",
        lambda app: app.cancel_by(states=["completed"]),
        InvalidJobError,
        "states: completed not allowed here",
    ),
    (
        "unknown state",
        lambda app: app.retry_by(states=["bogus"]),
        InvalidJobError,
        "state: 'bogus' is not a job state",
    ),
    (
        "running job",
        lambda app: app.retry_by(states=["executing"]),
        InvalidJobError,
        "states: executing not allowed here",
    ),
    ("limit", lambda app: app.list_jobs(limit=0), InvalidJobError, "limit: must be between 1"),
    (
        "naive since",
        lambda app: app.list_jobs(since=NAIVE),
        InvalidJobError,
        "since: is a naive datetime",
    ),
    ("empty queue", lambda app: app.list_jobs(queue=""), InvalidJobError, "queue: must not be"),
    (
        "negative age",
        lambda app: app.delete_finished(older_than=-5),
        InvalidJobError,
        "older_than: must be >= 0",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [c[1:] for c in BAD_FILTERS], ids=[c[0] for c in BAD_FILTERS]
)
async def test_bad_admin_filters_are_rejected_and_change_nothing(
    app: Shigoto, greet, call: Any, error: type[Exception], message: str
) -> None:
    job = await greet.enqueue({"name": "x"})
    with pytest.raises(error, match=message):
        await call(app)
    assert await app.get_job(job.id) == job


def test_a_long_key_is_cut_in_the_error_path_so_the_message_stays_readable() -> None:
    # Found by the fuzz test: a 2,000-character key made the path so long that the stored
    # message lost its beginning (the field's name).
    key = "x" * 2000
    with pytest.raises(InvalidJobError) as caught:
        JobSpec.build("w", {key: {1, 2}})
    message = str(caught.value)
    assert message.startswith('args["xxx') and "…" in message
    assert len(message) < 200
