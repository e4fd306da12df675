"""Which database errors mean "the database is unreachable right now", as opposed to
"this request is wrong".

The difference decides what happens next: a lost connection, a server shutting down or
starting up, a pool with no connection to give are waited out and tried again (nothing
about the request was wrong); an error about the data — a value too large for `jsonb`, a
constraint, a bad parameter — is never retried, since it would fail the same way for ever.
psycopg raises both kinds as `OperationalError` (PostgreSQL's "program limit exceeded" is
one), so the SQLSTATE decides, not the class:

    try:
        ...
    except psycopg.Error as error:
        if is_connection_fault(error):
            raise DatabaseUnavailable(describe(error)) from error
        raise
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

# SQLSTATE classes that say nothing about the request: connection exceptions (08),
# insufficient resources (53: too many connections, out of memory, disk full), operator
# intervention (57: shutdown, crash, "starting up", a statement cancelled by a timeout),
# and transaction rollbacks (40: a deadlock or serialization failure, which a retry of the
# same statement resolves).
_TRANSIENT_CLASSES = ("08", "40", "53", "57")


def is_connection_fault(error: BaseException) -> bool:
    """Whether `error` means the database could not be reached or could not serve the
    request for reasons of its own, so the same request may succeed later."""
    if isinstance(error, PoolClosed):
        return False  # the app was closed: a mistake of the caller's, not an outage
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    # No SQLSTATE: the error came from the client library (the connection broke, the
    # server could not be reached), not from the server.
    return state is None or state.startswith(_TRANSIENT_CLASSES)


def describe(error: BaseException) -> str:
    """One line naming a connection fault, for `DatabaseUnavailable` and the logs: the
    server's primary message (never its detail or context, which may quote a statement's
    parameters) or the client library's."""
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        text = error.diag.message_primary
    else:
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
