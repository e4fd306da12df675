"""Bad input, fuzzed: whatever arrives either works (and reads back exactly) or is refused
with a `ShigotoError` naming the field. Nothing corrupts a row, stops a node, or runs as SQL.

Hypothesis drives the sync facade, so each example is a real round trip to PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from shigoto import InvalidJobError, JobSpec, JobState, Shigoto, ShigotoError
from shigoto._validate import MAX_JSON_DEPTH, _check_json, _fits_jsonb

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text with the characters that break naive code: NUL, lone surrogates, quotes, SQL.
nasty_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    st.sampled_from(
        [
            "",
            "'; DROP TABLE jobs; --",
            '" OR 1=1 --',
            "$$; SELECT pg_sleep(10); $$",
            "%(queue)s",
            "{}",
            "\x00",
            "a\ud800b",
            "日本語のキュー",
            "🙂" * 40,
            "x" * 10_000,
        ]
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_like = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(nasty_text, st.integers(), st.none()), inner, max_size=5),
        st.tuples(inner, inner),
        st.sets(st.integers(), max_size=3),
    ),
    max_leaves=30,
)


@pytest.fixture
def sync_app(dsn: str, schema: str) -> Iterator[Shigoto]:
    app = Shigoto(dsn=dsn, schema=schema)
    app.sync.migrate()

    @app.worker(name="fuzz.target")
    def target(**kwargs: Any) -> None: ...

    behaviour = app.fuzz_behaviour = {}  # type: ignore[attr-defined]

    # One attempt each: a refused result then ends its job at once, rather than wait out a
    # retry that a later example's drain would run too (and count as its own).
    @app.worker(name="fuzz.returns", queue="fuzz", max_attempts=1)
    def returns() -> Any:
        return behaviour["result"]

    @app.worker(name="fuzz.raises", queue="fuzz", max_attempts=1)
    def raises() -> None:
        raise ValueError(behaviour["message"])

    yield app
    app.sync.close()


def _rows(app: Shigoto) -> int:
    with app.sync.connection() as conn:
        table = sql.Identifier(app.config.schema, "jobs")
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        return int(row[0]) if row else 0


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: tuples read back as lists; a float comes back a float, an int an int."""
    if isinstance(a, float | int) and not isinstance(a, bool):
        return type(b) is type(a) and a == b
    if isinstance(a, tuple | list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@SETTINGS
@given(args=st.dictionaries(nasty_text, json_like, max_size=6))
def test_any_args_are_stored_exactly_or_refused(sync_app: Shigoto, args: dict[str, Any]) -> None:
    before = _rows(sync_app)
    try:
        job = sync_app.sync.enqueue("fuzz.target", args)
    except InvalidJobError as error:
        assert isinstance(error, ShigotoError)
        assert error.field.startswith("args")
        assert str(error).startswith(f"{error.field}: ")
        assert _rows(sync_app) == before
        return
    stored = sync_app.sync.get_job(job.id)
    assert stored is not None and _same(args, stored.args)


@settings(max_examples=500, deadline=None)
@given(value=json_like)
def test_the_quick_json_check_accepts_only_what_the_full_check_accepts(value: Any) -> None:
    """Inserts check args with a quick pass that names no path; the full check, which
    names the path of an offence, runs only when the quick one fails. The quick one must
    never let through what the full one refuses; on plain dicts, lists and scalars the two
    agree."""
    try:
        _check_json(value, "args", 0)
        accepted = True
    except InvalidJobError:
        accepted = False
    if _fits_jsonb(value, 0):
        assert accepted
    elif _plain(value):
        assert not accepted


def _plain(value: Any) -> bool:
    """Only exact dicts, lists, strings, numbers, booleans and None (no tuple, set...)."""
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if type(value) is list:
        return all(map(_plain, value))
    return value is None or type(value) in (str, int, float, bool)


@SETTINGS
@given(name=nasty_text, queue=nasty_text, tags=st.lists(nasty_text, max_size=4))
def test_any_names_are_stored_verbatim_or_refused(
    sync_app: Shigoto, name: str, queue: str, tags: list[str]
) -> None:
    before = _rows(sync_app)
    try:
        job = sync_app.sync.insert(JobSpec.build(name, {}, queue=queue, tags=tags))
    except InvalidJobError as error:
        assert error.field in {"worker", "queue"} or error.field.startswith("tags")
        assert _rows(sync_app) == before
        return
    stored = sync_app.sync.get_job(job.id)
    assert stored is not None
    assert (stored.worker, stored.queue) == (name, queue)
    assert stored.tags == list(dict.fromkeys(tags))


@SETTINGS
@given(
    queue=st.one_of(st.none(), nasty_text),
    worker=st.one_of(st.none(), nasty_text),
    tags=st.one_of(st.none(), st.lists(nasty_text, max_size=3)),
    state=st.one_of(st.none(), nasty_text, st.sampled_from([s.value for s in JobState])),
)
def test_any_filters_match_as_data_and_change_nothing_they_should_not(
    sync_app: Shigoto,
    queue: str | None,
    worker: str | None,
    tags: list[str] | None,
    state: str | None,
) -> None:
    keep = sync_app.sync.enqueue("fuzz.target", {"keep": True}, queue="keep")
    filters: dict[str, Any] = {"queue": queue, "worker": worker, "tags": tags}
    try:
        page = sync_app.sync.list_jobs(state=state, **filters)
        cancelled = sync_app.sync.cancel_by(**filters, states=None if state is None else [state])
    except ShigotoError as error:
        assert str(error).split(":")[0] in {
            "queue",
            "worker",
            "tags",
            "state",
            "states",
            "filter",
        } or (str(error).startswith("tags["))
        return
    assert all(queue is None or job.queue == queue for job in page.jobs)
    if queue is not None and queue != "keep":
        assert sync_app.sync.get_job(keep.id).state is JobState.AVAILABLE  # type: ignore[union-attr]
    assert cancelled >= 0


def test_nesting_deeper_than_the_limit_is_refused(sync_app: Shigoto) -> None:
    deep: Any = "bottom"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidJobError, match=f"nested more than {MAX_JSON_DEPTH} levels"):
        sync_app.sync.enqueue("fuzz.target", {"deep": deep})
    fine: Any = "bottom"
    for _ in range(MAX_JSON_DEPTH - 1):
        fine = [fine]
    job = sync_app.sync.enqueue("fuzz.target", {"deep": fine})
    assert sync_app.sync.get_job(job.id).args == {"deep": fine}  # type: ignore[union-attr]


def test_a_ten_megabyte_payload_round_trips(sync_app: Shigoto) -> None:
    blob = "é" * (10 * 1024 * 1024 // 2)
    job = sync_app.sync.enqueue("fuzz.target", {"blob": blob, "n": 1})
    stored = sync_app.sync.get_job(job.id)
    assert stored is not None and stored.args["blob"] == blob


@SETTINGS
@given(result=json_like, message=nasty_text)
def test_whatever_a_worker_returns_or_raises_the_node_carries_on(
    sync_app: Shigoto, result: Any, message: str
) -> None:
    """A hostile result or error message becomes a stored result or a clear failure; the
    executor (drain_queue uses the one a node uses) never breaks."""
    sync_app.fuzz_behaviour.update(result=result, message=message)  # type: ignore[attr-defined]
    ok = sync_app.sync.enqueue("fuzz.returns")
    bad = sync_app.sync.enqueue("fuzz.raises")
    counts = asyncio.run(_drain(sync_app))
    assert counts["completed"] + counts["retryable"] + counts["discarded"] == 2
    done = sync_app.sync.get_job(ok.id)
    assert done is not None
    if done.state is JobState.COMPLETED:
        assert _same(result, done.result)
    else:
        assert done.errors[-1]["error"] == "shigoto.outcomes.ResultNotStored"
        assert done.errors[-1]["message"].startswith("result could not be stored: ")
    failed = sync_app.sync.get_job(bad.id)
    assert failed is not None and failed.state is JobState.DISCARDED
    assert failed.errors[-1]["error"] == "ValueError"
    assert "\x00" not in failed.errors[-1]["message"]


async def _drain(app: Shigoto) -> dict[str, int]:
    try:
        return await app.drain_queue("fuzz")
    finally:
        await app.close()
