"""JSON values in and out of the database: exactly what went in comes out, with orjson
(the `fast` extra) and without it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shigoto import Shigoto, _json
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
