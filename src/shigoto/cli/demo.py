"""`shigoto demo`: the command that runs the tour in `shigoto.demo` on a live node.

    shigoto demo --jobs 500

The tour runs on a schema of its own, on the embedded PostgreSQL unless `--dsn` is given.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from shigoto.cli.console import EXPECTED, fail
from shigoto.cli.logs import configure_logging
from shigoto.cli.node import run_on_fastest_loop
from shigoto.cli.options import DsnOption
from shigoto.cli.root import cli


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(help="About how many jobs to insert.")] = 2_000,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Keep the node running after the summary.")
    ] = False,
    dsn: DsnOption = None,
) -> None:
    """A one-minute tour: ~2,000 jobs (retries, snoozes, schedules, discards), live."""
    from shigoto.demo import run_demo

    configure_logging("WARNING")
    if jobs < 10:
        raise fail("--jobs: at least 10")
    try:
        # Its own console: the demo's text is ours, styled with markup.
        run_on_fastest_loop(run_demo(dsn, jobs, keep_running, Console()))
    except KeyboardInterrupt:
        pass
    except EXPECTED as error:
        raise fail(error) from None
