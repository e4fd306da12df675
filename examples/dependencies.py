"""Dependencies: a small pipeline where each step reads what the steps before it returned.

python examples/dependencies.py    # SHIGOTO_DSN, or the embedded PostgreSQL
"""

from __future__ import annotations

import asyncio

from shigoto import Shigoto, dependency_results

app = Shigoto(schema="example_dependencies", queues={"default": 4})


@app.worker(name="pipeline.fetch")
async def fetch(source: str) -> dict[str, int]:
    await asyncio.sleep(0.1)
    return {"rows": len(source) * 10}


@app.worker(name="pipeline.merge")
async def merge() -> dict[str, int]:
    parts = await dependency_results()  # {job_id: result} of the fetches
    return {"rows": sum(part["rows"] for part in parts.values())}


@app.worker(name="pipeline.report")
async def report() -> str:
    [merged] = (await dependency_results()).values()
    return f"{merged['rows']} rows merged"


async def main() -> None:
    await app.migrate()
    fetches = [fetch.new({"source": name}) for name in ("crm", "billing", "support")]
    merged = merge.new(depends_on=fetches)
    final = report.new(depends_on=[merged])
    jobs = await app.insert_all([*fetches, merged, final])
    print("states at insert:", [str(job.state) for job in jobs])
    async with app:
        done = await app.wait_for(jobs[-1].id, timeout=30)
    print(done.state, "->", done.result)
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_dependencies CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
