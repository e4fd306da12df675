"""Running jobs: a node with two queues, every kind of outcome, and a graceful stop.

    python examples/worker.py          # SHIGOTO_DSN, or the embedded PostgreSQL

In production you run `shigoto worker myproject.jobs:app --queues default=10,emails=5`
instead of `async with app:`; it stops gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import random

from shigoto import Discard, RetryAfter, Shigoto, Snooze, current_job, report_progress

app = Shigoto(schema="example_worker", queues={"default": 10, "emails": 5}, stage_interval=0.2)


@app.worker(name="emails.send", queue="emails", max_attempts=5, backoff=lambda n, e: 0.5 * n)
async def send_email(to: str) -> str:
    if random.random() < 0.3:  # a flaky SMTP server: retried with backoff
        raise ConnectionError(f"could not reach the SMTP server for {to}")
    return f"sent to {to}"


@app.worker(name="images.resize", timeout=10)
def resize(image: str, steps: int = 4) -> dict[str, str]:  # a plain function: runs in a thread
    for step in range(steps):
        report_progress(100 * (step + 1) / steps)  # visible in jobs.progress
    return {"image": image, "size": "640x480"}


@app.worker(name="crm.sync")
async def sync_crm(account: int) -> object:
    job = current_job()
    if job.scheduled_at == job.inserted_at:  # first time round: the CRM is busy
        return Snooze(0.5)  # back in half a second, no attempt used
    if account < 0:
        return Discard("no such account")  # give up at once
    return None


@app.worker(name="api.call", max_attempts=2)
async def call_api() -> None:
    raise RetryAfter(0.3, "429 Too Many Requests")  # retry after exactly that long


async def main() -> None:
    await app.migrate()
    jobs = await app.insert_all(
        [send_email.new({"to": f"user{i}@example.com"}) for i in range(5)]
        + [resize.new({"image": f"photo{i}.jpg"}) for i in range(5)]
        + [sync_crm.new({"account": 1}), sync_crm.new({"account": -1}), call_api.new()]
    )
    async with app:  # start a node; leaving the block stops it gracefully
        for job in jobs:
            while not (final := await app.get_job(job.id)) or not final.state.is_final:
                await asyncio.sleep(0.1)
            last_error = final.errors[-1]["message"] if final.errors else ""
            print(f"{final.worker:14} {final.state:10} attempts={final.attempt} {last_error}")
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_worker CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
