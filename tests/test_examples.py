"""Every example in `examples/` runs to completion, as a user would run it, and leaves
nothing behind on the database: it works in a schema of its own and drops it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
SCHEMAS = """
SELECT nspname FROM pg_namespace
WHERE nspname !~ '^pg_' AND nspname NOT IN ('public', 'information_schema')
ORDER BY nspname
"""


@pytest.fixture
def database(dsn: str) -> Iterator[str]:
    """A database of this test's own, holding a user's `shigoto` schema; dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        own = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        with psycopg.connect(own, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA shigoto; CREATE TABLE shigoto.users (id int)")
        yield own
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            conn.execute(drop)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_runs_and_leaves_nothing_behind(example: Path, database: str) -> None:
    env = {**os.environ, "SHIGOTO_DSN": database}
    env.pop("SHIGOTO_SCHEMA", None)
    done = subprocess.run(
        [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    with psycopg.connect(database) as conn:
        schemas = [row[0] for row in conn.execute(SCHEMAS)]
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shigoto'"
        ).fetchall()
    # No schema of its own left, and the default schema's owner finds nothing of it there.
    assert schemas == ["shigoto"]
    assert tables == [("users",)]


def test_the_readme_example_runs(tmp_path: Path, dsn: str, schema: str) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = {**os.environ, "SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed sent 'Hi' to ada@example.com"
