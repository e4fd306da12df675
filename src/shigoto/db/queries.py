"""Named SQL statements, loaded from `queries/*.sql` and bound to one schema.

    q = Queries.for_schema("shigoto")
    q.sql("get_job")   # 'SELECT * FROM shigoto.jobs WHERE id = %(id)s'

The schema name is validated before it is substituted; it is the only text ever spliced
into SQL. Everything else travels as bound parameters.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import LiteralString

from shigoto import _validate

SCHEMA_TOKEN = "__schema__"


_INCLUDE = re.compile(r"__include_(\w+)__")


@functools.cache
def _raw(folder: str, name: str) -> str:
    """A file's text, with each `__include_<part>__` replaced by the file `_<part>.sql`
    (shared fragments, such as the admin filters)."""
    text = (resources.files("shigoto.db") / folder / f"{name}.sql").read_text("utf-8")
    return _INCLUDE.sub(lambda match: _raw(folder, f"_{match[1]}").strip(), text)


def bind_schema(sql: str, schema: str) -> LiteralString:
    """Substitute the (validated) schema name into one of our own SQL files."""
    # The text comes from files shipped in this package and a name checked against
    # [a-z_][a-z0-9_]*, so it is as safe as a literal.
    return sql.replace(SCHEMA_TOKEN, _validate.schema_name(schema))


@dataclass(frozen=True)
class Queries:
    schema: str

    @classmethod
    @functools.cache
    def for_schema(cls, schema: str) -> Queries:
        return cls(_validate.schema_name(schema))

    @functools.cache  # noqa: B019 - instances are cached per schema and live for the process
    def sql(self, name: str) -> LiteralString:
        return bind_schema(_raw("queries", name), self.schema)

    @functools.cache  # noqa: B019 - as above
    def claim_sql(self, fair: bool = False) -> LiteralString:
        """settle_and_claim.sql with its pick: pick_jobs.sql, or pick_jobs_fair.sql."""
        pick = self.sql("pick_jobs_fair" if fair else "pick_jobs")
        # Both parts are our own files, bound to the validated schema.
        return self.sql("settle_and_claim").replace("__pick__", pick)

    @property
    def insert_channel(self) -> str:
        """The NOTIFY channel that announces newly available jobs (payload: the queue)."""
        return f"{self.schema}.jobs_inserted"
