"""Admin commands on single jobs: the `jobs` group (list, show, cancel, retry), `enqueue`.

    shigoto jobs list --state retryable --json
    shigoto jobs retry 41 42
    shigoto enqueue send_email --args '{"to": "a@b.c"}' --app myapp:app

`cancel` and `retry` say what they did to each job; one they could not change makes the
exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from shigoto.app import Shigoto
from shigoto.cli.console import age, err, fail, json_lines, out, table
from shigoto.cli.context import open_app
from shigoto.cli.options import AppOption, DsnOption, JsonLinesOption, SchemaOption
from shigoto.cli.root import cli
from shigoto.job import Job, JobSpec

jobs_cli = typer.Typer(help="List, show, cancel and retry jobs.", no_args_is_help=True)
cli.add_typer(jobs_cli, name="jobs")


@jobs_cli.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", help="Repeatable.")] = None,
    queue: Annotated[list[str] | None, typer.Option("--queue", help="Repeatable.")] = None,
    worker: Annotated[list[str] | None, typer.Option("--worker", help="Repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Jobs with all tags.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.")] = 50,
    after: Annotated[int | None, typer.Option(help="Jobs older than this id (next page).")] = None,
    as_json: JsonLinesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Jobs, newest first."""
    with open_app(dsn, schema, app) as shigoto:
        page = shigoto.sync.list_jobs(
            state=state, queue=queue, worker=worker, tags=tag, limit=limit, after=after
        )
    if as_json:
        json_lines(page.jobs, _job_document)
        return
    columns = ("id", "state", "queue", "worker", "attempt", "priority", "scheduled", "tags")
    listing = table(columns, right=("id", "attempt"))
    for job in page.jobs:
        listing.add_row(
            str(job.id),
            job.state.value,
            Text(job.queue),
            Text(job.worker),
            f"{job.attempt}/{job.max_attempts}",
            str(job.priority),
            age(job.scheduled_at),
            Text(",".join(job.tags)),
        )
    out.print(listing)
    if page.next_cursor is not None:
        out.print(f"more: --after {page.next_cursor}", style="dim")


def _job_document(job: Job) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name in Job.__dataclass_fields__:
        value = getattr(job, name)
        document[name] = value.isoformat() if isinstance(value, datetime) else value
    return document


@jobs_cli.command("show")
def show_job(
    job_id: Annotated[int, typer.Argument(help="The job's id.")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    app: AppOption = None,
) -> None:
    """Every column of one job, errors included, as JSON."""
    with open_app(dsn, schema, app) as shigoto:
        job = shigoto.sync.get_job(job_id)
    if job is None:
        raise fail(f"no job with id {job_id}")
    out.print_json(json.dumps(_job_document(job)))


JobIds = Annotated[list[int], typer.Argument(help="One or more job ids.")]


def _each_job(verb: str, change: Callable[[Shigoto, int], bool]) -> Callable[..., None]:
    """A command that makes one `change` to each job given and says, per job, whether it
    did (`jobs cancel`, `jobs retry`)."""

    def command(
        job_ids: JobIds,
        dsn: DsnOption = None,
        schema: SchemaOption = None,
        app: AppOption = None,
    ) -> None:
        with open_app(dsn, schema, app) as shigoto:
            _report(verb, [(job_id, change(shigoto, job_id)) for job_id in job_ids])

    return command


jobs_cli.command("cancel", help="Cancel unfinished jobs.")(
    _each_job("cancelled", lambda shigoto, job_id: shigoto.sync.cancel(job_id))
)
jobs_cli.command("retry", help="Make scheduled, retryable or finished jobs available now.")(
    _each_job("retried", lambda shigoto, job_id: shigoto.sync.retry(job_id))
)


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
        raise fail("args: nested too deeply to read") from None
    except ValueError as error:  # not JSON, or an integer too long for Python to read
        raise fail(f"args: not valid JSON ({error})") from None
    options: dict[str, Any] = {
        "queue": queue,
        "priority": priority,
        "max_attempts": max_attempts,
        "scheduled_in": scheduled_in,
        "tags": tag,
    }
    with open_app(dsn, schema, app) as shigoto:
        if app is not None:
            spec = shigoto.new_job(worker, parsed, **options)
        else:
            spec = JobSpec.build(
                worker, parsed, **{k: v for k, v in options.items() if v is not None}
            )
        job = shigoto.sync.insert(spec)
    # Committed: nothing after this may fail the command (the output is plain text; a
    # closed stdout is no error, see `console.out`).
    out.print(f"inserted job {job.id} ({job.worker} on {job.queue}, {job.state.value})")
