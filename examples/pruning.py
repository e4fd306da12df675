"""Archival and pruning: old finished jobs move to the archive, old archives go.

python examples/pruning.py         # SHIGOTO_DSN, or the embedded PostgreSQL
"""

from __future__ import annotations

import asyncio

from shigoto import JobSpec, Shigoto

# Finished jobs are archived one second after they finished (the default is 14 days); the
# leader vacuums `jobs` once 20,000 dead row versions pile up (the default is 5,000).
app = Shigoto(
    schema="example_pruning", prune_after=1.0, archive_retention=30 * 86400, vacuum_after=20_000
)


@app.worker(name="report.build")
async def build(day: str) -> str:
    return f"report for {day}"


async def main() -> None:
    await app.migrate()
    jobs = await app.insert_all([JobSpec.build("report.build", {"day": f"d{i}"}) for i in range(5)])
    async with app:
        for job in jobs:
            await app.wait_for(job.id, timeout=10)
    await asyncio.sleep(1.1)
    print("would archive, would delete:", await app.prune(dry_run=True))
    print("archived, deleted:", await app.prune())
    print("still in jobs:", [await app.get_job(job.id) for job in jobs])
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_pruning CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
