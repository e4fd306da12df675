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

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout

from shigoto.outcomes import DatabaseUnavailable

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


def primary(error: psycopg.Error) -> str:
    """A database error's message without what the server adds after it (detail, hint,
    context): with `log_parameter_max_length_on_error` set, the context quotes the bound
    parameters of the statement, which hold job args and results."""
    text = error.diag.message_primary
    if text:
        return text
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def scrub(text: str, error: BaseException) -> str:
    """`text` (a message or traceback of `error`) with every database error in `error`'s
    chain (its causes and contexts) cut to its `primary` message."""
    for link in _chain(error):
        if isinstance(link, psycopg.Error):
            full, short = str(link), primary(link)
            if full and full != short:
                text = text.replace(full, short)
    return text


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        link = pending.pop()
        if link is None or any(link is s for s in seen):
            continue
        seen.append(link)
        pending += [link.__cause__, link.__context__]
        if isinstance(link, BaseExceptionGroup):
            pending += list(link.exceptions)
    return seen


class Scrubbed(logging.Filter):
    """A logging filter that cuts the database errors in a record (its arguments and its
    traceback) to their primary message, so that no parameter the server quoted in them
    reaches the logs. On each of shigoto's loggers that may log one:

        logger.addFilter(SCRUBBED)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and any(isinstance(e, psycopg.Error) for e in _chain(error)):
            text = "".join(traceback.format_exception(error)).rstrip("\n")
            record.exc_text = scrub(text, error)
        if isinstance(record.args, tuple) and any(
            isinstance(arg, BaseException) for arg in record.args
        ):
            record.args = tuple(
                scrub(str(arg), arg) if isinstance(arg, BaseException) else arg
                for arg in record.args
            )
        return True


SCRUBBED = Scrubbed()


@contextmanager
def unavailable_on_faults() -> Iterator[None]:
    """Raise a connection fault inside the block as `DatabaseUnavailable` (for calls that
    use a connection of their own, such as `wait_for`'s listener; pooled statements do
    the same inline).

        with unavailable_on_faults():
            listener = psycopg.connect(dsn)
    """
    try:
        yield
    except psycopg.OperationalError as error:
        if not is_connection_fault(error):
            raise
        raise DatabaseUnavailable(describe(error), may_have_run=True) from error
