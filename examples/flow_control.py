"""Flow control: pause a queue everywhere, pause one job, and claim fairly across tenants.

python examples/flow_control.py    # SHIGOTO_DSN, or the embedded PostgreSQL
"""

from __future__ import annotations

import asyncio

from shigoto import JobState, Shigoto

app = Shigoto(
    schema="example_flow_control", queues={"imports": 4, "emails": 2}, fair_queues=("imports",)
)
order: list[str] = []


@app.worker(name="import_rows", queue="imports")
async def import_rows(tenant: str, row: int) -> None:
    order.append(tenant)
    await asyncio.sleep(0.001)


@app.worker(name="send_email", queue="emails")
async def send_email(to: str) -> None: ...


async def wait_for(job_id: int, state: JobState) -> None:
    while (job := await app.get_job(job_id)) is None or job.state is not state:
        await asyncio.sleep(0.05)


async def main() -> None:
    await app.migrate()
    # One tenant with 400 rows to import, another with 5: round-robin serves both at once.
    await app.insert_all(
        [import_rows.new({"tenant": "big", "row": i}, partition_key="big") for i in range(400)]
        + [import_rows.new({"tenant": "small", "row": i}, partition_key="small") for i in range(5)]
    )
    await app.pause_queue("emails")  # held on every node until resumed
    email = await send_email.enqueue({"to": "a@example.com"})
    held = await send_email.enqueue({"to": "b@example.com"})
    await app.pause_job(held.id)  # this one stays back even after the queue resumes

    async with app:
        while len(order) < 405:
            await asyncio.sleep(0.05)
        last_small = max(i for i, tenant in enumerate(order) if tenant == "small")
        print(f"the small tenant's 5 rows were done by completion {last_small + 1} of 405")
        print("emails paused:", await app.is_queue_paused("emails"))
        await app.resume_queue("emails")
        await wait_for(email.id, JobState.COMPLETED)
        print(
            "after resume_queue: the email was sent; the paused job is",
            (await app.get_job(held.id)).state,
        )  # type: ignore[union-attr]
        await app.resume_job(held.id)
        await wait_for(held.id, JobState.COMPLETED)
        print("after resume_job: sent too")
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_flow_control CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
