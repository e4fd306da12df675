"""Checks applied at the edge, before anything reaches the database.

Every check raises `InvalidJobError(field, problem)` so the message names what was wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shigoto.errors import ConfigurationError, InvalidJobError

MAX_NAME_LENGTH = 255
MAX_QUEUE_LENGTH = 128
MAX_TAG_LENGTH = 255
MAX_TAGS = 64
PRIORITY_RANGE = (-32768, 32767)  # stored as smallint
MAX_ATTEMPTS_RANGE = (1, 10_000)
MAX_JSON_DEPTH = 200  # deeper than any sane payload; far from Python's and PostgreSQL's limits
# Integers in JSON: at most 4,300 digits, the most Python converts to and from text by
# default (`sys.get_int_max_str_digits`): a longer one could be written by a process that
# raised that limit and then not be read by a node that did not.
MAX_INT_DIGITS = 4300
_INT_LIMIT: int = 10**MAX_INT_DIGITS
_INT_FLOOR = -_INT_LIMIT  # (negating the limit for every int checked would copy it)
# Durations (timeouts, delays, periods, intervals): at most 100 years, so that now plus or
# minus one is a moment both Python (years 1-9999) and PostgreSQL can hold.
MAX_SECONDS = 100 * 365.25 * 24 * 3600
JOB_ID_RANGE = (1, 2**63 - 1)  # bigint

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` for an error message: at most `limit` characters, and safe for an
    integer too long to print (Python refuses one of over 4,300 digits)."""
    if type(value) is int and value.bit_length() > 192:
        return f"a {value.bit_length()}-bit integer"
    try:
        text = repr(value)
    except Exception:  # a repr that fails says nothing about the problem: the type does
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def schema_name(name: str) -> str:
    """Return `name` if it is a safe, unquoted PostgreSQL schema name, else raise."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise ConfigurationError(
            f"schema: {name!r} is not a valid schema name "
            "(lower-case letters, digits and _, starting with a letter or _, at most 63, no pg_)"
        )
    return name


def text(value: object, field: str, *, max_length: int) -> str:
    """A non-empty string PostgreSQL can store (no NUL), at most `max_length` characters."""
    # The common case first, in one go: a job inserted checks a name or two.
    if type(value) is str and 0 < len(value) <= max_length and _fits_string(value):
        return value
    if not isinstance(value, str):
        raise InvalidJobError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidJobError(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidJobError(field, f"is {len(value)} characters long; at most {max_length}")
    _check_string(value, field)
    return value


def queue(value: object, field: str = "queue") -> str:
    return text(value, field, max_length=MAX_QUEUE_LENGTH)


def worker_name(value: object, field: str = "worker") -> str:
    return text(value, field, max_length=MAX_NAME_LENGTH)


def integer(value: object, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if type(value) is int and low <= value <= high:  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidJobError(field, f"must be between {low} and {high}, got {shown(value)}")
    return value


def job_id(value: object, field: str = "job_id") -> int:
    """A job's (or batch's) id: an `int` a bigint can hold, never a string or a bool."""
    return integer(value, field, JOB_ID_RANGE)


def priority(value: object) -> int:
    return integer(value, "priority", PRIORITY_RANGE)


def max_attempts(value: object) -> int:
    return integer(value, "max_attempts", MAX_ATTEMPTS_RANGE)


def seconds(value: object, field: str, *, allow_zero: bool = True) -> float:
    """A duration given as seconds (int/float) or a `timedelta`, returned in seconds:
    finite, not negative, at most `MAX_SECONDS` (100 years).

        seconds(timedelta(minutes=5), "timeout")   # 300.0
    """
    raw = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidJobError(
            field, f"must be a number of seconds or a timedelta, got {shown(value)}"
        )
    # Compared before any conversion: float() of a huge int overflows; NaN fails every test.
    if not 0 <= raw <= MAX_SECONDS:
        if raw != raw or raw in (math.inf, -math.inf):
            raise InvalidJobError(field, f"must be a finite number of seconds, got {value!r}")
        if raw < 0:
            sign = ">= 0" if allow_zero else "> 0"
            raise InvalidJobError(field, f"must be {sign}, got {shown(value)}")
        raise InvalidJobError(
            field, f"must be at most {MAX_SECONDS:.0f} seconds (100 years), got {shown(value)}"
        )
    if raw == 0 and not allow_zero:
        raise InvalidJobError(field, f"must be > 0, got {value!r}")
    return float(raw)


def aware_datetime(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidJobError(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobError(
            field,
            "is a naive datetime; give it a time zone (e.g. datetime.now(UTC)), "
            "shigoto does not guess one",
        )
    return value.astimezone(UTC)


def tags(value: object, field: str = "tags") -> list[str]:
    if type(value) in (list, tuple) and not value:  # the common case, checked cheaply
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidJobError(field, "must be a list of strings")
    result = [text(tag, f"{field}[{i}]", max_length=MAX_TAG_LENGTH) for i, tag in enumerate(value)]
    if len(result) > MAX_TAGS:
        raise InvalidJobError(field, f"has {len(result)} tags; at most {MAX_TAGS}")
    return list(dict.fromkeys(result))  # drop duplicates, keep order


def json_object(value: object, field: str) -> dict[str, Any]:
    """Check that `value` is a JSON object PostgreSQL `jsonb` can store, and return it as
    plain JSON: dicts, lists, str, int, float, bool and None (another `Mapping` becomes a
    dict, a tuple a list, at any depth).

    Rejects non-string keys, values JSON cannot express (sets, objects, NaN...), integers
    beyond `MAX_INT_DIGITS` digits and NUL characters, naming the key path of the first
    offence: `args["user"]["tags"][2]`.
    """
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidJobError(field, f"must be a JSON object (a dict), got {type(value).__name__}")
    if value and not _fits_jsonb(value, 0):
        plain: dict[str, Any] = _check_json(value, field, 0)  # raises, naming the path
        return plain
    return dict(value)


def json_value(value: object, field: str) -> Any:
    """Check that `value` (any JSON value: a job's result, say) fits in `jsonb`; return it
    as plain JSON (see `json_object`)."""
    if not _fits_jsonb(value, 0):
        return _check_json(value, field, 0)
    return value


def _check_string(value: str, path: str, what: str = "") -> None:
    """`_fits_string`, raising for a string that does not fit, with what is wrong."""
    if _fits_string(value):
        return
    if "\x00" in value:
        raise InvalidJobError(
            path, f"{what}contains a NUL character, which PostgreSQL jsonb cannot store"
        )
    raise InvalidJobError(
        path, f"{what}contains a lone surrogate (not valid Unicode), which jsonb cannot store"
    )


def key_path(path: str, key: str) -> str:
    """The path of `key` inside `path`, as errors show it: `args["user"]`."""
    return f"{path}[{_short(json.dumps(key))}]"


def _short(key: str, limit: int = 60) -> str:
    """A key as shown in an error's path: long ones cut, so the message stays readable."""
    return key if len(key) <= limit else key[: limit - 1] + "…"


def _fits_jsonb(value: object, depth: int) -> bool:
    """Whether `value` is JSON that jsonb can store: `_check_json`'s rules, without
    building the path of every key on the way (which costs more than the check itself,
    for every job inserted); `_check_json` runs only on a value that fails, for its
    message. Exact types only: a subclass, a tuple or another Mapping goes to
    `_check_json` too, which decides."""
    if type(value) is str:
        return _fits_string(value)
    if type(value) is int:
        return _INT_FLOOR < value < _INT_LIMIT
    if value is None or type(value) is bool:
        return True
    if type(value) is float:
        return math.isfinite(value)
    if depth >= MAX_JSON_DEPTH:
        return False
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str or not _fits_string(key) or not _fits_jsonb(item, depth + 1):
                return False
        return True
    if type(value) is list:
        return all(_fits_jsonb(item, depth + 1) for item in value)
    return False


def _fits_string(value: str) -> bool:
    """No NUL and valid Unicode (no lone surrogate): what PostgreSQL can store."""
    if "\x00" in value:
        return False
    if value.isascii():  # O(1) in CPython; an ASCII string holds no lone surrogate
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: object, path: str, depth: int) -> Any:
    """`value` as plain JSON (see `json_object`); raises `InvalidJobError` naming the path
    of the first thing jsonb cannot store."""
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        if not _INT_FLOOR < value < _INT_LIMIT:
            raise InvalidJobError(
                path,
                f"is an integer of more than {MAX_INT_DIGITS} digits (at most {MAX_INT_DIGITS})",
            )
        return int(value)
    if isinstance(value, str):
        _check_string(value, path)
        return str.__str__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobError(path, f"{value!r} is not a JSON number")
        return float(value)
    if depth >= MAX_JSON_DEPTH and isinstance(value, Mapping | list | tuple):
        raise InvalidJobError(path, f"is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobError(
                    f"{path}[{key!r}]", f"keys must be strings, got {type(key).__name__}"
                )
            _check_string(key, f"{path}[{_short(repr(key))}]", "key ")
            plain[str.__str__(key)] = _check_json(item, key_path(path, key), depth + 1)
        return plain
    if isinstance(value, list | tuple):
        return [
            _check_json(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
        ]
    raise InvalidJobError(path, f"{type(value).__name__} is not JSON-serializable")
