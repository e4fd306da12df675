"""Schedules: a cron entry declared with the app, one on a worker, one made at runtime.

    python examples/scheduling.py      # SHIGOTO_DSN, or the embedded PostgreSQL

The node that leads fires each moment once, however many nodes run; `shigoto cron list`
shows the entries with their last and next runs.
"""

from __future__ import annotations

import asyncio

from shigoto import Cron, Every, Shigoto

app = Shigoto(
    schema="example_scheduling",
    cron=[("nightly-cleanup", Cron("0 3 * * *", tz="Europe/Berlin"), "cleanup", {"days": 7})],
    leader_lease=2.0,  # a quick election for the demo (default 15 s)
)
ticks: list[str] = []


@app.worker(name="cleanup")
async def cleanup(days: int) -> str:
    return f"deleted files older than {days} days"


@app.worker(name="tick", cron="@hourly")  # a schedule named "tick", on the worker itself
async def tick(label: str = "hourly") -> None:
    ticks.append(label)


async def main() -> None:
    await app.migrate()
    # At runtime, from any process: every second, late moments skipped after downtime.
    await app.schedule("heartbeat", Every(1), tick, {"label": "every second"}, catch_up="none")
    async with app:  # a node: it campaigns for the lease, then fires what is due
        while len(ticks) < 3:
            await asyncio.sleep(0.1)
        for entry in await app.schedules():
            print(f"{entry.name:16} {entry.schedule!r:42} next {entry.next_fire_at:%H:%M:%S}")
    print(f"'heartbeat' ran {len(ticks)} times")
    await app.unschedule("heartbeat")
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_scheduling CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
