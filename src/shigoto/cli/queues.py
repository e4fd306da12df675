"""Admin commands on queues: the `queue` group (pause, resume on every node).

    shigoto queue pause emails
    shigoto queue resume emails

Pausing is stored in the database: every node sees it, running jobs finish.
"""

from __future__ import annotations

from typing import Annotated

import typer

from shigoto.cli.console import out
from shigoto.cli.context import open_app
from shigoto.cli.options import DsnOption, SchemaOption
from shigoto.cli.root import cli

queue_cli = typer.Typer(help="Pause and resume queues on every node.", no_args_is_help=True)
cli.add_typer(queue_cli, name="queue")


@queue_cli.command("pause")
def pause_queue(
    name: Annotated[str, typer.Argument(help="The queue.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
) -> None:
    """No node claims jobs of this queue until it is resumed (running jobs finish)."""
    _set_paused(name, True, dsn, schema)


@queue_cli.command("resume")
def resume_queue(
    name: Annotated[str, typer.Argument(help="The queue.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
) -> None:
    """Let every node claim jobs of this queue again."""
    _set_paused(name, False, dsn, schema)


def _set_paused(name: str, paused: bool, dsn: str | None, schema: str | None) -> None:
    with open_app(dsn, schema) as shigoto:
        (shigoto.sync.pause_queue if paused else shigoto.sync.resume_queue)(name)
    out.print(f"queue {name!r} {'paused' if paused else 'resumed'}")
