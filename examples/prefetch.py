"""Prefetch: a queue of many short jobs claims more than it runs at once.

    python examples/prefetch.py        # SHIGOTO_DSN, or the embedded PostgreSQL

Ten jobs run at a time; each claim takes up to fifty (the free slots plus the prefetch),
so 5,000 short jobs need about a hundred claims instead of five hundred.
"""

from __future__ import annotations

import asyncio
import time

from shigoto import Shigoto

app = Shigoto(schema="example_prefetch", queues={"default": 10}, prefetch=40)
TOTAL = 5_000
running = peak = done = 0
all_done = asyncio.Event()


@app.worker(name="thumbnails.make")
async def make_thumbnail(n: int) -> None:
    global running, peak, done
    running += 1
    peak = max(peak, running)
    await asyncio.sleep(0)  # a short job
    running -= 1
    done += 1
    if done == TOTAL:
        all_done.set()


async def main() -> None:
    await app.migrate()
    await app.insert_all([make_thumbnail.new({"n": n}) for n in range(TOTAL)])
    began = time.perf_counter()
    async with app:  # leaving it writes the last outcomes
        await asyncio.wait_for(all_done.wait(), 60)
    seconds = time.perf_counter() - began
    print(f"{TOTAL} jobs in {seconds:.2f}s; at most {peak} ran at once")
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_prefetch CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
