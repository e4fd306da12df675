"""A producer process for the chaos harness: inserts its share of jobs at a steady pace,
in bulk and one by one, and reports on stdout (JSON) which inserts it knows committed.

    python -m bench.chaos_producer --id 1 --jobs 5000 --seconds 30 --seed 7

Each job carries meta {"producer": id, "seq": n}, so the harness can find every
committed job afterwards. An insert whose commit outcome is unknown (the connection died
during it) is reported as uncertain: it may or may not exist, and neither is a loss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from bench.chaos_app import build, job_mix
from shigoto import DatabaseUnavailable, Shigoto


async def produce(producer: int, jobs: int, seconds: float, seed: int) -> dict[str, object]:
    app = Shigoto(pool_max_size=2)
    rng = random.Random(seed)
    mix = job_mix(jobs, rng)
    confirmed: list[int] = []
    uncertain: list[int] = []
    refused = 0
    began = time.monotonic()
    seq = 0
    while seq < len(mix):
        size = 1 if rng.random() < 0.3 else rng.randint(20, 200)
        batch = [
            build(name, args, queue=queue, meta={"producer": producer, "seq": n})
            for n, (name, args, queue) in enumerate(mix[seq : seq + size], start=seq)
        ]
        numbers = list(range(seq, seq + len(batch)))
        try:
            if len(batch) == 1:
                await app.insert(batch[0])
            else:
                await app.insert_all(batch)
            confirmed.extend(numbers)
            seq += len(batch)
        except DatabaseUnavailable as error:
            # A connection that broke mid-statement leaves the outcome unknown; one that was
            # never had (no connection in time, connection refused) means nothing was sent.
            if error.may_have_run:
                uncertain.extend(numbers)
                seq += len(batch)
            else:
                refused += 1
                await asyncio.sleep(0.2)  # not sent: try the same jobs again
            continue
        # Keep pace: the jobs spread over `seconds`.
        behind = (seq / len(mix)) * seconds - (time.monotonic() - began)
        if behind > 0:
            await asyncio.sleep(behind)
    await app.close()
    return {
        "producer": producer,
        "confirmed": confirmed,
        "uncertain": uncertain,
        "refused": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    report = asyncio.run(produce(options.id, options.jobs, options.seconds, options.seed))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
