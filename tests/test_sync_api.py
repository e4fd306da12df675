"""The sync facade (`app.sync`) is typed like the async API: the same public methods, with
the same parameters (names, kinds, defaults, annotations), each documented. The only
differences are deliberate, and listed here with their reason."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shigoto import BulkWhere, InvalidJobError, JobState, ListWhere, Shigoto, SyncShigoto

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


def _keywords(annotation: object) -> type | None:
    """The TypedDict of a `**kwargs: Unpack[TypedDict]` parameter's annotation, or None."""
    if typing.get_origin(annotation) is not typing.Unpack:
        return None
    (keywords,) = typing.get_args(annotation)
    assert typing.is_typeddict(keywords), keywords
    return typing.cast(type, keywords)


def _describe(p: inspect.Parameter) -> tuple[object, ...]:
    """A parameter as the two sides must agree on it; a `**kwargs: Unpack[TypedDict]` as
    the keywords it takes, each with its type (not merely the TypedDict's name)."""
    keywords = _keywords(p.annotation)
    if keywords is None:
        return (p.name, p.kind, p.default, p.annotation)
    return (p.name, p.kind, p.default, typing.get_type_hints(keywords))


@pytest.mark.parametrize("name", sorted(set(_public(SyncShigoto))))
def test_each_sync_method_takes_the_async_ones_parameters(name: str) -> None:
    async_sig = inspect.signature(getattr(Shigoto, name), eval_str=True)
    sync_sig = inspect.signature(getattr(SyncShigoto, name), eval_str=True)
    left_out = DIFFERENT_PARAMETERS.get(name, set())
    describe = [_describe(p) for p in async_sig.parameters.values() if p.name not in left_out]
    assert [_describe(p) for p in sync_sig.parameters.values()] == describe
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
    """A misspelt filter is caught at the call, not a filter that matches nothing: the only
    untyped `**` parameters are job (or worker) options, each checked by name where used;
    the filters are `**where: Unpack[...]`, whose keywords a type checker knows."""
    keyword_parameters = {
        (name, p.name): p.annotation
        for cls in (Shigoto, SyncShigoto)
        for name, value in _public(cls).items()
        if callable(value)
        for p in inspect.signature(value, eval_str=True).parameters.values()
        if p.kind is inspect.Parameter.VAR_KEYWORD
    }
    loose = {key for key, annotation in keyword_parameters.items() if _keywords(annotation) is None}
    assert loose == {
        ("worker", "options"),
        ("new_job", "options"),
        ("enqueue", "options"),
        ("schedule", "options"),
    }
    typed = {key: _keywords(annotation) for key, annotation in keyword_parameters.items()}
    assert {key: keywords for key, keywords in typed.items() if keywords is not None} == {
        ("list_jobs", "where"): ListWhere,
        ("cancel_by", "where"): BulkWhere,
        ("retry_by", "where"): BulkWhere,
        ("delete_by", "where"): BulkWhere,
    }
    assert set(typing.get_type_hints(ListWhere)) == {
        "state",
        "queue",
        "worker",
        "tags",
        "since",
        "until",
    }
    assert set(typing.get_type_hints(BulkWhere)) == {
        "states",
        "queue",
        "worker",
        "tags",
        "since",
        "until",
    }


UNKNOWN_FILTERS: list[tuple[str, dict[str, Any], str]] = [
    ("cancel_by", {"queues": "emails"}, "queues: not a filter; the filters are queue, worker"),
    ("delete_by", {"state": ["completed"]}, "state: not a filter; the filters are .*, states$"),
    ("retry_by", {"queue": "emails", "tag": ["x"]}, "tag: not a filter"),
    ("list_jobs", {"states": ["available"]}, "states: not a filter; the filters are .*, state$"),
]


async def _call(app: Shigoto, sync: bool, name: str, where: dict[str, Any]) -> object:
    if sync:
        method: Callable[..., Any] = getattr(app.sync, name)
        return method(**where)
    return await getattr(app, name)(**where)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(("name", "where", "message"), UNKNOWN_FILTERS)
async def test_an_unknown_filter_is_refused_by_name(
    app: Shigoto, sync: bool, name: str, where: dict[str, Any], message: str
) -> None:
    @app.worker(name="kept", queue="emails")
    def kept() -> None: ...

    job = await kept.enqueue(tags=["x"])
    with pytest.raises(InvalidJobError, match=message) as refused:
        await _call(app, sync, name, where)
    assert refused.value.field == next(k for k in where if k != "queue")
    still = await app.get_job(job.id)  # neither cancelled nor deleted
    assert still is not None and still.state is JobState.AVAILABLE


async def test_the_bulk_calls_want_a_filter(app: Shigoto) -> None:
    with pytest.raises(InvalidJobError, match="give at least one of"):
        app.sync.retry_by()
    with pytest.raises(InvalidJobError, match="give at least one of"):
        await app.retry_by()


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
