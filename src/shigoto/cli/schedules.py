"""Admin commands on schedules: the `cron` group.

    shigoto cron list
    shigoto cron list --json

Times are shown as ages ('5m ago', 'in 5m'); `--json` gives ISO 8601 times.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.text import Text

from shigoto.cli.console import json_lines, out, table, when
from shigoto.cli.context import open_app
from shigoto.cli.options import AppOption, DsnOption, JsonLinesOption, SchemaOption
from shigoto.cli.root import cli
from shigoto.schedules import Every, Schedule, ScheduleInfo

cron_cli = typer.Typer(help="Cron entries and recurring schedules.", no_args_is_help=True)
cli.add_typer(cron_cli, name="cron")


@cron_cli.command("list")
def list_schedules(
    as_json: JsonLinesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Every schedule with its last and next run."""
    with open_app(dsn, schema, app) as shigoto:
        entries = shigoto.sync.schedules()
    if as_json:
        json_lines(entries, _schedule_document)
        return
    columns = ("name", "schedule", "tz", "worker", "queue", "last run", "next run", "catch-up")
    listing = table(columns, no_wrap=("schedule", "tz"))
    for entry in entries:
        listing.add_row(
            Text(entry.name + (" (paused)" if entry.paused else "")),
            Text(_describe(entry.schedule)),
            Text(entry.schedule.tz),
            Text(entry.worker),
            Text(str(entry.options.get("queue", "default"))),
            when(entry.last_fired_at) if entry.last_fired_at else "never",
            when(entry.next_fire_at) if entry.next_fire_at else "-",
            _catch_up(entry),
        )
    out.print(listing)


def _describe(schedule: Schedule) -> str:
    if isinstance(schedule, Every):
        return f"every {schedule.interval_seconds:g}s"
    return schedule.expression


def _catch_up(entry: ScheduleInfo) -> str:
    if entry.catch_up_policy == "window":
        return f"last {entry.catch_up_window:g}s"
    return entry.catch_up_policy


def _schedule_document(entry: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": entry.schedule.kind,
        "expression": entry.schedule.expression,
        "tz": entry.schedule.tz,
        "worker": entry.worker,
        "args": entry.args,
        "options": entry.options,
        "catch_up": _catch_up(entry),
        "paused": entry.paused,
        "last_fired_at": entry.last_fired_at.isoformat() if entry.last_fired_at else None,
        "next_fire_at": entry.next_fire_at.isoformat() if entry.next_fire_at else None,
    }
