"""`shigoto demo`: a tour of a working queue in under a minute, on the embedded PostgreSQL.

It migrates a schema of its own (`shigoto_demo`, emptied first), registers five sample
workers, inserts about 2,000 jobs — some fail and retry, some snooze, some are scheduled
seconds ahead, a few are discarded — and runs a node, showing each queue live.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from psycopg import sql
from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from shigoto.admin import Status
from shigoto.app import Shigoto
from shigoto.job import JobSpec, JobState
from shigoto.outcomes import Snooze
from shigoto.runtime.context import current_job

SCHEMA = "shigoto_demo"
QUEUES = {"images": 10, "emails": 5, "crm": 3, "reports": 2, "payments": 2}
UNFINISHED = (
    JobState.AVAILABLE,
    JobState.EXECUTING,
    JobState.SCHEDULED,
    JobState.RETRYABLE,
)


@dataclass
class Tally:
    """What the demo workers saw, for the summary."""

    runs: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    snoozes: Counter[str] = field(default_factory=Counter)
    snoozed_ids: set[int] = field(default_factory=set)


def build_app(dsn: str | None, tally: Tally) -> Shigoto:
    """The demo's app and its five workers."""
    app = Shigoto(
        dsn=dsn,
        schema=SCHEMA,
        queues=QUEUES,
        poll_interval=0.5,
        stage_interval=0.25,
        shutdown_timeout=5,
    )

    def quick_retry(attempt: int, error: BaseException) -> float:
        return 0.3 * attempt

    @app.worker(name="demo.resize_image", queue="images")
    async def resize_image(image: int) -> dict[str, int]:
        tally.runs["resize_image"] += 1
        await asyncio.sleep(random.uniform(0.005, 0.04))
        return {"image": image, "width": 640}

    @app.worker(name="demo.send_email", queue="emails", max_attempts=5, backoff=quick_retry)
    async def send_email(to: str, flaky: int) -> None:
        tally.runs["send_email"] += 1
        await asyncio.sleep(random.uniform(0.01, 0.05))
        if current_job().attempt <= flaky:  # this server refuses the first `flaky` tries
            tally.failures["send_email"] += 1
            raise ConnectionError(f"SMTP server refused {to} (it happens; will retry)")

    @app.worker(name="demo.sync_crm", queue="crm")
    async def sync_crm(account: int) -> object:
        tally.runs["sync_crm"] += 1
        job = current_job()
        if job.id not in tally.snoozed_ids:
            tally.snoozed_ids.add(job.id)
            tally.snoozes["sync_crm"] += 1
            return Snooze(1)  # the CRM asked us to come back later; no attempt used
        await asyncio.sleep(0.01)
        return None

    @app.worker(name="demo.build_report", queue="reports")
    def build_report(month: int) -> int:  # a plain function: runs in a thread
        tally.runs["build_report"] += 1
        return sum(i * i for i in range(20_000)) % (month + 1)

    @app.worker(name="demo.charge_card", queue="payments", max_attempts=2, backoff=quick_retry)
    async def charge_card(order: int, declined: bool) -> str:
        tally.runs["charge_card"] += 1
        await asyncio.sleep(0.02)
        if declined:
            tally.failures["charge_card"] += 1
            raise ValueError(f"card declined for order {order}")
        return "charged"

    return app


def sample_jobs(app: Shigoto, total: int) -> list[JobSpec]:
    """About `total` jobs in the demo's proportions, shuffled."""
    workers = {
        name: app.workers.get(f"demo.{name}")
        for name in ("resize_image", "send_email", "sync_crm", "build_report", "charge_card")
    }
    specs: list[JobSpec] = []
    for i in range(int(total * 0.5)):
        specs.append(workers["resize_image"].new({"image": i}))
    for i in range(int(total * 0.25)):
        flaky = 0 if i % 7 else 1 + i % 2  # one in seven fails once or twice, then works
        specs.append(workers["send_email"].new({"to": f"user{i}@example.com", "flaky": flaky}))
    for i in range(int(total * 0.1)):
        specs.append(workers["sync_crm"].new({"account": i}))
    for i in range(int(total * 0.1)):
        delay = random.uniform(2, 8)
        specs.append(workers["build_report"].new({"month": i % 12 + 1}, scheduled_in=delay))
    for i in range(total - len(specs)):
        specs.append(workers["charge_card"].new({"order": i, "declined": i % 10 == 0}))
    random.shuffle(specs)
    return specs


async def run_demo(
    dsn: str | None, jobs: int = 2_000, keep_running: bool = False, console: Console | None = None
) -> dict[str, object]:
    """Run the demo; returns the summary figures (also printed)."""
    console = console or Console()
    tally = Tally()
    app = build_app(dsn, tally)
    started = time.monotonic()
    try:
        await _reset_schema(app)
        await app.migrate()
        specs = sample_jobs(app, jobs)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("inserting jobs", total=len(specs))
            for start in range(0, len(specs), 250):
                chunk = specs[start : start + 250]
                await app.insert_all(chunk)
                progress.advance(task, len(chunk))
        console.print(f"inserted {len(specs)} jobs into {len(QUEUES)} queues")
        await app.start()
        await _watch(app, console, len(specs))
        elapsed = time.monotonic() - started
        summary = await _summary(app, tally, elapsed)
        _print_summary(console, summary)
        if keep_running:
            console.print(
                "the node keeps running (Ctrl-C to stop); try: shigoto status --schema shigoto_demo"
            )
            await asyncio.Event().wait()
        return summary
    finally:
        await app.stop()
        await app.close()


async def _reset_schema(app: Shigoto) -> None:
    async with app.connection() as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
        )


async def _watch(app: Shigoto, console: Console, total: int) -> None:
    """A live table per queue until every job is final."""
    previous: dict[str, int] = {}
    last = time.monotonic()
    rates: dict[str, float] = {}
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            status = await app.status()
            now = time.monotonic()
            for name, queue in status.queues.items():
                done = queue.counts.get(JobState.COMPLETED, 0)
                rates[name] = (done - previous.get(name, 0)) / max(now - last, 1e-6)
                previous[name] = done
            last = now
            live.update(_table(status, rates, total))
            if not any(status.count(state) for state in UNFINISHED):
                return
            await asyncio.sleep(0.25)


def _table(status: Status, rates: dict[str, float], total: int) -> Group:
    shown = [
        JobState.SCHEDULED,
        JobState.AVAILABLE,
        JobState.EXECUTING,
        JobState.RETRYABLE,
        JobState.COMPLETED,
        JobState.DISCARDED,
    ]
    table = Table(title="shigoto demo — jobs by queue", title_justify="left")
    table.add_column("queue")
    table.add_column("limit", justify="right")
    for header in ("sched", "ready", "run", "retry", "done", "disc"):
        table.add_column(header, justify="right")
    table.add_column("done/s", justify="right")
    for name in QUEUES:
        queue = status.queues.get(name)
        counts = queue.counts if queue else {}
        table.add_row(
            name,
            str(QUEUES[name]),
            *(str(counts.get(state, 0)) for state in shown),
            f"{rates.get(name, 0.0):.0f}",
        )
    finished = sum(status.count(s) for s in (JobState.COMPLETED, JobState.DISCARDED))
    return Group(table, f"{finished}/{total} finished")


async def _summary(app: Shigoto, tally: Tally, elapsed: float) -> dict[str, object]:
    status = await app.status()
    completed = status.count(JobState.COMPLETED)
    return {
        "jobs": sum(q.total for q in status.queues.values()),
        "completed": completed,
        "discarded": status.count(JobState.DISCARDED),
        "runs": sum(tally.runs.values()),
        "failed_runs": sum(tally.failures.values()),
        "snoozes": sum(tally.snoozes.values()),
        "seconds": round(elapsed, 1),
        "jobs_per_second": round(completed / elapsed) if elapsed else 0,
    }


def _print_summary(console: Console, summary: dict[str, object]) -> None:
    console.print(
        f"\n[bold]done in {summary['seconds']}s[/bold]: {summary['completed']} completed, "
        f"{summary['discarded']} discarded (out of attempts, as planned), "
        f"{summary['failed_runs']} failed runs (retried with backoff), "
        f"{summary['snoozes']} snoozes, {summary['runs']} runs in all "
        f"(~{summary['jobs_per_second']} jobs/s including the scheduled wait)."
    )
    console.print(
        "look around: [cyan]shigoto status --schema shigoto_demo[/cyan], "
        "[cyan]shigoto jobs list --schema shigoto_demo --state discarded[/cyan]"
    )
