"""What the runtime asks of the database: claims, outcomes, staging, nodes and rescue.

Each function is an `Operation` (see `operations`), run by the runtime on a pooled
connection:

    jobs = await run_async(conn, claim(q, queue="default", limit=10, node=node_id))
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from shigoto import _json
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.db.rows import job_from_row, job_from_values
from shigoto.features.batches import Batch
from shigoto.job import Job, JobState

STAGE_BATCH = 5_000


@dataclass(slots=True)
class Ack:
    """The outcome of one run of a job, as the acker writes it (a value: never changed once
    built; not a frozen dataclass, which costs twice as much to build, once per job run).

    `refund` gives the attempt back (snooze, shutdown); `delay` reschedules the job that many
    seconds from now; `error` is appended to the job's error history. `size` is the length
    of `result` as JSON, in bytes (what the acker bounds its batches and its memory by);
    `max_attempts` is the job's, so that an outcome the database refuses can be replaced
    by a failure that is retried or discarded as any other (not written, only read here).
    """

    id: int
    attempt: int
    state: JobState
    refund: bool = False
    delay: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    size: int = 0
    max_attempts: int | None = None

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "state": self.state.value,
            "refund": self.refund,
            "delay": self.delay,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Settled:
    """What `settle_and_claim` did: the outcomes it wrote and the jobs it claimed."""

    applied: set[int]
    claimed: list[Job]
    follow_up: bool = False  # a job finished while jobs wait or batches are open


def settle_and_claim(
    q: Queries,
    acks: Sequence[Ack],
    *,
    node: str,
    queue: str | None = None,
    limit: int = 0,
    fresh_for: float = 0.0,
    fair: bool = False,
    after: Job | None = None,
) -> Operation[Settled]:
    """Write `acks` and claim up to `limit` jobs of `queue`, in one statement and one commit.

    A producer that claims carries the outcomes waiting at that moment, so a busy node
    commits once per batch instead of twice. No claim is made unless this node's heartbeat
    is younger than `fresh_for` seconds, nor while the queue is paused. `fair` claims
    round-robin across the queue's partitions, starting after the partition of `after`
    (the last job of the previous claim), so that partitions take turns claim by claim.
    """
    # '' stands for the jobs without a partition_key (a key is never empty).
    turn_after = None if after is None else after.partition_key or ""
    params = {
        "outcomes": _json.dumps([a.document() for a in acks]),
        "node": node,
        "queue": queue,
        "limit": limit if queue is not None else 0,
        "fresh_for": fresh_for,
        "after": turn_after,
    }
    result = yield Statement(q.claim_sql(fair), params, tuples=True)
    # Each row: acked, announced, follow_up, then the job's columns (JOB_COLUMNS).
    applied = set(result.rows[0][0]) if result.rows else set()
    follow_up = bool(result.rows and result.rows[0][2])
    jobs = [job_from_values(row[3:]) for row in result.rows if row[3] is not None]
    # UPDATE ... RETURNING does not keep the pick's order: restore it.
    if fair:
        jobs = _in_turns(jobs, turn_after)
    else:
        jobs.sort(key=lambda job: (-job.priority, job.scheduled_at, job.id))
    return Settled(applied, jobs, follow_up)


def _in_turns(jobs: list[Job], after: str | None) -> list[Job]:
    """A fair claim's jobs in pick_jobs_fair.sql's order: each partition's first job, in
    turn from the partition after `after` ('' for the jobs without a key, which come
    first), then each partition's second, and so on."""
    ranked: list[tuple[tuple[int, bool, str], Job]] = []
    seen: Counter[str] = Counter()
    for job in sorted(jobs, key=lambda job: (-job.priority, job.scheduled_at, job.id)):
        key = job.partition_key or ""
        seen[key] += 1
        ranked.append(((seen[key], after is not None and key <= after, key), job))
    ranked.sort(key=lambda pair: pair[0])
    return [job for _, job in ranked]


def claim(
    q: Queries,
    *,
    queue: str,
    limit: int,
    node: str,
    fresh_for: float,
    fair: bool = False,
    after: Job | None = None,
) -> Operation[list[Job]]:
    """Claim up to `limit` jobs, in the order they should start; none unless this node's
    heartbeat is younger than `fresh_for` seconds."""
    settled = yield from settle_and_claim(
        q, (), node=node, queue=queue, limit=limit, fresh_for=fresh_for, fair=fair, after=after
    )
    return settled.claimed


def ack(q: Queries, acks: Sequence[Ack], *, node: str) -> Operation[Settled]:
    """Write a batch of outcomes in one statement (`.applied`: the ids written)."""
    return (yield from settle_and_claim(q, acks, node=node))


def stage(
    q: Queries, *, queue: str | None = None, everything: bool = False
) -> Operation[dict[str, int]]:
    """Make due scheduled/retryable jobs available; returns how many per queue."""
    params = {"queue": queue, "all": everything, "limit": STAGE_BATCH}
    result = yield Statement(q.sql("stage_jobs"), params)
    return {row["queue"]: row["staged"] for row in result.rows}


RESOLVE_BATCH = 5_000


def finish_batches(q: Queries) -> Operation[list[Batch]]:
    """Close the batches whose jobs have all finished and insert their callbacks."""
    closed: list[Batch] = []
    while True:
        result = yield Statement(q.sql("finish_batches"))
        closed.extend(Batch.from_row(row) for row in result.rows)
        if len(result.rows) < 100:
            return closed


def results_of(q: Queries, ids: Sequence[int]) -> Operation[dict[int, Any]]:
    """The stored results of completed jobs, by id (others are left out)."""
    result = yield Statement(q.sql("results_of"), {"ids": list(ids)})
    return {row["id"]: row["result"] for row in result.rows}


def resolve_dependencies(q: Queries) -> Operation[set[str]]:
    """Release or cancel waiting jobs by their dependencies' states, batch
    after batch and again while cancellations cascade; returns the queues released into."""
    queues: set[str] = set()
    for _ in range(100):  # a bound: a chain 100 deep takes more than one stager pass
        result = yield Statement(q.sql("resolve_dependencies"), {"limit": RESOLVE_BATCH})
        row = result.rows[0]
        queues.update(row["queues"])
        if row["changed"] == 0 and row["looked_at"] < RESOLVE_BATCH:
            return queues
    return queues


def record_progress(
    q: Queries, updates: Mapping[tuple[int, int], float], *, node: str
) -> Operation[None]:
    """Store progress for running jobs: `{(job_id, attempt): percent}`."""
    document = _json.dumps(
        [{"id": i, "attempt": a, "progress": p} for (i, a), p in updates.items()]
    )
    yield Statement(q.sql("record_progress"), {"updates": document, "node": node})


def register_node(
    q: Queries, node: str, queues: Mapping[str, int], meta: Mapping[str, Any]
) -> Operation[None]:
    params = {
        "id": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": Jsonb(dict(queues)),
        "meta": Jsonb(dict(meta)),
    }
    yield Statement(q.sql("register_node"), params)


def heartbeat(q: Queries, node: str, queues: Mapping[str, int]) -> Operation[bool]:
    """Refresh this node's heartbeat; False if the node had been declared dead."""
    result = yield Statement(q.sql("heartbeat_node"), {"id": node, "queues": Jsonb(dict(queues))})
    return bool(result.rows)


def remove_node(q: Queries, node: str) -> Operation[None]:
    yield Statement(q.sql("remove_node"), {"id": node})


def give_back(q: Queries, *, node: str, running: Sequence[int] = ()) -> Operation[list[int]]:
    """Return this node's executing jobs that it does not run (all but `running`) to the
    queue, their attempts refunded; a stopping node's last step before it deregisters."""
    result = yield Statement(q.sql("give_back_jobs"), {"node": node, "running": list(running)})
    return [row["id"] for row in result.rows]


def rescue(q: Queries, *, node: str, node_timeout: float) -> Operation[list[Job]]:
    """Declare silent nodes dead and return their jobs to the queue (or discard them)."""
    params = {"node": node, "node_timeout": node_timeout}
    result = yield Statement(q.sql("rescue_jobs"), params)
    return [job_from_row(row) for row in result.rows]


def lost_jobs(
    q: Queries, runs: Sequence[tuple[int, int]], *, node: str
) -> Operation[list[tuple[int, int]]]:
    """Which of `runs` (job id, attempt) running here this node no longer owns."""
    params = {"ids": [i for i, _ in runs], "attempts": [a for _, a in runs], "node": node}
    result = yield Statement(q.sql("lost_jobs"), params)
    return [(row["id"], row["attempt"]) for row in result.rows]


def listen(q: Queries) -> Operation[None]:
    yield Statement(q.sql("listen"))
