"""Unique jobs: at most one job per key among the jobs in chosen states.

    @app.worker(unique=Unique(period=300))            # one per worker + args per 5 minutes
    async def refresh(user_id: int) -> None: ...

    await refresh.enqueue({"user_id": 7}, unique=Unique(keys=["worker", "args.user_id"],
                                                        replace=["priority"], debounce=5))

The key covers the chosen fields (`worker`, `queue`, `args`, or single args keys as
`args.<name>`), rendered as canonical JSON and stored as a SHA-256 hash, never as text.
Inserting while a job with the same key is in one of `states` (and, with `period`, was
inserted less than `period` seconds ago) inserts nothing: the existing job comes back with
`conflict=True`, after `replace` (fields copied from the new job onto it) and `debounce`
(its start pushed to now + debounce). The check runs in the database under a
transaction-level advisory lock on the key, so concurrent inserts from any number of
connections create exactly one job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shigoto import _validate as check
from shigoto.outcomes import InvalidJobError

FIELDS = ("worker", "queue", "args")
REPLACEABLE = ("args", "meta", "tags", "priority", "max_attempts", "scheduled_at")
STATES = ("scheduled", "available", "executing", "retryable", "paused", "waiting")
ALL_STATES = (*STATES, "completed", "discarded", "cancelled")


class Keyed(Protocol):
    """What a key is made of: a job about to be inserted (a `JobSpec`)."""

    @property
    def worker(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def args(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Unique:
    """Uniqueness options; see the module docstring. Every field is checked when made."""

    keys: tuple[str, ...] = ("worker", "args")
    states: tuple[str, ...] = STATES
    period: float | None = None
    replace: tuple[str, ...] = ()
    debounce: float | None = None

    def __init__(
        self,
        keys: Iterable[str] = ("worker", "args"),
        states: Iterable[str] = STATES,
        period: float | None = None,
        replace: Iterable[str] = (),
        debounce: float | None = None,
    ) -> None:
        keys = _names(keys, "unique.keys")
        for key in keys:
            if key not in FIELDS and not (key.startswith("args.") and len(key) > 5):
                raise InvalidJobError(
                    "unique.keys", f"{key!r}: expected worker, queue, args or args.<name>"
                )
        if not keys:
            raise InvalidJobError("unique.keys", "name at least one field")
        states = tuple(str(getattr(state, "value", state)) for state in states)
        for state in states:
            if state not in ALL_STATES:
                raise InvalidJobError("unique.states", f"{state!r} is not a job state")
        if not states:
            raise InvalidJobError("unique.states", "name at least one state")
        replace = _names(replace, "unique.replace")
        for name in replace:
            if name not in REPLACEABLE:
                raise InvalidJobError(
                    "unique.replace", f"{name!r}: expected one of {', '.join(REPLACEABLE)}"
                )
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "states", states)
        object.__setattr__(
            self, "period", None if period is None else check.seconds(period, "unique.period")
        )
        object.__setattr__(self, "replace", replace)
        object.__setattr__(
            self,
            "debounce",
            None if debounce is None else check.seconds(debounce, "unique.debounce"),
        )

    def key_for(self, spec: Keyed) -> str:
        """The hash that identifies `spec` under these options."""
        chosen: dict[str, Any] = {}
        for key in sorted(self.keys):
            if key.startswith("args."):
                chosen[key] = spec.args.get(key[5:])
            else:
                chosen[key] = getattr(spec, key)
        canonical = json.dumps(chosen, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _names(values: Iterable[str], field: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise InvalidJobError(field, "expected a list of names, not a string")
    names = tuple(values)
    for name in names:
        if not isinstance(name, str):
            raise InvalidJobError(field, f"expected names, got {name!r}")
    return tuple(dict.fromkeys(names))


def as_unique(value: object) -> Unique | None:
    """`unique=` as given: None, True (the defaults) or a `Unique`."""
    if value is None or value is False:
        return None
    if value is True:
        return Unique()
    if isinstance(value, Unique):
        return value
    raise InvalidJobError("unique", f"expected a Unique(...) or True, got {value!r}")
