"""Admin commands on queues: the `queue` group (pause, resume on every node).

    shigoto queue pause emails
    shigoto queue resume emails

Pausing is stored in the database: every node sees it, running jobs finish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from shigoto.cli.console import out
from shigoto.cli.context import open_app
from shigoto.cli.options import DsnOption, SchemaOption
from shigoto.cli.root import cli

queue_cli = typer.Typer(help="Pause and resume queues on every node.", no_args_is_help=True)
cli.add_typer(queue_cli, name="queue")


QueueName = Annotated[str, typer.Argument(help="The queue.")]


def _pausing(paused: bool) -> Callable[..., None]:
    """The command that pauses (or resumes) the queue given."""

    def command(name: QueueName, dsn: DsnOption = None, schema: SchemaOption = None) -> None:
        with open_app(dsn, schema) as shigoto:
            (shigoto.sync.pause_queue if paused else shigoto.sync.resume_queue)(name)
        out.print(f"queue {name!r} {'paused' if paused else 'resumed'}")

    return command


queue_cli.command(
    "pause", help="No node claims jobs of this queue until it is resumed (running jobs finish)."
)(_pausing(True))
queue_cli.command("resume", help="Let every node claim jobs of this queue again.")(_pausing(False))
