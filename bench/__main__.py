"""`python -m bench <name>`: run one benchmark and print its figures as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from bench import chaos, idle, insert, run
from bench.common import report, resolve_dsn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: SHIGOTO_DSN, else embedded)")
    commands = parser.add_subparsers(dest="command", required=True)
    insert_parser = commands.add_parser("insert", help="bulk and single insert throughput")
    insert_parser.add_argument("--bulk", type=int, default=20_000)
    insert_parser.add_argument("--single", type=int, default=2_000)
    run_parser = commands.add_parser("run", help="drain throughput and idle latency")
    run_parser.add_argument("--jobs", type=int, default=20_000)
    run_parser.add_argument("--latency-jobs", type=int, default=200)
    idle_parser = commands.add_parser("idle", help="CPU and RSS of an idle node; RSS under load")
    idle_parser.add_argument("--seconds", type=float, default=60.0)
    idle_parser.add_argument("--jobs", type=int, default=20_000)
    chaos_parser = commands.add_parser("chaos", help="faults and floods; invariants checked")
    chaos_parser.add_argument("--minutes", type=float, help="the long profile, this long")
    chaos_parser.add_argument("--seed", type=int)
    compare_parser = commands.add_parser("compare", help="shigoto against its peers")
    compare_parser.add_argument("--peers", default="shigoto,procrastinate,pgqueuer,oban")
    compare_parser.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6")
    compare_parser.add_argument("--output", default=".bench/compare.json")
    options = parser.parse_args()

    if options.command == "chaos":  # brings its own server: it restarts it
        result = asyncio.run(chaos.run(options.minutes, options.seed))
        report("chaos", result)
        raise SystemExit(0 if result["ok"] else 1)
    dsn = resolve_dsn(options.dsn)
    if options.command == "insert":
        report("insert", asyncio.run(insert.run(dsn, options.bulk, options.single)))
    elif options.command == "compare":
        from bench import compare

        result = compare.run(dsn, options.peers.split(","), options.workloads.split(","))
        Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        Path(options.output).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        print(compare.table(result))
    elif options.command == "idle":
        report("idle", asyncio.run(idle.run(dsn, options.seconds, options.jobs)))
    elif options.command == "run":
        report("run", asyncio.run(run.run(dsn, options.jobs, options.latency_jobs)))


if __name__ == "__main__":
    main()
