"""Versioned schema migrations: `migrations/NNNN_what.sql`, applied in order, recorded.

Applying takes a transaction-level advisory lock first, so any number of processes may
migrate at once: one applies, the others wait and then find nothing left to do. Each run
applies every pending migration in one transaction, so a failure leaves nothing half-done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import LiteralString

from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries, bind_schema

_FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: LiteralString


def all_migrations(schema: str) -> list[Migration]:
    """Every migration shipped with this version of shigoto, in order."""
    found = []
    for entry in resources.files("shigoto.db").joinpath("migrations").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match:
            sql = bind_schema(entry.read_text("utf-8"), schema)
            found.append(Migration(int(match[1]), match[2], sql))
    return sorted(found, key=lambda m: m.version)


def pending(q: Queries) -> Operation[list[Migration]]:
    """The migrations not applied yet to `q.schema` (all of them for a new schema)."""
    exists = yield Statement(q.sql("migrations_table_exists"))
    applied: set[int] = set()
    if exists.rows[0]["present"]:
        result = yield Statement(q.sql("applied_migrations"))
        applied = {row["version"] for row in result.rows}
    return [m for m in all_migrations(q.schema) if m.version not in applied]


def migrate(q: Queries) -> Operation[list[Migration]]:
    """Apply the pending migrations; run it inside a transaction. Returns what it applied."""
    yield Statement(q.sql("lock_migrations"))
    yield Statement(q.sql("create_migrations_table"))
    todo = yield from pending(q)
    for migration in todo:
        yield Statement(migration.sql)
        yield Statement(
            q.sql("record_migration"), {"version": migration.version, "name": migration.name}
        )
    return todo


def dry_run_script(q: Queries, todo: list[Migration]) -> str:
    """The SQL `migrate` would run for `todo`, as one script a DBA can read or apply."""
    parts = [
        "BEGIN;",
        q.sql("lock_migrations") + ";",
        q.sql("create_migrations_table") + ";",
    ]
    for migration in todo:
        parts.append(f"-- {migration.version:04d}_{migration.name}\n{migration.sql.strip()}")
        # Literal values from our own file names (digits, \w+), never from user input.
        record = f"INSERT INTO {q.schema}.migrations (version, name) VALUES"
        parts.append(f"{record} ({migration.version}, '{migration.name}');")
    parts.append("COMMIT;")
    return "\n\n".join(parts) + "\n"
