"""The `shigoto` command: migrate, look at jobs, manage them, enqueue.

    shigoto migrate                     # SHIGOTO_DSN, or the embedded PostgreSQL
    shigoto status
    shigoto jobs list --state available --queue emails
    shigoto enqueue myapp.send_email --args '{"to": "a@b.c"}' --app myapp:app

Every command takes `--dsn` (or `SHIGOTO_DSN`) and `--schema`; `--app module:attr` (or
`SHIGOTO_APP`) loads your application instead, with its workers and configuration.
`python -m shigoto` is the same command.

What the database holds (queue, worker and schedule names, tags) is printed as plain text,
never read as rich markup; an error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shigoto.app import Shigoto
from shigoto.config import parse_queues
from shigoto.job import Job, JobSpec, JobState
from shigoto.outcomes import ConfigurationError, DatabaseUnavailable, ShigotoError
from shigoto.schedules import Every, Schedule, ScheduleInfo

T = TypeVar("T")

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
jobs_cli = typer.Typer(help="List, show, cancel and retry jobs.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")
cron_cli = typer.Typer(help="Cron entries and recurring schedules.", no_args_is_help=True)
cli.add_typer(cron_cli, name="cron")
queue_cli = typer.Typer(help="Pause and resume queues on every node.", no_args_is_help=True)
cli.add_typer(queue_cli, name="queue")

logger = logging.getLogger("shigoto.cli")


class _Output(Console):
    """stdout. A reader that went away (`shigoto jobs list | head -1`) silences it instead
    of failing the command: what the command did (an insert, say) is done by then."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        # Or the interpreter's own flush at exit would fail on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# Markup, emoji codes and highlighting off: names and tags from the database are shown as
# they are (a queue named "[/x]" would otherwise crash the command, "[link=...]" make a link).
out = _Output(markup=False, emoji=False, highlight=False)
# soft_wrap: an error stays one line, however narrow the terminal (the terminal wraps it).
err = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)


# What a command reports as one line rather than a traceback: bad input, a database that
# cannot be reached or refuses a statement.
EXPECTED = (ShigotoError, psycopg.Error)


def _fail(problem: object) -> typer.Exit:
    """Print `problem` as one red-labelled line on stderr; the exit to raise (status 1)."""
    if isinstance(problem, DatabaseUnavailable):
        text = f"database: {problem}"
    elif isinstance(problem, psycopg.Error):
        text = _database_error(problem)
    else:
        text = str(problem)
    err.print(Text.assemble(("error:", "red"), " ", " ".join(text.split())))
    return typer.Exit(1)


def _database_error(error: psycopg.Error) -> str:
    """What went wrong with the database, in one line: the server's main message (never its
    detail or context, which may quote a statement's values), or the client's first line."""
    primary = error.diag.message_primary
    lines = str(error).strip().splitlines()
    return f"database: {primary or (lines[0] if lines else type(error).__name__)}"


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


def load_app(target: str) -> Shigoto:
    """Import `module:attribute` (from the current directory too) and return the app."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app: expected module:attribute, got {target!r}")
    _current_directory_last()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"--app: cannot import {module_name!r}: {error}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, Shigoto):
        raise ConfigurationError(f"--app: {target!r} is not a shigoto.Shigoto instance")
    return app


def _current_directory_last() -> None:
    """Let your modules in the current directory be imported, after installed ones: a file
    there named like a library (`uvloop.py`) must not replace it. (`python -m` puts the
    current directory first: `main` takes it out before this runs.)"""
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


@contextmanager
def _app(dsn: str | None, schema: str | None, app: str | None = None) -> Iterator[Shigoto]:
    """The app a command works on; errors (bad input, a database that cannot be reached)
    become one red line and exit status 1."""
    if not logging.getLogger().handlers:
        # No logging set up: the pool's warnings (one per failed connection attempt) would
        # go to stderr around that one line, which says what failed.
        logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        if app is not None:
            if dsn is not None or schema is not None:
                raise ConfigurationError("--app: give --app, or --dsn/--schema, not both")
            shigoto = load_app(app)
        else:
            # Only what was given: schema=None would be a value, not "the default".
            given: dict[str, Any] = {} if schema is None else {"schema": schema}
            shigoto = Shigoto(dsn=dsn, **given)
        try:
            yield shigoto
        finally:
            shigoto.sync.close()
    except EXPECTED as error:
        raise _fail(error) from None


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
    with _app(dsn, schema, app) as shigoto:
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
    with _app(dsn, schema, app) as shigoto:
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


def _age(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if abs(seconds) < 120:
        return f"{seconds:.0f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


@jobs_cli.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", help="Repeatable.")] = None,
    queue: Annotated[list[str] | None, typer.Option("--queue", help="Repeatable.")] = None,
    worker: Annotated[list[str] | None, typer.Option("--worker", help="Repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Jobs with all tags.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.")] = 50,
    after: Annotated[int | None, typer.Option(help="Jobs older than this id (next page).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Jobs, newest first."""
    with _app(dsn, schema, app) as shigoto:
        page = shigoto.sync.list_jobs(
            state=state, queue=queue, worker=worker, tags=tag, limit=limit, after=after
        )
    if as_json:
        for job in page.jobs:
            typer.echo(json.dumps(_job_document(job)))
        return
    table = Table(title_justify="left")
    for column in ("id", "state", "queue", "worker", "attempt", "priority", "scheduled", "tags"):
        table.add_column(column, justify="right" if column in ("id", "attempt") else "left")
    for job in page.jobs:
        table.add_row(
            str(job.id),
            job.state.value,
            Text(job.queue),
            Text(job.worker),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            _age(job.scheduled_at),
            Text(",".join(job.tags)),
        )
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"more: --after {page.next_cursor}", style="dim")


def _job_document(job: Job) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name in Job.__dataclass_fields__:
        value = getattr(job, name)
        document[name] = value.isoformat() if isinstance(value, datetime) else value
    return document


@cron_cli.command("list")
def list_schedules(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Every schedule with its last and next run."""
    with _app(dsn, schema, app) as shigoto:
        entries = shigoto.sync.schedules()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(_schedule_document(entry)))
        return
    table = Table(title_justify="left")
    for column in ("name", "schedule", "tz", "worker", "queue", "last run", "next run", "catch-up"):
        table.add_column(column, no_wrap=column in ("schedule", "tz"))
    for entry in entries:
        table.add_row(
            Text(entry.name + (" (paused)" if entry.paused else "")),
            Text(_describe(entry.schedule)),
            Text(entry.schedule.tz),
            Text(entry.worker),
            Text(str(entry.options.get("queue", "default"))),
            _when(entry.last_fired_at) if entry.last_fired_at else "never",
            _when(entry.next_fire_at) if entry.next_fire_at else "-",
            _catch_up(entry),
        )
    out.print(table)


def _describe(schedule: Schedule) -> str:
    if isinstance(schedule, Every):
        return f"every {schedule.interval_seconds:g}s"
    return schedule.expression


def _when(moment: datetime) -> str:
    """'5m ago' or 'in 5m'."""
    age = _age(moment)
    return f"in {age.lstrip('-')}" if age.startswith("-") else f"{age} ago"


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


@cli.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Archive old finished jobs and delete old archived ones, now, in short batches."""
    with _app(dsn, schema, app) as shigoto:
        archived, deleted = shigoto.sync.prune(dry_run=dry_run)
        days = (shigoto.config.prune_after or 0) / 86400
        kept = shigoto.config.archive_retention / 86400
    verb = "would archive" if dry_run else "archived"
    out.print(
        f"{verb} {archived} job(s) finished over {days:g} day(s) ago; "
        f"{'would delete' if dry_run else 'deleted'} {deleted} archived over {kept:g} day(s) ago"
    )


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
    with _app(dsn, schema) as shigoto:
        (shigoto.sync.pause_queue if paused else shigoto.sync.resume_queue)(name)
    out.print(f"queue {name!r} {'paused' if paused else 'resumed'}")


@jobs_cli.command("show")
def show_job(
    job_id: Annotated[int, typer.Argument(help="The job's id.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Every column of one job, errors included, as JSON."""
    with _app(dsn, schema, app) as shigoto:
        job = shigoto.sync.get_job(job_id)
    if job is None:
        raise _fail(f"no job with id {job_id}")
    out.print_json(json.dumps(_job_document(job)))


@jobs_cli.command("cancel")
def cancel_job(
    job_ids: Annotated[list[int], typer.Argument(help="One or more job ids.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Cancel unfinished jobs."""
    with _app(dsn, schema, app) as shigoto:
        _report("cancelled", [(job_id, shigoto.sync.cancel(job_id)) for job_id in job_ids])


@jobs_cli.command("retry")
def retry_job(
    job_ids: Annotated[list[int], typer.Argument(help="One or more job ids.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Make scheduled, retryable or finished jobs available now."""
    with _app(dsn, schema, app) as shigoto:
        _report("retried", [(job_id, shigoto.sync.retry(job_id)) for job_id in job_ids])


def _report(verb: str, results: list[tuple[int, bool]]) -> None:
    for job_id, changed in results:
        if changed:
            out.print(f"{verb} job {job_id}")
        else:
            err.print(f"job {job_id}: not {verb} (missing, or not in a state that allows it)")
    if not all(changed for _, changed in results):
        raise typer.Exit(1)


@cli.command()
def enqueue(
    worker: Annotated[str, typer.Argument(help="The worker's registered name.")],
    args: Annotated[str, typer.Option("--args", help="The job's args, a JSON object.")] = "{}",
    queue: Annotated[str | None, typer.Option(help="Default: the worker's queue.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Total runs allowed.")] = None,
    scheduled_in: Annotated[
        float | None, typer.Option(help="Run no sooner than this many seconds from now.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeatable.")] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Insert one job. With --app the name is checked and the worker's defaults apply."""
    try:
        parsed = json.loads(args)
    except RecursionError:
        raise _fail("args: nested too deeply to read") from None
    except ValueError as error:  # not JSON, or an integer too long for Python to read
        raise _fail(f"args: not valid JSON ({error})") from None
    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "scheduled_in": scheduled_in,
        "tags": tag,
    }
    with _app(dsn, schema, app) as shigoto:
        if app is not None:
            spec = shigoto.new_job(worker, parsed, **options)
        else:
            spec = JobSpec.build(
                worker, parsed, **{k: v for k, v in options.items() if v is not None}
            )
        job = shigoto.sync.insert(spec)
    # Committed: nothing after this may fail the command (the output is plain text; a
    # closed stdout is no error, see _Output).
    out.print(f"inserted job {job.id} ({job.worker} on {job.queue}, {job.state.value})")


@cli.command()
def worker(
    app: Annotated[str, typer.Argument(help="Your application, as module:attribute.")],
    queues: Annotated[
        str | None,
        typer.Option(help="Queues and their concurrency, e.g. default=10,emails=5."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a node: claim and run jobs until SIGTERM or SIGINT (a second one stops at once)."""
    _configure_logging(log_level)
    try:
        shigoto = load_app(app)
        chosen = parse_queues(queues) if queues else None
        run_on_fastest_loop(serve(shigoto, chosen))
    except EXPECTED as error:
        raise _fail(error) from None
    _exit_despite_stuck_threads()


async def serve(app: Shigoto, queues: dict[str, int] | None = None) -> None:
    """Run the app's node until a signal; the first stops gracefully, the second at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(name: str) -> None:
        if not stop.is_set():
            logger.info("%s: stopping gracefully (send it again to stop at once)", name)
            stop.set()
        elif app.node is not None:
            logger.warning("%s: stopping now; running jobs go back to the queue", name)
            app.node.hurry()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await app.start(queues=queues)
        await stop.wait()
        await app.stop()
    finally:
        await app.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_on_fastest_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it is installed (the `fast` extra): a busy node spends
    about a tenth less CPU per job on it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("shigoto").setLevel(level.upper())


def _exit_despite_stuck_threads() -> None:
    """A sync job that ignored its timeout still holds a thread; the interpreter would wait
    for it forever at exit. Its job was already returned to the queue, so leave."""
    stuck = [t for t in threading.enumerate() if t.name.startswith("shigoto-sync") and t.is_alive()]
    if stuck:
        logger.warning("leaving %d sync job thread(s) behind", len(stuck))
        logging.shutdown()
        os._exit(0)


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

    _configure_logging("WARNING")
    if jobs < 10:
        raise _fail("--jobs: at least 10")
    try:
        # Its own console: the demo's text is ours, styled with markup.
        run_on_fastest_loop(run_demo(dsn, jobs, keep_running, Console()))
    except KeyboardInterrupt:
        pass
    except EXPECTED as error:
        raise _fail(error) from None


def main() -> None:
    """Entry point of the `shigoto` console script, and of `python -m shigoto`."""
    drop_current_directory()
    cli()


def drop_current_directory() -> None:
    """Take out the current directory that `python -m` (or `-c`) put first on `sys.path`;
    `load_app` puts it back, last."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


if __name__ == "__main__":
    main()
