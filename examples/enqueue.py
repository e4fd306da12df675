"""Enqueueing jobs: one, many, scheduled, by name, and inside your own transaction.

    python examples/enqueue.py          # SHIGOTO_DSN, or the embedded PostgreSQL

Nothing runs the jobs here (that is `shigoto worker`); this shows them arriving.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shigoto import InvalidJobError, Shigoto

app = Shigoto(schema="example_enqueue")  # a schema of its own, dropped at the end


@app.worker(name="emails.send", queue="emails", max_attempts=5, tags=["email"])
async def send_email(to: str, subject: str) -> None:
    print(f"sending {subject!r} to {to}")


@app.worker(name="reports.monthly", queue="reports")
def monthly_report(month: str) -> None:  # a plain function runs in a thread pool
    print(f"building the report for {month}")


async def main() -> None:
    await app.migrate()

    # One job; options override the worker's defaults.
    job = await send_email.enqueue({"to": "ada@example.com", "subject": "Welcome"}, priority=10)
    print(f"job {job.id}: {job.worker} on {job.queue!r}, {job.state}")

    # Later: at a given moment (an aware datetime) or after a delay.
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    await monthly_report.enqueue({"month": "2026-11"}, scheduled_at=tomorrow)
    await send_email.enqueue({"to": "bob@example.com", "subject": "Reminder"}, scheduled_in=3600)

    # Many in one statement: 20,000 is a normal batch.
    specs = [send_email.new({"to": f"user{i}@example.com", "subject": "News"}) for i in range(1000)]
    jobs = await app.insert_all(specs)
    print(f"inserted {len(jobs)} jobs in one call")

    # Many alike, differing only in their args: quicker still, and only ids come back.
    ids = await send_email.enqueue_many(
        [{"to": f"reader{i}@example.com", "subject": "News"} for i in range(1000)],
        meta={"campaign": "news"},
    )
    print(f"inserted {len(ids)} more, ids {ids[0]}..{ids[-1]}")

    # By name, for code that cannot import the worker.
    await app.enqueue("reports.monthly", {"month": "2026-10"})

    # Inside your own transaction: the job exists only if the transaction commits.
    # (Your own psycopg AsyncConnection works the same way as this pooled one.)
    async with app.connection() as conn, conn.transaction():
        await send_email.enqueue({"to": "new@example.com", "subject": "Hi"}, conn=conn)
        # ... insert the user row with the same connection ...

    # Bad input is refused before anything is written, naming the field.
    try:
        await send_email.enqueue({"to": {"a set": {1, 2}}})
    except InvalidJobError as error:
        print(f"refused: {error}")

    status = await app.status()
    for name, queue in sorted(status.queues.items()):
        print(name, {state.value: count for state, count in queue.counts.items()})
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_enqueue CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
