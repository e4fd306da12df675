"""`python -m bench compare`: shigoto against its Python peers, side by side, in one run.

Each peer is installed by the harness into a virtualenv of its own under `.bench/venvs/`
(never into shigoto's environment) and driven by `bench/compare/peers/<name>_driver.py`, which
follows `PROTOCOL.md`. Every workload gets a fresh database on the same server. The
ceiling — PostgreSQL alone claiming and completing jobs in batches of 100 with pgbench —
is measured in the same run.

    python -m bench compare                       # everything (~15 minutes)
    python -m bench compare --peers shigoto,pgqueuer --workloads W1,W3
"""

from __future__ import annotations

import json
import os
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


PEERS = {
    "shigoto": Peer("shigoto", (), sys.executable),
    "procrastinate": Peer("procrastinate", ("procrastinate", "psycopg[binary]"), sys.executable),
    "pgqueuer": Peer("pgqueuer", ("pgqueuer[asyncpg]", "psycopg[binary]"), sys.executable),
    "oban": Peer(
        "oban",
        ("oban", "psycopg[binary]", "psycopg-pool", "uvloop", "orjson"),
        "python3.12",
        (3, 12),
    ),
}

WORKLOADS = {
    "W1": [("bulk_insert", {"jobs": 20_000})],
    "W2": [("single_insert", {"jobs": 2_000})],
    "W3": [
        ("drain", {"jobs": 20_000, "nodes": 1, "concurrency": 10}),
        ("drain", {"jobs": 20_000, "nodes": 2, "concurrency": 10}),
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


def ceiling(admin_dsn: str, pgbench: str = "pgbench") -> dict[str, Any]:
    """PostgreSQL alone: claim 100 jobs with SKIP LOCKED and complete them, in a loop."""
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
    script = Path(".bench") / "ceiling.sql"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "WITH claimed AS (UPDATE jobs SET state = 'executing', attempt = attempt + 1 WHERE id IN "
        "(SELECT id FROM jobs WHERE state = 'available' ORDER BY priority DESC, scheduled_at, id "
        "LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING id) "
        "UPDATE jobs SET state = 'completed' WHERE id IN (SELECT id FROM claimed);\n"
    )
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    results = {}
    for clients in (1, 2):
        env = {
            **os.environ,
            "PGHOST": str(info.get("host", "")),
            "PGPORT": str(info.get("port", 5432)),
            "PGUSER": str(info.get("user", "postgres")),
            "PGDATABASE": "bench_ceiling",
        }
        done = subprocess.run(
            [
                pgbench,
                "-n",
                "-f",
                str(script),
                "-c",
                str(clients),
                "-j",
                str(clients),
                "-T",
                "8",
                "-M",
                "prepared",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        tps = next(
            float(line.split("=")[1].split()[0])
            for line in done.stdout.splitlines()
            if line.startswith("tps")
        )
        results[f"clients_{clients}_jobs_per_second"] = round(tps * 100)
    return results


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
            for command, options in WORKLOADS[workload]:
                print(f"{name} {workload} {command} {options}", file=sys.stderr, flush=True)
                steps.append(
                    {"command": command, **options, **drive(python, name, command, dsn, options)}
                )
            results[workload] = steps
        report["peers"][name] = results
    report["ceiling"] = ceiling(admin_dsn)
    return report


def table(report: dict[str, Any]) -> str:
    """A markdown table: one row per figure, one column per peer, and our ratio to the best."""
    rows = [
        ("W1 bulk insert, jobs/s", "W1", 0, "jobs_per_second", True),
        ("W2 single inserts, jobs/s", "W2", 0, "jobs_per_second", True),
        ("W3 drain, 1 node, jobs/s", "W3", 0, "jobs_per_second", True),
        ("W3 drain, 2 nodes, jobs/s", "W3", 1, "jobs_per_second", True),
        ("W4 latency p50, ms", "W4", 0, "p50_ms", False),
        ("W4 latency p99, ms", "W4", 0, "p99_ms", False),
        ("W5 steady p50, ms", "W5", 0, "p50_ms", False),
        ("W5 steady p99, ms", "W5", 0, "p99_ms", False),
        ("W5 backlog at end", "W5", 0, "backlog_at_end", False),
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
            value = steps[index].get(key) if steps and len(steps) > index else None
            values[peer] = value
        others = [v for p, v in values.items() if p != "shigoto" and isinstance(v, int | float)]
        ours = values.get("shigoto")
        ratio = ""
        if isinstance(ours, int | float) and others:
            best = max(others) if higher_is_better else min(others)
            if best and ours:
                ratio = (
                    f"{ours / best:.2f}x"
                    if higher_is_better
                    else f"{best / ours:.2f}x (lower is better)"
                )
        cells = [("—" if v is None else str(v)) for v in values.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    ceiling = report.get("ceiling") or {}
    lines.append("")
    lines.append(
        "PostgreSQL alone (pgbench, claim+complete in batches of 100): "
        f"{ceiling.get('clients_1_jobs_per_second')} jobs/s with 1 client, "
        f"{ceiling.get('clients_2_jobs_per_second')} with 2."
    )
    return "\n".join(lines)
