"""Our SQL files as the runtime sends them."""

from __future__ import annotations

from importlib import resources

import pytest

from shigoto.db.queries import Queries, compact

QUERY_FILES = sorted(
    f.name[:-4]
    for f in (resources.files("shigoto.db") / "queries").iterdir()
    if f.name.endswith(".sql")
)


@pytest.mark.parametrize("name", QUERY_FILES)
def test_only_comments_are_cut(name: str) -> None:
    """A `--` inside a string literal would be cut with the rest of its line: none is."""
    text = (resources.files("shigoto.db") / "queries" / f"{name}.sql").read_text("utf-8")
    for line in text.splitlines():
        code = line.split("--", 1)[0]
        assert code.count("'") % 2 == 0, f"{name}.sql: a '--' inside a string: {line!r}"
    assert "--" not in compact(text)


@pytest.mark.parametrize("fair", [False, True])
def test_the_claim_fits_psycopgs_statement_cache(fair: bool) -> None:
    """psycopg parses a statement once and caches it only up to 4,096 characters; the claim
    runs thousands of times a second and must not be parsed each time."""
    assert len(Queries.for_schema("shigoto").claim_sql(fair)) <= 4096
