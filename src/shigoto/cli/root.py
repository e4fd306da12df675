"""The `shigoto` command group that every command module adds its commands to.

    from shigoto.cli.root import cli

    @cli.command()
    def health() -> None: ...

Import the new module in `shigoto/cli/__init__.py`: its place there is its place in `--help`.
"""

from __future__ import annotations

import typer

cli = typer.Typer(
    name="shigoto",
    help="PostgreSQL-backed background jobs: migrate, inspect and manage the job store.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    # An unexpected error's traceback, if one ever comes, shows no local variables: they
    # may hold job args.
    pretty_exceptions_show_locals=False,
)
