"""What every benchmark shares: a throw-away schema, timing, and JSON output."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from shigoto import Shigoto
from shigoto.db.embedded import embedded_dsn


def resolve_dsn(dsn: str | None) -> str:
    """`--dsn`, else SHIGOTO_DSN, else the embedded server."""
    return dsn or os.environ.get("SHIGOTO_DSN") or embedded_dsn(Path(".shigoto"))


@asynccontextmanager
async def fresh_app(dsn: str, **options: Any) -> AsyncIterator[Shigoto]:
    """A migrated app on a new schema, dropped on the way out."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    app = Shigoto(dsn=dsn, schema=schema, **options)
    try:
        await app.migrate()
        yield app
    finally:
        await app.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """`with stopwatch() as t: ...` then `t["seconds"]`."""
    timing: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing["seconds"] = time.perf_counter() - start


def report(name: str, results: dict[str, Any]) -> None:
    print(json.dumps({"benchmark": name, **results}, indent=2))
