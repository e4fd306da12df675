"""The options admin commands share: which database and schema, or which app; `--json`
for a listing.

    @cli.command()
    def status(dsn: DsnOption = None, schema: SchemaOption = None, app: AppOption = None): ...

`--app` and `--dsn`/`--schema` exclude each other (see `context.open_app`).
"""

from __future__ import annotations

from typing import Annotated

import typer

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="SHIGOTO_DSN",
        help="PostgreSQL connection string. Default: the embedded server in ./.shigoto/.",
        show_default=False,
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option("--schema", envvar="SHIGOTO_SCHEMA", help="Schema of shigoto's tables."),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="SHIGOTO_APP",
        help="Your application as module:attribute (its workers and configuration).",
        show_default=False,
    ),
]
JsonLinesOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
