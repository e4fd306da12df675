"""JSON on the hot path: orjson when it is installed (`pip install 'shigoto[fast]'`), the
standard library otherwise. Both give the same values: what orjson would read or write
differently, the standard library does.

    _json.dumps([{"id": 1}])        # '[{"id":1}]'
    _json.loads(b'{"to": "a@b.c"}')  # {'to': 'a@b.c'}

`use_on(conn)` makes a connection read and write `json`/`jsonb` values with these.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from psycopg.abc import AdaptContext
from psycopg.types.json import set_json_dumps, set_json_loads

try:
    import orjson
except ImportError:  # the `fast` extra is not installed
    orjson = None  # type: ignore[assignment]

# orjson reads an integer beyond 64 bits as a float, silently losing digits; the standard
# library keeps it exact. A run of 19 digits may be such a number (or part of a string,
# which costs only the slower parser).
_LONG_DIGITS = re.compile(rb"\d{19}")


def loads(data: str | bytes) -> Any:
    """A JSON document's value, from its text (UTF-8 bytes, as PostgreSQL sends it)."""
    if isinstance(data, str):
        data = data.encode()
    if data == b"{}":  # empty args, meta: most jobs
        return {}
    if data == b"[]":  # no errors yet
        return []
    if orjson is None or _LONG_DIGITS.search(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # 1e400, say, which the standard library reads as inf
        return json.loads(data)


# PostgreSQL's jsonb keeps a number as `numeric`, which prints one written with a positive
# exponent (as orjson and json write a float of 1e16 and beyond: `1e+16`) without a decimal
# point: the float would come back as an int. Such a float is written out in full with
# ".0" (`10000000000000000.0`), which jsonb prints as written. The quick test looks for
# the exponent's mark anywhere (a string may hold it too); only then the exact rewrite
# runs, which steps over strings. (orjson before 3.11.7 writes `1e16`: no "+" to look for.)
_EXPONENT_MARK = "e+" if orjson is None or orjson.dumps(1e16) == b"1e+16" else "e"
_STRING_OR_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?e\+?\d+')


def _in_full(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    written = f"{Decimal(token):f}"
    return written if "." in written else written + ".0"


def dumps(value: Any) -> str:
    """The JSON text of `value` (checked at the edge: JSON types only), written so that
    every float reads back from jsonb as a float."""
    try:
        text = json.dumps(value) if orjson is None else orjson.dumps(value).decode()
    except TypeError:  # orjson: integers beyond 64 bits, lone surrogates; the slower way
        text = json.dumps(value)
    if _EXPONENT_MARK in text:
        return _STRING_OR_EXPONENT.sub(_in_full, text)
    return text


def use_on(conn: AdaptContext) -> None:
    """Have `conn` read and write `json` and `jsonb` with `loads` and `dumps`."""
    set_json_loads(loads, conn)
    set_json_dumps(dumps, conn)
