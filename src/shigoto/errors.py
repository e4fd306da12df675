"""shigoto's errors: each a `ShigotoError`, raised on purpose with a message that says
what was wrong.

    try:
        await app.insert(spec)
    except InvalidJobError as error:
        print(error.field, error.problem)
"""

from __future__ import annotations

from typing import Any


class ShigotoError(Exception):
    """Base of every error shigoto raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, not by calling __init__ again with the
        # message (which would prefix it twice, or fail for a two-argument __init__): an
        # error sent to another process (multiprocessing, a result backend) reads the same.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[ShigotoError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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


__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "DuplicateWorkerError",
    "EmbeddedServerUnavailable",
    "InvalidEventError",
    "InvalidJobError",
    "InvalidScheduleError",
    "JobNotFoundError",
    "MigrationError",
    "PoolExhausted",
    "ResultNotStored",
    "ShigotoError",
    "UnknownWorkerError",
]

# A job's `errors` record an error by module and name, and pickle finds a class by them:
# these keep the names they had before this module was split from `shigoto.outcomes`
# (which still exports them), so that a job's history names one error one way.
for _name in __all__:
    globals()[_name].__module__ = "shigoto.outcomes"
del _name
