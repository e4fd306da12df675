"""The sync facade (`app.sync`) is typed like the async API: the same public methods, with
the same parameters (names, kinds, defaults, annotations), each documented. The only
differences are deliberate, and listed here with their reason."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from shigoto import InvalidJobError, JobState, Shigoto, SyncShigoto

# Async only: they run jobs or register what a running node calls, which needs the event
# loop of the process that runs the node.
ASYNC_ONLY = {
    "worker": "registers a worker with the app (app.sync shares the app's registry)",
    "middleware": "registers middleware with the app (app.sync shares the app's registry)",
    "on": "subscribes to the app's bus, which app.sync shares",
    "events": "an async stream of the app's bus, which app.sync shares",
    "on_job_start": "a hook: a subscription to the app's bus, which app.sync shares",
    "on_job_complete": "a hook: a subscription to the app's bus, which app.sync shares",
    "on_job_fail": "a hook: a subscription to the app's bus, which app.sync shares",
    "on_job_stopped": "a hook: a subscription to the app's bus, which app.sync shares",
    "on_batch_stopped": "a hook: a subscription to the app's bus, which app.sync shares",
    "node": "the node runs on the app's event loop",
    "start": "starts the node",
    "stop": "stops the node",
    "add_queue": "changes the running node's queues",
    "scale_queue": "changes the running node's queues",
    "remove_queue": "changes the running node's queues",
    "pause": "pauses the running node",
    "resume": "resumes the running node",
    "drain_queue": "runs jobs, which needs an event loop",
}
# Sync methods of the same name whose results differ in kind, as they must: the async one
# gives a `psycopg.AsyncConnection` where the sync one gives a `psycopg.Connection`.
DIFFERENT_RESULTS = {"connection"}
# Parameters the sync twin does not take: `timeout` bounds the async check with
# `asyncio.timeout`, which cannot bound a blocking call: the sync check has no timeout.
DIFFERENT_PARAMETERS = {"health": {"timeout"}}
# Async methods that are plain (not coroutine) functions: they do no I/O.
PLAIN_ON_BOTH = {"new_job"}


def _public(cls: type) -> dict[str, object]:
    return {
        name: value
        for klass in reversed(cls.__mro__)
        for name, value in vars(klass).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_both_expose_the_same_public_methods() -> None:
    async_names, sync_names = set(_public(Shigoto)), set(_public(SyncShigoto))
    assert sync_names <= async_names, f"sync only: {sorted(sync_names - async_names)}"
    assert async_names - sync_names == set(ASYNC_ONLY)


@pytest.mark.parametrize("name", sorted(set(_public(SyncShigoto))))
def test_each_sync_method_takes_the_async_ones_parameters(name: str) -> None:
    async_sig = inspect.signature(getattr(Shigoto, name))
    sync_sig = inspect.signature(getattr(SyncShigoto, name))
    left_out = DIFFERENT_PARAMETERS.get(name, set())
    describe = [
        (p.name, p.kind, p.default, p.annotation)
        for p in async_sig.parameters.values()
        if p.name not in left_out
    ]
    assert [
        (p.name, p.kind, p.default, p.annotation) for p in sync_sig.parameters.values()
    ] == describe
    if name not in DIFFERENT_RESULTS:
        assert sync_sig.return_annotation == async_sig.return_annotation
    if name not in PLAIN_ON_BOTH | DIFFERENT_RESULTS:
        assert inspect.iscoroutinefunction(getattr(Shigoto, name))
    assert not inspect.iscoroutinefunction(getattr(SyncShigoto, name))


@pytest.mark.parametrize("cls", [Shigoto, SyncShigoto])
def test_every_public_method_has_a_docstring(cls: type) -> None:
    undocumented = [
        name for name, value in _public(cls).items() if not (inspect.getdoc(value) or "").strip()
    ]
    assert undocumented == []


def test_no_method_takes_arbitrary_filters() -> None:
    """A misspelt filter is a TypeError at the call, not a filter that matches nothing: the
    only `**` parameters are job (or worker) options, each checked by name where used."""
    loose = {
        (name, p.name)
        for cls in (Shigoto, SyncShigoto)
        for name, value in _public(cls).items()
        if callable(value)
        for p in inspect.signature(value).parameters.values()
        if p.kind is inspect.Parameter.VAR_KEYWORD
    }
    assert loose == {
        ("worker", "options"),
        ("new_job", "options"),
        ("enqueue", "options"),
        ("schedule", "options"),
    }


async def test_the_sync_bulk_calls_refuse_an_unknown_filter(app: Shigoto) -> None:
    with pytest.raises(TypeError, match="queues"):
        app.sync.cancel_by(queues="emails")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="state"):
        app.sync.delete_by(state=["completed"])  # type: ignore[call-arg]
    with pytest.raises(InvalidJobError, match="give at least one of"):
        app.sync.retry_by()


async def test_the_sync_bulk_calls_filter_as_the_async_ones_do(app: Shigoto) -> None:
    @app.worker(name="tagged", queue="q1")
    def tagged() -> None: ...

    start = datetime.now(UTC)
    kept = await tagged.enqueue(tags=["keep"])
    gone = [await tagged.enqueue(tags=["drop"]) for _ in range(2)]
    assert app.sync.cancel_by(queue="q1", tags=["drop"], since=start, until=None) == 2
    assert [job.id for job in app.sync.list_jobs(state="cancelled", worker="tagged").jobs] == [
        job.id for job in reversed(gone)
    ]
    assert app.sync.retry_by(worker=["tagged"], states=[JobState.CANCELLED]) == 2
    assert await app.cancel_by(tags=["keep"]) == 1
    assert app.sync.delete_by(queue="q1", states=["cancelled"]) == 1
    assert app.sync.get_job(kept.id) is None
    assert app.sync.status().count("available", "q1") == 2
