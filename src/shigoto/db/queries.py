"""Named SQL statements, loaded from `queries/*.sql` and bound to one schema.

    q = Queries.for_schema("shigoto")
    q.sql("get_job")   # 'SELECT * FROM shigoto.jobs WHERE id = %(id)s'

The schema name is validated before it is substituted; it is the only text ever spliced
into SQL. Everything else travels as bound parameters.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import LiteralString

from shigoto import _validate
from shigoto.job import JOB_COLUMNS

SCHEMA_TOKEN = "__schema__"


_INCLUDE = re.compile(r"__include_(\w+)__")


@functools.cache
def _raw(folder: str, name: str) -> str:
    """A file's text, with each `__include_<part>__` replaced by the file `_<part>.sql`
    (shared fragments, such as the admin filters)."""
    text = (resources.files("shigoto.db") / folder / f"{name}.sql").read_text("utf-8")
    return _INCLUDE.sub(lambda match: _raw(folder, f"_{match[1]}").strip(), text)


def compact(sql: str) -> str:
    """The statement without its `--` comments, indentation and blank lines.

    Those are for readers of the files; psycopg caches the parsing of a statement only up
    to 4 KB of text, and the runtime's claim is longer than that with them. (A `--` inside
    a string literal would be cut too: test_queries checks that our statements have none.)
    """
    lines = (line.split("--", 1)[0].strip() for line in sql.splitlines())
    return "\n".join(line for line in lines if line)


def bind_schema(sql: str, schema: str) -> LiteralString:
    """Substitute the (validated) schema name into one of our own SQL files."""
    # The text comes from files shipped in this package and a name checked against
    # [a-z_][a-z0-9_]*, so it is as safe as a literal.
    return sql.replace(SCHEMA_TOKEN, _validate.schema_name(schema))


@dataclass(frozen=True)
class Queries:
    schema: str
    # name -> statement: a dict lookup per statement (functools.cache would hash the
    # instance, a Python-level __hash__, for every statement a node runs)
    _sql: dict[str, LiteralString] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    @functools.cache
    def for_schema(cls, schema: str) -> Queries:
        return cls(_validate.schema_name(schema))

    def sql(self, name: str) -> LiteralString:
        try:
            return self._sql[name]
        except KeyError:
            statement = self._sql[name] = bind_schema(compact(_raw("queries", name)), self.schema)
            return statement

    @functools.cache  # noqa: B019 - instances are cached per schema and live for the process
    def claim_sql(self, fair: bool = False) -> LiteralString:
        """settle_and_claim.sql with its pick: pick_jobs.sql, or pick_jobs_fair.sql."""
        pick = self.sql("pick_jobs_fair" if fair else "pick_jobs")
        # Both parts are our own files, bound to the validated schema; the columns are
        # the names of Job's fields.
        columns = ", ".join(f"j.{name}" for name in JOB_COLUMNS)
        claim = self.sql("settle_and_claim").replace("__pick__", pick)
        return claim.replace("__job_columns__", columns)

    @property
    def insert_channel(self) -> str:
        """The NOTIFY channel that announces newly available jobs (payload: the queue)."""
        return f"{self.schema}.jobs_inserted"
