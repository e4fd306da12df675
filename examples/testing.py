"""Testing code that enqueues jobs: drain_queue, inline mode and manual mode.

    python examples/testing.py          # SHIGOTO_DSN, or the embedded PostgreSQL

In a pytest suite, add `pytest_plugins = ["shigoto.pytest_plugin"]` and a `shigoto_app`
fixture, then use the `shigoto_manual` and `shigoto_inline` fixtures (docs/testing.md).
"""

from __future__ import annotations

import asyncio

from shigoto import Shigoto
from shigoto.testing import inline, manual

app = Shigoto(schema="example_testing")  # a schema of its own, dropped at the end
sent: list[str] = []


@app.worker(name="emails.welcome", queue="emails")
async def welcome(to: str) -> str:
    sent.append(to)
    return f"welcomed {to}"


async def signup(email: str) -> None:
    """The code under test: it saves a user (not shown) and enqueues an email."""
    await welcome.enqueue({"to": email})


async def main() -> None:
    await app.migrate()

    # 1. Manual mode: nothing is written or run; assert on what was enqueued.
    with manual(app) as jobs:
        await signup("ada@example.com")
        jobs.assert_enqueued(worker=welcome, args={"to": "ada@example.com"})
        jobs.refute_enqueued(queue="default")
    assert sent == []

    # 2. Inline mode: the job runs at once, as part of the insert.
    with inline(app):
        await signup("bob@example.com")
    assert sent == ["bob@example.com"]

    # 3. The real thing, run to the end in this task: insert, then drain the queue.
    await app.cancel_by(queue="emails")  # start from a clean queue
    await signup("cy@example.com")
    counts = await app.drain_queue("emails")
    assert counts["completed"] == 1 and sent[-1] == "cy@example.com"
    print("manual, inline and drain_queue all saw the welcome email:", counts)
    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_testing CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
