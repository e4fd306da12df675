"""Batches: a group of jobs and a callback once all of them have finished.

python examples/batches.py         # SHIGOTO_DSN, or the embedded PostgreSQL
"""

from __future__ import annotations

import asyncio
from typing import Any

from shigoto import Batch, Discard, Shigoto

app = Shigoto(schema="example_batches", queues={"default": 5})
reports: list[str] = []


@app.worker(name="images.resize")
async def resize(image: str) -> object:
    if image.endswith(".gif"):
        return Discard("animated images are not supported")  # given up at once, no retry
    return f"{image} -> 640x480"


@app.worker(name="album.ready")
async def album_ready(batch: dict[str, Any]) -> None:
    reports.append(f"album {batch['meta']['album']}: {batch['completed']}/{batch['total']} done")


@app.worker(name="album.problems")
async def album_problems(batch: dict[str, Any]) -> None:
    reports.append(f"album {batch['meta']['album']}: {batch['discarded']} image(s) failed")


@app.on_batch_stopped
def closed(batch: Batch) -> None:
    reports.append(f"hook: batch {batch.id} closed")


async def main() -> None:
    await app.migrate()
    names = [f"photo{i}.jpg" for i in range(8)] + ["party.gif"]
    batch = await app.batch(
        [resize.new({"image": name}) for name in names],
        on_complete=album_ready,
        on_discard=album_problems,
        meta={"album": 7},
    )
    async with app:
        while len(reports) < 3:
            await asyncio.sleep(0.05)
    print(f"batch {batch.id} of {batch.total} jobs:")
    for line in sorted(reports):
        print(" ", line)
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_batches CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
