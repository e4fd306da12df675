"""Job outcomes a worker can return or raise, and shigoto's error hierarchy.

A worker signals anything other than plain success or failure with an outcome:

    from shigoto import Snooze

    async def perform(self, job):
        if not await api_is_up():
            return Snooze(60)      # try again in a minute, no attempt consumed
"""

from __future__ import annotations

from datetime import timedelta


def _seconds(value: float | timedelta, field: str) -> float:
    from shigoto import _validate  # (which needs this module's errors)

    return _validate.seconds(value, field)


class Outcome(Exception):
    """Base of the outcomes a worker may return or raise instead of a value."""


class Snooze(Outcome):
    """Run the job again after `seconds`, without consuming an attempt."""

    def __init__(self, seconds: float | timedelta) -> None:
        self.seconds = _seconds(seconds, "snooze")
        super().__init__(f"snoozed for {self.seconds:g}s")


class RetryAfter(Outcome):
    """Fail this attempt and retry after exactly `seconds` (attempts permitting)."""

    def __init__(self, seconds: float | timedelta, reason: str = "") -> None:
        self.seconds = _seconds(seconds, "retry_after")
        self.reason = reason
        super().__init__(reason or f"retry after {self.seconds:g}s")


class Cancel(Outcome):
    """Stop the job for good: it ends `cancelled`."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "cancelled")


class Discard(Outcome):
    """Give up on the job at once: it ends `discarded`, whatever attempts remain."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "discarded")


class ShigotoError(Exception):
    """Base of every error shigoto raises on purpose."""


class ConfigurationError(ShigotoError):
    """The configuration cannot work (bad schema name, missing DSN and no embedded server...)."""


class EmbeddedServerUnavailable(ConfigurationError):
    """No DSN was given and the embedded PostgreSQL cannot be started."""


class InvalidJobError(ShigotoError, ValueError):
    """A job, or an option for one, was rejected before anything was written.

    `field` names what was wrong (for args, the key path, e.g. `args["user"]["name"]`).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class InvalidEventError(ShigotoError, ValueError):
    """A custom event that cannot be sent: a bad name, or data that is not a small JSON
    object."""


class InvalidScheduleError(ShigotoError, ValueError):
    """A schedule (cron expression, interval, time zone, catch-up policy) was rejected."""


class JobNotFoundError(ShigotoError, LookupError):
    """No job has the given id (it never existed, or was deleted or archived)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class UnknownWorkerError(ShigotoError, LookupError):
    """No worker is registered under the given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"worker: no worker is registered under the name {name!r}")


class DuplicateWorkerError(ShigotoError):
    """Two workers were registered under one name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"worker: a worker named {name!r} is already registered; pass name= to tell them apart"
        )


class DatabaseUnavailable(ShigotoError):
    """The database could not be reached: no connection could be had in time, or the
    connection was lost. Nothing about the request itself was wrong; the same call may
    succeed once the server is back. `__cause__` is the last connection error.

    `may_have_run` tells whether to retry: False when no statement was sent (no
    connection in time), so a retry is always safe; True when the connection broke while
    a statement was on its way, so it may have run (an insert may have committed):
    retry only what may safely happen twice.

        except DatabaseUnavailable as error:
            if not error.may_have_run:
                ...   # nothing was written: try again later
    """

    def __init__(self, message: str = "", *, may_have_run: bool = False) -> None:
        super().__init__(message)
        self.may_have_run = may_have_run


class PoolExhausted(DatabaseUnavailable):
    """The database answers, but every connection of the pool stayed in use for
    `connect_timeout` seconds: jobs or requests that hold connections (`app.connection()`)
    hold them all. A kind of `DatabaseUnavailable` (the same call may succeed later);
    raise `pool_max_size` or hold connections for less time."""


class ResultNotStored(ShigotoError):
    """What a job returned cannot be stored as its result: not JSON (an object, a set,
    an integer too long for JSON, a string with a NUL), or larger than `max_result_bytes`.
    (Other mappings and tuples are stored as the objects and arrays they read as.)
    The run counts as a failure with this error, retried or discarded like any other.

        ResultNotStored("it is 2,000,000 bytes as JSON, more than max_result_bytes (1,048,576)")
    """

    def __init__(self, why: str) -> None:
        super().__init__(f"result could not be stored: {why}")


class MigrationError(ShigotoError):
    """The database schema is missing, newer than this code, or could not be migrated."""
