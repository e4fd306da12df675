"""Admin commands on the job store as a whole: `migrate`, `status`, `health`, `prune`.

    shigoto migrate --dry-run
    shigoto status
    shigoto health --json        # exit status 0 when ok, 1 when degraded or unhealthy
    shigoto prune --dry-run

Each takes `--dsn`/`--schema` or `--app`, like every admin command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from shigoto.cli.console import out
from shigoto.cli.context import open_app
from shigoto.cli.options import AppOption, DsnOption, SchemaOption
from shigoto.cli.root import cli
from shigoto.job import JobState


@cli.command()
def migrate(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the SQL that would run; change nothing.")
    ] = False,
) -> None:
    """Create or upgrade shigoto's tables. Safe to run repeatedly and concurrently."""
    with open_app(dsn, schema, app) as shigoto:
        if dry_run:
            typer.echo(shigoto.sync.migration_sql(), nl=False)
            return
        applied = shigoto.sync.migrate()
        if applied:
            out.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
        else:
            out.print(f"schema {shigoto.config.schema!r} is up to date")


@cli.command()
def status(dsn: DsnOption = None, schema: SchemaOption = None, app: AppOption = None) -> None:
    """Job counts by queue and state, and the age of each queue's oldest available job."""
    with open_app(dsn, schema, app) as shigoto:
        current = shigoto.sync.status()
    # Only the states that occur, so the table fits a terminal.
    shown = [s for s in JobState if any(q.counts.get(s) for q in current.queues.values())]
    table = Table(title="shigoto jobs by queue", title_justify="left")
    table.add_column("queue")
    for state in shown:
        table.add_column(state.value, justify="right")
    table.add_column("oldest available", justify="right")
    for name, queue in sorted(current.queues.items()):
        age = queue.oldest_available_age
        table.add_row(
            Text(name),
            *(str(queue.counts.get(state, 0) or "") for state in shown),
            "" if age is None else f"{age:.1f}s",
        )
    if not current.queues:
        out.print("no jobs")
        return
    out.print(table)


@cli.command()
def health(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Whether the database answers and no job is stuck on a dead node: ok, degraded or
    unhealthy, and why. Exit status 0 when ok, 1 otherwise (for probes and scripts)."""
    with open_app(dsn, schema, app) as shigoto:
        report = shigoto.sync.health()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out.print(report.status)
        for problem in report.problems:
            out.print(f"- {problem}")
        if report.database:
            counts = ", ".join(f"{state} {n}" for state, n in sorted(report.counts.items()))
            out.print(f"jobs: {counts or 'none'}")
    if not report.ok:
        raise typer.Exit(1)


@cli.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Archive old finished jobs and delete old archived ones, now, in short batches."""
    with open_app(dsn, schema, app) as shigoto:
        archived, deleted = shigoto.sync.prune(dry_run=dry_run)
        days = (shigoto.config.prune_after or 0) / 86400
        kept = shigoto.config.archive_retention / 86400
    verb = "would archive" if dry_run else "archived"
    out.print(
        f"{verb} {archived} job(s) finished over {days:g} day(s) ago; "
        f"{'would delete' if dry_run else 'deleted'} {deleted} archived over {kept:g} day(s) ago"
    )
