"""`python -m bench compare`: shigoto against its Python peers, side by side, in one run.

Each peer is installed by the harness into a virtualenv of its own under `.bench/venvs/`
(never into shigoto's environment) and driven by `bench/compare/peers/<name>_driver.py`, which
follows `PROTOCOL.md`. Every workload gets a fresh database on the same server. The
ceiling — PostgreSQL alone claiming and completing jobs with pgbench, and bare psycopg
inserts — is measured in the same run.

    python -m bench compare                       # everything (~15 minutes)
    python -m bench compare --peers shigoto,pgqueuer --workloads W1,W3
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).parent.parent.parent
PEERS_DIR = Path(__file__).parent / "peers"
VENVS = ROOT / ".bench" / "venvs"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]  # what its virtualenv needs
    python: str  # the interpreter the virtualenv is made from
    needs: tuple[int, int] = (3, 11)
    # Workload options the peer has no setting for, and why: those steps are not run.
    lacks: tuple[tuple[str, str], ...] = ()


# None of the peers claims more jobs than it can run at once (pgqueuer's batch_size must
# be at most half its max_concurrent_tasks; procrastinate fetches a job per free worker;
# oban fetches up to its queue's free slots).
NO_PREFETCH = (
    ("prefetch", "no setting to claim jobs beyond its concurrency"),
    ("observed", "shigoto's own events and middleware"),
)


PEERS = {
    "shigoto": Peer("shigoto", (), sys.executable),
    "procrastinate": Peer(
        "procrastinate", ("procrastinate", "psycopg[binary]"), sys.executable, lacks=NO_PREFETCH
    ),
    "pgqueuer": Peer(
        "pgqueuer", ("pgqueuer[asyncpg]", "psycopg[binary]"), sys.executable, lacks=NO_PREFETCH
    ),
    "oban": Peer(
        "oban",
        ("oban", "psycopg[binary]", "psycopg-pool", "uvloop", "orjson"),
        "python3.12",
        (3, 12),
        lacks=NO_PREFETCH,
    ),
}

WORKLOADS = {
    "W1": [("bulk_insert", {"jobs": 20_000})],
    "W2": [("single_insert", {"jobs": 2_000})],
    "W3": [
        ("drain", {"jobs": 20_000, "nodes": 1, "concurrency": 10}),
        ("drain", {"jobs": 20_000, "nodes": 2, "concurrency": 10}),
        # shigoto's `prefetch` (docs/performance.md): still 10 at a time, bigger claims.
        ("drain", {"jobs": 20_000, "nodes": 2, "concurrency": 10, "prefetch": 40}),
        # shigoto with a handler on every event ("*") and a middleware on every job.
        ("drain", {"jobs": 20_000, "nodes": 2, "concurrency": 10, "observed": 1}),
    ],
    "W4": [("latency", {"jobs": 200, "gap": 0.02})],
    "W5": [("steady", {"rate": 2_000, "seconds": 20, "nodes": 2, "concurrency": 10})],
    "W6": [
        ("seed_finished", {"rows": 1_000_000}),
        ("drain", {"jobs": 20_000, "nodes": 2, "concurrency": 10}),
        ("latency", {"jobs": 200, "gap": 0.02}),
    ],
}


def python_for(peer: Peer) -> str | None:
    """The peer's interpreter, installing its virtualenv on first use; None if impossible."""
    if peer.name == "shigoto":
        return sys.executable
    venv = VENVS / peer.name
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    base = _find_python(peer)
    if base is None:
        print(
            f"{peer.name}: needs Python {'.'.join(map(str, peer.needs))}+; skipped", file=sys.stderr
        )
        return None
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *peer.requirements],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return str(python)


def _find_python(peer: Peer) -> str | None:
    candidates = [
        peer.python,
        f"python{peer.needs[0]}.{peer.needs[1]}",
        f"/root/.pyenv/versions/{peer.needs[0]}.{peer.needs[1]}.1/bin/python",
    ]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-c", f"import sys; print(sys.version_info[:2] >= {peer.needs!r})"],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            continue
        if done.stdout.strip() == "True":
            return candidate
    return None


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def drive(
    python: str, peer: str, command: str, dsn: str, options: dict[str, Any]
) -> dict[str, Any]:
    args = [python, str(PEERS_DIR / f"{peer}_driver.py"), command, "--dsn", dsn]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if peer == "shigoto":
        env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# Claim 100 and complete them in one statement: the most PostgreSQL can do on this server.
CLAIM_100_ONE_STATEMENT = (
    "WITH claimed AS (UPDATE jobs SET state = 'executing', attempt = attempt + 1 WHERE id IN "
    "(SELECT id FROM jobs WHERE state = 'available' ORDER BY priority DESC, scheduled_at, id "
    "LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id) "
    "UPDATE jobs SET state = 'completed' WHERE id IN (SELECT id FROM claimed);\n"
)
# The same with 10: one statement per 10 jobs, as when a queue running 10 at a time writes
# the outcomes of one batch with the claim of the next.
CLAIM_10_ONE_STATEMENT = CLAIM_100_ONE_STATEMENT.replace("LIMIT 100", "LIMIT 10")
# What any queue running 10 jobs at a time must do at least: claim 10 in one transaction,
# complete them in another (the jobs run in between).
CLAIM_10_THEN_COMPLETE = (
    "WITH claimed AS (UPDATE jobs SET state = 'executing', attempt = attempt + 1 WHERE id IN "
    "(SELECT id FROM jobs WHERE state = 'available' ORDER BY priority DESC, scheduled_at, id "
    "LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING id) SELECT array_agg(id) AS ids FROM claimed\n"
    "\\gset\n"
    "UPDATE jobs SET state = 'completed' WHERE id = ANY(:ids::bigint[]);\n"
)


def ceiling(admin_dsn: str, pgbench: str = "pgbench") -> dict[str, Any]:
    """PostgreSQL alone: claim-and-complete loops with pgbench (in batches of 100 or 10 in
    one statement, and in batches of 10 as two transactions). (W2's yardstick, bare psycopg
    inserts, is measured beside shigoto's W2: see `run`.)"""
    results: dict[str, Any] = {}
    for name, script, batch in (
        ("batch_100", CLAIM_100_ONE_STATEMENT, 100),
        ("batch_10", CLAIM_10_ONE_STATEMENT, 10),
        ("batch_10_two_commits", CLAIM_10_THEN_COMPLETE, 10),
    ):
        dsn = _ceiling_table(admin_dsn)
        for clients in (1, 2):
            tps = _pgbench(pgbench, dsn, script, clients)
            results[f"{name}_clients_{clients}_jobs_per_second"] = round(tps * batch)
    return results


def _ceiling_table(admin_dsn: str) -> str:
    dsn = fresh_database(admin_dsn, "bench_ceiling")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "state text NOT NULL DEFAULT 'available', priority int NOT NULL DEFAULT 0, "
            "scheduled_at timestamptz NOT NULL DEFAULT now(), attempt int NOT NULL DEFAULT 0) "
            "WITH (fillfactor = 80)"
        )
        conn.execute(
            "CREATE INDEX ON jobs (priority DESC, scheduled_at, id) WHERE state = 'available'"
        )
        conn.execute("INSERT INTO jobs (state) SELECT 'available' FROM generate_series(1, 3000000)")
        conn.execute("VACUUM ANALYZE jobs")
    return dsn


def _pgbench(pgbench: str, dsn: str, script_text: str, clients: int) -> float:
    script = ROOT / ".bench" / "ceiling.sql"
    script.parent.mkdir(exist_ok=True)
    script.write_text(script_text)
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {
        **os.environ,
        "PGHOST": str(info.get("host", "")),
        "PGPORT": str(info.get("port", 5432)),
        "PGUSER": str(info.get("user", "postgres")),
        "PGDATABASE": str(info.get("dbname", "")),
    }
    command = [pgbench, "-n", "-f", str(script), "-c", str(clients), "-j", str(clients)]
    done = subprocess.run(
        [*command, "-T", "8", "-M", "prepared"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return next(
        float(line.split("=")[1].split()[0])
        for line in done.stdout.splitlines()
        if line.startswith("tps")
    )


# Workloads whose every step starts on an empty database: W3's drains are compared with
# each other (one node and two, prefetch, shigoto observed), and the finished rows of the
# drains before a step (and the vacuuming they call for) made a later one slower by up to
# a fifth whatever it ran. (W6's steps build on each other on purpose.)
FRESH_STEPS = {"W3"}


def run(admin_dsn: str, peers: list[str], workloads: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "peers": {},
        "ceiling": None,
        "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    for name in peers:
        peer = PEERS[name]
        python = python_for(peer)
        if python is None:
            report["peers"][name] = {"skipped": f"needs Python {peer.needs[0]}.{peer.needs[1]}+"}
            continue
        results: dict[str, Any] = {}
        for workload in workloads:
            dsn = fresh_database(admin_dsn, f"bench_{name}")
            drive(python, name, "setup", dsn, {})
            steps = []
            for number, (command, options) in enumerate(WORKLOADS[workload]):
                lacking = [why for option, why in peer.lacks if options.get(option)]
                if lacking:
                    steps.append({"command": command, **options, "unsupported": lacking[0]})
                    continue
                if workload in FRESH_STEPS and number > 0:
                    dsn = fresh_database(admin_dsn, f"bench_{name}")
                    drive(python, name, "setup", dsn, {})
                print(f"{name} {workload} {command} {options}", file=sys.stderr, flush=True)
                if command == "single_insert":
                    outcome = single_inserts(python, name, dsn, options)
                elif command == "bulk_insert":
                    runs = [drive(python, name, command, dsn, options) for _ in range(BULK_RUNS)]
                    outcome = _median_run(runs)
                else:
                    outcome = drive(python, name, command, dsn, options)
                steps.append({"command": command, **options, **outcome})
            results[workload] = steps
        report["peers"][name] = results
    report["ceiling"] = ceiling(admin_dsn)
    return report


# W1 and W2 take a second or less per run, so a burst of the machine's neighbours moves a
# single run by more than the targets are about (W1 went 105,000-143,000 jobs/s in three
# runs in a row): they run several times, the median run kept.
BULK_RUNS = 3
SINGLE_INSERT_RUNS = 9


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate; or the first run's error or
    "unsupported", as the driver said it."""
    rates = [run.get("jobs_per_second") for run in runs]
    if not all(isinstance(rate, int | float) for rate in rates):
        return runs[0]
    result = {**sorted(runs, key=lambda run: run["jobs_per_second"])[len(runs) // 2]}
    result["runs_jobs_per_second"] = rates
    return result


def single_inserts(python: str, name: str, dsn: str, options: dict[str, Any]) -> dict[str, Any]:
    """W2 nine times, the median run kept; for shigoto, then W2's yardstick three times
    (`single_insert_vs_bare`: shigoto's async API and sync facade beside bare psycopg
    inserts, in one process, in turns of 100 on the same connection), the median ratio
    kept."""
    runs = [drive(python, name, "single_insert", dsn, options) for _ in range(SINGLE_INSERT_RUNS)]
    result = _median_run(runs)
    if name == "shigoto" and "runs_jobs_per_second" in result:
        beside = [
            drive(python, name, "single_insert_vs_bare", dsn, {"jobs": YARDSTICK_JOBS})
            for _ in range(YARDSTICK_RUNS)
        ]
        if all("ratio_async" in run for run in beside):
            result["vs_bare"] = {
                "runs": beside,
                "ratio_async": statistics.median(run["ratio_async"] for run in beside),
                "ratio_sync": statistics.median(run["ratio_sync"] for run in beside),
            }
    return result


YARDSTICK_RUNS = 3
YARDSTICK_JOBS = 6_000  # per variant: 60 turns of 100


def _figure(value: object) -> str:
    """A cell: rates as whole numbers, milliseconds to two decimals, errors as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(report: dict[str, Any]) -> str:
    """A markdown table: one row per figure, one column per peer, and our ratio to the best
    (none for the backlog, a count of jobs left where ours is usually none at all)."""
    rows = [
        ("W1 bulk insert, jobs/s", "W1", 0, "jobs_per_second", True),
        ("W2 single inserts, jobs/s", "W2", 0, "jobs_per_second", True),
        ("W3 drain, 1 node, jobs/s", "W3", 0, "jobs_per_second", True),
        ("W3 drain, 2 nodes, jobs/s", "W3", 1, "jobs_per_second", True),
        ("W3 drain, 2 nodes, prefetch 40, jobs/s", "W3", 2, "jobs_per_second", True),
        (
            "W3 drain, 2 nodes, every event heard + middleware, jobs/s",
            "W3",
            3,
            "jobs_per_second",
            True,
        ),
        ("W4 latency p50, ms", "W4", 0, "p50_ms", False),
        ("W4 latency p99, ms", "W4", 0, "p99_ms", False),
        ("W5 steady p50, ms", "W5", 0, "p50_ms", False),
        ("W5 steady p99, ms", "W5", 0, "p99_ms", False),
        ("W5 backlog at end", "W5", 0, "backlog_at_end", None),
        ("W6 drain, 2 nodes, 1M finished rows, jobs/s", "W6", 1, "jobs_per_second", True),
        ("W6 latency p50, 1M finished rows, ms", "W6", 2, "p50_ms", False),
    ]
    peers = list(report["peers"])
    lines = [
        "| figure | " + " | ".join(peers) + " | shigoto vs best peer |",
        "|---" * (len(peers) + 2) + "|",
    ]
    for label, workload, index, key, higher_is_better in rows:
        values = {}
        for peer in peers:
            steps = (
                report["peers"][peer].get(workload)
                if isinstance(report["peers"][peer], dict)
                else None
            )
            step = steps[index] if steps and len(steps) > index else {}
            value = step.get(key, "n/a" if "unsupported" in step else None)
            values[peer] = value
        others = [v for p, v in values.items() if p != "shigoto" and isinstance(v, int | float)]
        ours = values.get("shigoto")
        ratio = ""
        if isinstance(ours, int | float) and others and higher_is_better is not None:
            best = max(others) if higher_is_better else min(others)
            if best and ours:
                ratio = (
                    f"{ours / best:.2f}x"
                    if higher_is_better
                    else f"{best / ours:.2f}x (lower is better)"
                )
        cells = [_figure(v) for v in values.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    ceiling = report.get("ceiling") or {}
    lines.append("")
    lines.append(
        "PostgreSQL alone (pgbench): claim+complete in batches of 100, one statement: "
        f"{ceiling.get('batch_100_clients_1_jobs_per_second')} jobs/s with 1 client, "
        f"{ceiling.get('batch_100_clients_2_jobs_per_second')} with 2; in batches of 10, one "
        f"statement: {ceiling.get('batch_10_clients_1_jobs_per_second')} with 1 client, "
        f"{ceiling.get('batch_10_clients_2_jobs_per_second')} with 2; claim 10 then "
        "complete them in a second transaction (the least a queue running 10 at a time "
        f"does): {ceiling.get('batch_10_two_commits_clients_1_jobs_per_second')} with 1 client, "
        f"{ceiling.get('batch_10_two_commits_clients_2_jobs_per_second')} with 2."
    )
    w2 = (report["peers"].get("shigoto") or {}).get("W2") or [{}]
    beside = w2[0].get("vs_bare") if isinstance(w2[0], dict) else None
    if beside:
        rates = sorted(beside["runs"], key=lambda run: run["ratio_async"])[len(beside["runs"]) // 2]
        lines.append(
            "W2 beside bare psycopg (one process, turns of 100 inserts on the same connection, "
            f"median of {len(beside['runs'])} runs): shigoto's async API "
            f"{beside['ratio_async']:.0%} of bare async psycopg's rate "
            f"({rates['shigoto_async_jobs_per_second']} vs "
            f"{rates['psycopg_async_jobs_per_second']} jobs/s), its sync facade "
            f"{beside['ratio_sync']:.0%} of bare sync psycopg's "
            f"({rates['shigoto_sync_jobs_per_second']} vs "
            f"{rates['psycopg_sync_jobs_per_second']} jobs/s)."
        )
    return "\n".join(lines)
