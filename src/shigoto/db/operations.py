"""Database operations written once and run by either an async or a sync connection.

Each operation is a generator: it yields `Statement`s, receives each one's `Result`, and
returns its value. `run_async` and `run_sync` drive it, so the async API and the sync
facade share every line of logic and SQL:

    def get_job(q: Queries, job_id: int) -> Operation[Job | None]:
        result = yield Statement(q.sql("get_job"), {"id": job_id})
        return job_from_row(result.rows[0]) if result.rows else None
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row

from shigoto.outcomes import MigrationError

T = TypeVar("T")


# (Plain slotted dataclasses, not frozen ones: every statement makes one of each, and a
# frozen dataclass costs several times as much to build.)
@dataclass(slots=True)
class Statement:
    sql: LiteralString
    params: Mapping[str, Any] | None = None
    # Rows as tuples rather than dicts: for the claim, whose rows become Jobs by position.
    tuples: bool = False


@dataclass(slots=True)
class Result:
    rows: list[Any] = field(default_factory=list)  # dicts, or tuples if the statement asked
    rowcount: int = 0


Operation = Generator[Statement, Result, T]


def _has_rows(cur: psycopg.AsyncCursor[Any] | psycopg.Cursor[Any]) -> bool:
    """Whether the statement returned rows (a column count; `cur.description` would build
    a Column object per column of every result, a cost on the hot path)."""
    result = cur.pgresult
    return result is not None and result.nfields > 0


def _cursor(conn: Any, tuples: bool) -> Any:
    """The connection's cursor for our statements (one for tuple rows, one for dicts),
    kept on the connection and used again: a new cursor copies the connection's adapters
    and converts the statement anew, while one that runs the same statement again skips
    both. A statement costs 149,000 instructions instead of 175,000 (callgrind), and a
    busy node runs thousands a second. (A connection is only ever used by one caller at a
    time; the cursor keeps the last result until the next statement.)"""
    try:
        cursors: dict[bool, Any] = conn._shigoto_cursors
    except AttributeError:
        cursors = conn._shigoto_cursors = {}
    cur = cursors.get(tuples)
    if cur is None or cur.closed:
        cur = cursors[tuples] = conn.cursor(row_factory=tuple_row if tuples else dict_row)
    return cur


def _ended(operation: Operation[T], error: BaseException) -> T:
    """How driving `operation` (async or sync) ended: its value once it has returned, or
    else `error` raised again after closing it (a missing schema as a MigrationError that
    says what to do)."""
    if isinstance(error, StopIteration):
        return error.value  # type: ignore[no-any-return]
    operation.close()
    if isinstance(error, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        raise MigrationError(
            f"the shigoto tables are missing ({error.diag.message_primary}); "
            "run `shigoto migrate` or `await app.migrate()` first"
        ) from error
    raise error


async def run_async(
    conn: psycopg.AsyncConnection[Any], operation: Operation[T], *, transaction: bool = False
) -> T:
    """Drive `operation` on an async connection, inside a transaction if asked."""
    if transaction:
        async with conn.transaction():
            return await run_async(conn, operation)
    try:
        statement = next(operation)
        while True:
            cur = _cursor(conn, statement.tuples)
            await cur.execute(statement.sql, statement.params)
            rows = await cur.fetchall() if _has_rows(cur) else []
            statement = operation.send(Result(rows, cur.rowcount))
    except BaseException as error:  # StopIteration when it returns
        return _ended(operation, error)


def run_sync(
    conn: psycopg.Connection[Any], operation: Operation[T], *, transaction: bool = False
) -> T:
    """Drive `operation` on a sync connection, inside a transaction if asked."""
    if transaction:
        with conn.transaction():
            return run_sync(conn, operation)
    try:
        statement = next(operation)
        while True:
            cur = _cursor(conn, statement.tuples)
            cur.execute(statement.sql, statement.params)
            rows = cur.fetchall() if _has_rows(cur) else []
            statement = operation.send(Result(rows, cur.rowcount))
    except BaseException as error:  # StopIteration when it returns
        return _ended(operation, error)
