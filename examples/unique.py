"""Unique jobs: one refresh per account, however many times it is asked for.

python examples/unique.py          # SHIGOTO_DSN, or the embedded PostgreSQL
"""

from __future__ import annotations

import asyncio

from shigoto import Shigoto, Unique

app = Shigoto(schema="example_unique")  # a schema of its own, dropped at the end


@app.worker(name="accounts.refresh", unique=Unique(keys=["worker", "args.account"]))
async def refresh_account(account: int, reason: str) -> None: ...


@app.worker(name="search.reindex", unique=Unique(keys=["worker"], debounce=2, replace=["args"]))
async def reindex(changes: int) -> None: ...


async def main() -> None:
    await app.migrate()
    # Ten requests for the same account, at once: one job.
    jobs = await asyncio.gather(
        *(refresh_account.enqueue({"account": 42, "reason": f"request {i}"}) for i in range(10))
    )
    print(
        "distinct jobs:", len({job.id for job in jobs}), "conflicts:", sum(j.conflict for j in jobs)
    )
    # Debounce: each new edit pushes the pending reindex back and replaces its args.
    first = await reindex.enqueue({"changes": 1})
    last = await reindex.enqueue({"changes": 5})
    print("same job:", last.id == first.id, "| args now:", last.args, "| state:", last.state)
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_unique CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
