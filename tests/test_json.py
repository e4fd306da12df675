"""JSON values in and out of the database: exactly what went in comes out, with orjson
(the `fast` extra) and without it."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shigoto import Job, JobSpec, Shigoto, _json
from shigoto.testing import drain_queue

# JSON values jsonb stores as given: no NaN or infinities, no NUL, no lone surrogates.
_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)

AWKWARD = {
    "beyond_64_bits": 2**70,
    "digits": 12345678901234567890123,
    "negative": -(2**65),
    "in_a_string": "12345678901234567890123",
    "float": 0.1,
    "unicode": "こんにちは — ☃",
    "empty": [{}, [], ""],
    "nested": {"a": [1, {"b": None}]},
}


@pytest.fixture(params=["orjson", "standard library"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "standard library":
        monkeypatch.setattr(_json, "orjson", None)
    return str(request.param)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_a_value_reads_back_as_the_standard_library_reads_it(value: Any) -> None:
    expected = json.loads(json.dumps(value))
    assert _json.loads(_json.dumps(value).encode()) == expected
    assert _json.loads(json.dumps(value).encode()) == expected


async def test_args_and_results_come_back_exactly(app: Shigoto, parser: str) -> None:
    """Integers beyond 64 bits (which orjson would turn into floats) keep every digit, in
    a job's args as inserted, as the worker sees them, and in its result."""
    seen: list[dict[str, Any]] = []

    @app.worker(name="echo")
    async def echo(**args: Any) -> dict[str, Any]:
        seen.append(args)
        return args

    inserted = await echo.enqueue(AWKWARD)
    assert (await app.get_job(inserted.id)).args == AWKWARD  # type: ignore[union-attr]
    assert (await drain_queue(app, "default"))["completed"] == 1
    assert seen == [AWKWARD]
    assert (await app.get_job(inserted.id)).result == AWKWARD  # type: ignore[union-attr]
    many = await app.insert_all([echo.new(AWKWARD), echo.new({})])
    assert [(await app.get_job(job.id)).args for job in many] == [AWKWARD, {}]  # type: ignore[union-attr]


# Floats jsonb would give back as ints if written as orjson and json write them (`1e+16`),
# and the longest ints shigoto takes (4,300 digits, as many as Python reads by default).
NUMBERS = {
    "1e16": 1e16,
    "-1.5e300": -1.5e300,
    "largest": sys.float_info.max,
    "1.2345678901234568e+17": 123456789012345678.0,
    "smallest": 5e-324,
    "1e-300": 1e-300,
    "one": 1.0,
    "int 1e16": 10**16,
    "4,300 digits": 10**4300 - 1,
    "-4,300 digits": -(10**4300 - 1),
    "in a string": "1e+16 and 2e+20",
    "nested": [{"x": 2.5e20}],
}


def exactly(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (a float is never an int)."""
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(exactly(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(b) is list and len(a) == len(b) and all(map(exactly, a, b))
    return type(a) is type(b) and a == b


async def test_floats_come_back_as_floats_and_ints_as_ints(app: Shigoto, parser: str) -> None:
    """1e16 came back as the int 10000000000000000, from every way in."""

    @app.worker(name="echo")
    async def echo(**args: Any) -> dict[str, Any]:
        return args

    async def stored(job_id: int) -> Job:
        job = await app.get_job(job_id)
        assert job is not None
        return job

    one = await echo.enqueue(NUMBERS, meta=NUMBERS)
    assert exactly(NUMBERS, (await stored(one.id)).args)
    assert exactly(NUMBERS, (await stored(one.id)).meta)
    synced = app.sync.insert(echo.new(NUMBERS))
    [many] = await app.insert_all([echo.new(NUMBERS)])
    [bulk] = await app.insert_many(echo.new(), [NUMBERS])
    for job_id in (synced.id, many.id, bulk):
        assert exactly(NUMBERS, (await stored(job_id)).args)
    await app.schedule("numbers", "0 3 * * *", echo, NUMBERS)
    [schedule] = await app.schedules()
    assert exactly(NUMBERS, schedule.args)

    assert (await drain_queue(app, "default"))["completed"] == 4
    assert exactly(NUMBERS, (await stored(one.id)).result)


async def test_negative_zero_comes_back_as_zero(app: Shigoto) -> None:
    """jsonb's numbers have no negative zero (as the docs say)."""
    job = await app.insert(JobSpec.build("w", {"z": -0.0}))
    stored = await app.get_job(job.id)
    assert stored is not None
    assert exactly({"z": 0.0}, stored.args) and math.copysign(1, stored.args["z"]) == 1


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_any_json_value_comes_back_from_the_database_exactly(sync_app: Shigoto, value: Any) -> None:
    job = sync_app.sync.insert(JobSpec.build("w", {"value": value}))
    stored = sync_app.sync.get_job(job.id)
    assert stored is not None
    assert exactly({"value": value}, stored.args)  # (-0.0 == 0.0: its sign is not compared)


@pytest.fixture
def sync_app(dsn: str, schema: str) -> Iterator[Shigoto]:
    app = Shigoto(dsn=dsn, schema=schema)
    app.sync.migrate()
    yield app
    app.sync.close()


def test_floats_are_written_in_full_in_either_exponent_form_and_strings_are_left_alone() -> None:
    """orjson before 3.11.7 writes `1e16`, later ones and the standard library `1e+16`."""
    written = '["1e16", 1e16, "a\\\\\\"1e+16", -2.5e+20, 1e-7, {"1e+5": 3e16}]'
    assert _json._STRING_OR_EXPONENT.sub(_json._in_full, written) == (
        '["1e16", 10000000000000000.0, "a\\\\\\"1e+16", -250000000000000000000.0, 1e-7, '
        '{"1e+5": 30000000000000000.0}]'
    )
    assert _json.dumps({"1e+16": 1e16}) == '{"1e+16":10000000000000000.0}'
