"""The chaos harness: node processes run a mixed workload, with hostile jobs among it,
while the harness kills them, cuts their connections, restarts PostgreSQL, exhausts its
connections, pins the vacuum horizon and floods inserts, and a client process inserts
through all of it; then it checks that nothing was lost or run twice, that every kind of
job ended as it should, and that the client saw no error once the server was back.

    python -m bench chaos                    # the short profile (~60 s; CI runs it)
    python -m bench chaos --minutes 10       # the long profile: 100,000+ jobs

It runs on a private embedded PostgreSQL of its own (it restarts it), prints a JSON
report and exits non-zero if any invariant is breached. See docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.chaos_app import EXPECTED, LEDGER
from shigoto import Shigoto
from shigoto.db.embedded import embedded_dsn, stop_embedded

ROOT = Path(__file__).parent.parent
SCHEMA = "chaos"
POOL_MAX_SIZE = 8  # each node's; its `hold` queue runs as many connection holders
NODE_SETTINGS = {
    "SHIGOTO_QUEUES": f"default=10,slow=5,cpu=2,hold={POOL_MAX_SIZE}",
    "SHIGOTO_POOL_MAX_SIZE": str(POOL_MAX_SIZE),
    "SHIGOTO_MAX_RESULT_BYTES": "100000",
    "SHIGOTO_HEARTBEAT_INTERVAL": "1",
    "SHIGOTO_RESCUE_AFTER": "4",
    "SHIGOTO_POLL_INTERVAL": "0.5",
    "SHIGOTO_STAGE_INTERVAL": "0.25",
    "SHIGOTO_SHUTDOWN_TIMEOUT": "5",
}
RSS_GROWTH_BOUND_MB = 60.0  # per node, from its first sample after warm-up to its last
CLIENT_ID = 100  # the client process's producer ids: 100 (async inserts), 101 (sync)
# Faults during which the server refuses (some) connections, or that cut connections
# mid-statement: a client call in flight across one may fail; any other may not.
CLIENT_FAULTS = ("restart", "exhaust", "purge", "terminate")


@dataclass
class Profile:
    name: str
    seconds: float  # how long faults and floods go on
    nodes: int
    backlog: int  # jobs inserted before the nodes start
    producers: int
    jobs_per_producer: int
    kills: int
    purges: int  # pg_terminate_backend of every shigoto backend
    terminations: int  # pg_terminate_backend of a few random backends
    restart: bool
    exhaust_seconds: float
    idle_transaction_seconds: float

    @classmethod
    def short(cls) -> Profile:
        return cls("short", 45, 3, 1_000, 2, 1_000, 2, 1, 2, True, 4, 10)

    @classmethod
    def long(cls, minutes: float) -> Profile:
        seconds = minutes * 60
        per_producer = int(33_000 * minutes / 10)
        return cls(
            "long",
            seconds,
            4,
            int(10_000 * minutes / 10),
            3,
            per_producer,
            max(3, int(seconds / 8)),
            max(2, int(minutes)),
            max(4, int(seconds / 15)),
            True,
            15,
            60,
        )


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the start
    db_at: datetime | None = None  # the same moment by the database's clock
    detail: str = ""
    until: float | None = None  # when it was over (the server back, the connections freed)
    pid: int | None = None  # the node killed, for kills
    throughput_recovered_after_s: float | None = None  # None: not measurable (idle before)
    work_resumed_after_s: float | None = None  # a job started after the fault completed
    rescued_after_s: float | None = None  # kills: the victim's jobs all completed elsewhere
    affected_jobs: int = 0  # running at the fault (on the victim, for kills)
    lost_jobs: int = 0  # of those, not finished at the end


@dataclass
class NodeProcess:
    process: subprocess.Popen[bytes]
    started: float
    killed_at: datetime | None = None
    rss_mb: list[tuple[float, float]] = field(default_factory=list)


class Harness:
    def __init__(self, profile: Profile, home: Path, seed: int) -> None:
        self.profile = profile
        self.home = home
        self.rng = random.Random(seed)
        self.seed = seed
        self.dsn = ""
        self.nodes: list[NodeProcess] = []
        self.faults: list[Fault] = []
        self.samples: list[tuple[float, int]] = []  # (t, completed jobs)
        self.began = time.monotonic()
        self.app: Shigoto | None = None
        self.failed_producers = 0

    # -- set-up ------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.dsn = await asyncio.to_thread(embedded_dsn, self.home)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        self.app = Shigoto(dsn=self.dsn, schema=SCHEMA, pool_max_size=4)
        await self.app.migrate()
        async with self.app.connection() as conn:
            ledger = sql.Identifier(SCHEMA, "ledger")
            await conn.execute(sql.SQL(LEDGER).format(ledger))  # type: ignore[arg-type]
            await conn.execute(sql.SQL("CREATE INDEX ON {} (job_id)").format(ledger))

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            **NODE_SETTINGS,
            "SHIGOTO_DSN": self.dsn,
            "SHIGOTO_SCHEMA": SCHEMA,
            "PYTHONPATH": str(ROOT),
        }

    def start_node(self) -> NodeProcess:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shigoto.cli",
                "worker",
                "bench.chaos_app:app",
                "--log-level",
                "ERROR",
            ],
            env=self._env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = NodeProcess(process, time.monotonic())
        self.nodes.append(node)
        return node

    def start_client(self) -> subprocess.Popen[bytes]:
        command = ["-m", "bench.chaos_client", "--id", str(CLIENT_ID)]
        return subprocess.Popen(
            [sys.executable, *command, "--seconds", str(self.profile.seconds)],
            env=self._env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def start_producer(self, number: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.chaos_producer",
                "--id",
                str(number),
                "--jobs",
                str(self.profile.jobs_per_producer),
                "--seconds",
                str(self.profile.seconds * 0.8),
                "--seed",
                str(self.seed + number),
            ],
            env=self._env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def now(self) -> float:
        return time.monotonic() - self.began

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        phases: dict[str, float] = {}  # seconds each phase took, for the report

        def phase(name: str, began: float) -> None:
            phases[name] = round(self.now() - began, 1)

        began = self.now()
        await self.setup()
        baseline_backends = await self._backends()
        await self._insert_backlog()
        phase("setup", began)
        began = self.now()
        for _ in range(self.profile.nodes):
            self.start_node()
        producers = [self.start_producer(n) for n in range(1, self.profile.producers + 1)]
        client = self.start_client()
        sampler = asyncio.create_task(self._sample())
        await self._faults()
        reports = [
            json.loads((await asyncio.to_thread(p.communicate))[0] or b"{}") for p in producers
        ]
        # A producer that died reported nothing it inserted: what it committed would go
        # unchecked, so its death is a breach of its own.
        self.failed_producers = sum(1 for p in producers if p.returncode != 0)
        client_reports = json.loads((await asyncio.to_thread(client.communicate))[0] or b"[]")
        phase("faults", began)
        began = self.now()
        settled = await self._settle(timeout=max(120.0, self.profile.seconds))
        sampler.cancel()
        phase("settle", began)
        began = self.now()
        await self._stop_nodes()
        phase("stop", began)
        leaked = await self._backends() - baseline_backends
        result = await self._check(reports, client_reports, settled, leaked)
        assert self.app is not None
        await self.app.close()
        return {**result, "phases_s": phases}

    async def _insert_backlog(self) -> None:
        from bench.chaos_app import build, hostile_jobs, job_mix

        assert self.app is not None
        mix = job_mix(self.profile.backlog, self.rng)
        specs = [
            build(name, args, queue=queue, meta={"producer": 0, "seq": n})
            for n, (name, args, queue) in enumerate(mix)
        ]
        # The hostile ones are due at their moments of the run (its clock starts about now).
        hostile = hostile_jobs(self.profile.seconds, self.rng)
        specs += [
            build(name, args, scheduled_in=at, meta={"producer": 0, "seq": n})
            for n, (name, args, at) in enumerate(hostile, start=len(specs))
        ]
        for start in range(0, len(specs), 5_000):
            await self.app.insert_all(specs[start : start + 5_000])
        self.backlog = len(specs)

    async def _faults(self) -> None:
        p = self.profile
        plan: list[tuple[float, str]] = []
        span = p.seconds
        plan += [(span * (i + 1) / (p.kills + 1), "kill") for i in range(p.kills)]
        plan += [(span * (i + 0.5) / max(p.purges, 1), "purge") for i in range(p.purges)]
        plan += [(span * self.rng.uniform(0.1, 0.9), "terminate") for _ in range(p.terminations)]
        if p.restart:
            plan.append((span * 0.6, "restart"))
        if p.exhaust_seconds:
            plan.append((span * 0.35, "exhaust"))
        if p.idle_transaction_seconds:
            plan.append((span * 0.2, "idle_transaction"))
        plan.sort()
        background: list[asyncio.Task[None]] = []
        for at, kind in plan:
            await asyncio.sleep(max(0.0, at - self.now()))
            if kind == "kill":
                await self._kill()
            elif kind == "purge":
                await self._terminate(everything=True)
            elif kind == "terminate":
                await self._terminate(everything=False)
            elif kind == "restart":
                await self._restart()
            elif kind == "exhaust":
                background.append(asyncio.create_task(self._exhaust()))
            elif kind == "idle_transaction":
                background.append(asyncio.create_task(self._idle_transaction()))
        await asyncio.sleep(max(0.0, span - self.now()))
        await asyncio.gather(*background)

    # -- faults ------------------------------------------------------------------------------

    async def _kill(self) -> None:
        """SIGKILL the node with the most jobs in flight (a kill of an idle node proves
        little), and start a replacement."""
        alive = [n for n in self.nodes if n.process.poll() is None]
        busy = await self._in_flight_by_pid()
        most = max((busy.get(n.process.pid, 0) for n in alive), default=0)
        victim = self.rng.choice([n for n in alive if busy.get(n.process.pid, 0) == most])
        at = self.now()
        victim.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait)
        victim.killed_at = await self._db_now()
        pid = victim.process.pid
        detail = f"pid {pid} with {most} job(s) in flight"
        self.faults.append(Fault("kill", at, victim.killed_at, detail, pid=pid))
        self.start_node()

    async def _terminate(self, everything: bool) -> None:
        # With a timeout, pg_terminate_backend returns once the backend has exited: the
        # fault's window ends when its connections are really gone (without, a backend
        # could die after `until`, and a client call it broke read as outside the fault).
        query = (
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM (SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name LIKE 'shigoto%%' ORDER BY random() LIMIT %s) AS chosen"
        )
        at, db_at = self.now(), await self._db_now()
        killed = await self._query_one(query, [None if everything else 3])
        kind = "purge" if everything else "terminate"
        self.faults.append(Fault(kind, at, db_at, f"{killed} backends", until=self.now()))

    async def _restart(self) -> None:
        at, db_at = self.now(), await self._db_now()
        await asyncio.to_thread(stop_embedded, self.home)
        await asyncio.sleep(2)
        await asyncio.to_thread(embedded_dsn, self.home)
        await self._db_now()  # the server accepts connections again
        back = self.now()
        self.faults.append(Fault("restart", at, db_at, "server stopped for 2 s", until=back))

    async def _exhaust(self) -> None:
        at, db_at = self.now(), await self._db_now()
        hogs: list[psycopg.AsyncConnection[Any]] = []
        while True:
            try:
                hogs.append(await psycopg.AsyncConnection.connect(self.dsn, autocommit=True))
            except psycopg.OperationalError:
                break
            if len(hogs) > 500:
                break
        fault = Fault("exhaust", at, db_at, f"{len(hogs)} extra connections")
        self.faults.append(fault)
        await asyncio.sleep(self.profile.exhaust_seconds)
        for hog in hogs:
            await hog.close()
        fault.until = self.now()

    async def _idle_transaction(self) -> None:
        at, db_at = self.now(), await self._db_now()
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn)
            await conn.execute("SELECT txid_current()")
        except psycopg.OperationalError as error:
            self.faults.append(Fault("idle_transaction", at, db_at, f"could not open: {error}"))
            return
        held = f"held for {self.profile.idle_transaction_seconds:g} s"
        self.faults.append(Fault("idle_transaction", at, db_at, held))
        await asyncio.sleep(self.profile.idle_transaction_seconds)
        with contextlib.suppress(psycopg.Error):
            await conn.close()

    # -- observation -------------------------------------------------------------------------

    async def _query_one(self, query: str, params: list[Any] | None = None) -> Any:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, application_name="chaos-harness"
                ) as conn:
                    row = await (await conn.execute(query, params)).fetchone()  # type: ignore[arg-type]
                    return row[0] if row else None
            except psycopg.OperationalError:
                await asyncio.sleep(0.2)

    async def _in_flight_by_pid(self) -> dict[int, int]:
        query = sql.SQL(
            "SELECT s.pid, count(*) FROM {0} AS s WHERE s.event = 'start' "
            "AND s.at > clock_timestamp() - interval '1 minute' AND NOT EXISTS ("
            "SELECT 1 FROM {0} AS e WHERE e.job_id = s.job_id AND e.pid = s.pid "
            "AND e.attempt = s.attempt AND e.event <> 'start') GROUP BY s.pid"
        ).format(sql.Identifier(SCHEMA, "ledger"))
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                rows = await (await conn.execute(query)).fetchall()
        except psycopg.OperationalError:
            return {}
        return {pid: count for pid, count in rows}

    async def _db_now(self) -> datetime:
        return await self._query_one("SELECT clock_timestamp()")  # type: ignore[no-any-return]

    async def _backends(self) -> int:
        return int(
            await self._query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'shigoto%'"
            )
        )

    async def _sample(self) -> None:
        table = sql.Identifier(SCHEMA, "ledger")
        query = sql.SQL("SELECT count(*) FROM {} WHERE event = 'ok'").format(table)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    while True:
                        row = await (await conn.execute(query)).fetchone()
                        self.samples.append((self.now(), int(row[0]) if row else 0))
                        for node in self.nodes:
                            if node.process.poll() is None:
                                node.rss_mb.append((self.now(), _rss_mb(node.process.pid)))
                        await asyncio.sleep(0.5)
            except psycopg.OperationalError:
                await asyncio.sleep(0.25)

    async def _settle(self, timeout: float) -> bool:
        """Wait until no job is left unfinished."""
        query = sql.SQL(
            "SELECT count(*) FROM {} WHERE state NOT IN ('completed', 'discarded', 'cancelled')"
        ).format(sql.Identifier(SCHEMA, "jobs"))
        deadline = self.now() + timeout
        while self.now() < deadline:
            if await self._query_one(query.as_string(None)) == 0:
                return True
            await asyncio.sleep(0.5)
        return False

    async def _stop_nodes(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                await asyncio.to_thread(node.process.wait, 30)
            except subprocess.TimeoutExpired:
                node.process.kill()
        await asyncio.sleep(0.5)  # let the server notice the closed connections

    # -- verdict -----------------------------------------------------------------------------

    async def _check(
        self,
        reports: list[dict[str, Any]],
        client_reports: list[dict[str, Any]],
        settled: bool,
        leaked: int,
    ) -> dict[str, Any]:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        jobs = {
            row[0]: row[1:]
            for row in await (
                await conn.execute(
                    sql.SQL(
                        "SELECT id, state::text, attempt, errors, (meta->>'producer')::int, "
                        "(meta->>'seq')::int, worker FROM {}"
                    ).format(sql.Identifier(SCHEMA, "jobs"))
                )
            ).fetchall()
        }
        ledger = await (
            await conn.execute(
                sql.SQL("SELECT job_id, pid, attempt, event, at FROM {} ORDER BY at").format(
                    sql.Identifier(SCHEMA, "ledger")
                )
            )
        ).fetchall()
        await conn.close()

        present = {(p, s) for (_, _, _, p, s, _) in jobs.values()}
        confirmed = [(0, n) for n in range(self.backlog)]
        uncertain = 0
        for report in [*reports, *client_reports]:
            confirmed += [(report["producer"], n) for n in report.get("confirmed", [])]
            uncertain += len(report.get("uncertain", []))
        lost = [key for key in confirmed if key not in present]
        unfinished = [
            i
            for i, (state, *_) in jobs.items()
            if state not in ("completed", "discarded", "cancelled")
        ]

        killed = {n.process.pid: n.killed_at for n in self.nodes if n.killed_at is not None}
        runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
        open_runs: dict[tuple[int, int, int], dict[str, Any]] = {}
        for job_id, pid, attempt, event, at in ledger:
            key = (job_id, pid, attempt)
            if event == "start":
                run = {"pid": pid, "attempt": attempt, "start": at, "end": None, "event": None}
                open_runs[key] = run
                runs[job_id].append(run)
            elif key in open_runs:
                open_runs[key]["end"], open_runs[key]["event"] = at, event
        overlaps, unexplained_duplicates, dangling = [], [], []
        for job_id, job_runs in runs.items():
            state, attempt, errors, *_ = jobs.get(job_id, ("missing", 0, [], 0, 0, ""))
            failed_at = {e.get("attempt"): datetime.fromisoformat(e["at"]) for e in errors}
            for run in job_runs:
                if run["end"] is None:
                    # No ledger entry for the end: the job's own history says when that
                    # attempt failed (its ledger write may have failed too), or the node died.
                    run["end"] = failed_at.get(run["attempt"]) or killed.get(run["pid"])
                    if run["end"] is None:
                        dangling.append(job_id)
            ordered = sorted(job_runs, key=lambda r: r["start"])
            for before, after in itertools.pairwise(ordered):
                if before["end"] is not None and after["start"] < before["end"]:
                    overlaps.append(job_id)
            lost_nodes = sum(1 for e in errors if e.get("error") in ("NodeLost", "NodeFenced"))
            # A run whose attempt is recorded as failed (a timeout that fired just after
            # the work's last statement, say) was not a success, whatever the ledger says.
            failed = {
                e.get("attempt") for e in errors if e.get("error") not in ("NodeLost", "NodeFenced")
            }
            oks = sum(1 for r in job_runs if r["event"] == "ok" and r["attempt"] not in failed)
            allowed = 1 + lost_nodes if state == "completed" else lost_nodes
            if oks > allowed:
                unexplained_duplicates.append(job_id)
        attempt_mismatch = [
            i
            for i, (state, attempt, errors, *_) in jobs.items()
            if (state == "completed" and attempt != len(errors) + 1)
            or (state in ("discarded", "cancelled") and attempt != len(errors))
        ]
        for fault in self.faults:
            fault.throughput_recovered_after_s = self._recovery(fault.at)
            self._assess(fault, runs, jobs)
        rss = self._rss_report()
        classes, unexpected = _endings(jobs, runs)
        client = self._client_report(client_reports)
        breaches = {
            "lost": len(lost),
            "unfinished": len(unfinished),
            "overlapping_runs": len(overlaps),
            "unexplained_duplicates": len(unexplained_duplicates),
            "attempt_mismatch": len(attempt_mismatch),
            "runs_without_end_on_live_nodes": len(dangling),
            "leaked_connections": max(0, leaked),
            "rss_growth_over_bound": rss["nodes_over_bound"],
            "unexpected_endings": len(unexpected),
            "client_errors": client["errors_outside_faults"],
            "failed_producers": self.failed_producers,
        }
        return {
            "profile": self.profile.name,
            "seed": self.seed,
            "settled": settled,
            "jobs": len(jobs),
            "inserted_confirmed": len(confirmed),
            "inserted_uncertain": uncertain,
            "completed": sum(1 for s, *_ in jobs.values() if s == "completed"),
            "discarded": sum(1 for s, *_ in jobs.values() if s == "discarded"),
            "runs": sum(len(r) for r in runs.values()),
            "rescued_runs": sum(
                sum(1 for e in errs if e.get("error") == "NodeLost")
                for _, _, errs, *_ in jobs.values()
            ),
            "fenced_runs": sum(
                sum(1 for e in errs if e.get("error") == "NodeFenced")
                for _, _, errs, *_ in jobs.values()
            ),
            "kills": sum(1 for f in self.faults if f.kind == "kill"),
            "purges": sum(1 for f in self.faults if f.kind == "purge"),
            "terminations": sum(1 for f in self.faults if f.kind == "terminate"),
            "restarts": sum(1 for f in self.faults if f.kind == "restart"),
            "duplicates": len(unexplained_duplicates),
            "faults": [{k: v for k, v in f.__dict__.items() if k != "db_at"} for f in self.faults],
            "rss": rss,
            "classes": classes,
            "client": client,
            "breaches": breaches,
            "examples": {
                "lost": lost[:5],
                "unfinished": unfinished[:5],
                "overlaps": overlaps[:5],
                "duplicates": unexplained_duplicates[:5],
                "attempt_mismatch": attempt_mismatch[:5],
                "dangling": dangling[:5],
                "unexpected_endings": unexpected[:5],
            },
            "ok": settled and not any(breaches.values()),
        }

    def _client_report(self, client_reports: list[dict[str, Any]]) -> dict[str, Any]:
        """The client's failed calls: those in flight during a fault that refuses or cuts
        connections are expected; any other one (after the server was back, after a
        purge) is a breach."""
        windows = [
            (f.at, f.until if f.until is not None else f.at)
            for f in self.faults
            if f.kind in CLIENT_FAULTS
        ]
        expected: list[dict[str, Any]] = []
        unexpected: list[dict[str, Any]] = []
        for report in client_reports:
            for error in report["errors"]:
                started, ended = error["started"] - self.began, error["ended"] - self.began
                call = {**error, "started": round(started, 2), "ended": round(ended, 2)}
                during = any(started <= until and ended >= at for at, until in windows)
                (expected if during else unexpected).append(call)
        return {
            "inserts_confirmed": sum(len(r["confirmed"]) for r in client_reports),
            "errors_during_faults": len(expected),
            "errors_outside_faults": len(unexpected),
            "examples": {"during_faults": expected[:3], "outside_faults": unexpected[:5]},
        }

    def _recovery(self, at: float) -> float | None:
        """Seconds after `at` until completions run at half the rate of the 5 s before."""
        before = [(t, c) for t, c in self.samples if at - 5 <= t <= at]
        after = [(t, c) for t, c in self.samples if t > at]
        if len(before) < 2 or len(after) < 3:
            return None
        baseline = (before[-1][1] - before[0][1]) / max(before[-1][0] - before[0][0], 1e-6)
        if baseline <= 0:
            return 0.0
        for (t0, c0), (t1, c1) in zip(after, after[2:], strict=False):
            if (c1 - c0) / max(t1 - t0, 1e-6) >= baseline / 2:
                return round(t0 - at, 2)
        return None

    def _assess(
        self, fault: Fault, runs: dict[int, list[dict[str, Any]]], jobs: dict[int, Any]
    ) -> None:
        """Which jobs the fault caught running, whether they finished, how soon work went on."""
        moment = fault.db_at
        if moment is None:
            return
        caught = {
            job_id
            for job_id, job_runs in runs.items()
            for r in job_runs
            if r["start"] <= moment
            and (r["end"] is None or r["end"] >= moment)
            and (fault.pid is None or r["pid"] == fault.pid)
        }
        final = ("completed", "discarded", "cancelled")
        fault.affected_jobs = len(caught)
        fault.lost_jobs = sum(1 for j in caught if jobs.get(j, ("missing",))[0] not in final)
        later_oks = [
            r["end"]
            for job_runs in runs.values()
            for r in job_runs
            if r["event"] == "ok" and r["start"] > moment
        ]
        if later_oks:
            fault.work_resumed_after_s = round((min(later_oks) - moment).total_seconds(), 2)
        if fault.pid is not None and caught:
            finishes = [
                max(
                    (r["end"] for r in runs[j] if r["event"] == "ok" and r["start"] > moment),
                    default=None,
                )
                for j in caught
            ]
            if all(f is not None for f in finishes):
                latest = max(f for f in finishes if f is not None)
                fault.rescued_after_s = round((latest - moment).total_seconds(), 2)

    def _rss_report(self) -> dict[str, Any]:
        over = 0
        peaks = []
        growth = []
        for node in self.nodes:
            samples = [mb for _, mb in node.rss_mb if mb > 0]
            if not samples:
                continue
            peaks.append(max(samples))
            warm = samples[len(samples) // 5 :]
            if len(warm) >= 4:
                grew = warm[-1] - warm[0]
                growth.append(grew)
                if grew > RSS_GROWTH_BOUND_MB:
                    over += 1
        return {
            "peak_mb": round(max(peaks), 1) if peaks else None,
            "max_growth_mb": round(max(growth), 1) if growth else None,
            "bound_mb": RSS_GROWTH_BOUND_MB,
            "nodes_over_bound": over,
        }


def _endings(
    jobs: dict[int, Any], runs: dict[int, list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[int]]:
    """Per kind of job: how it is expected to end and how its jobs did end; and the jobs
    that ended otherwise. A poison job must be discarded, each run that returned its
    result failing because the result could not be stored (or because its node was
    lost); a run a fault cut short before it returned may fail otherwise."""
    classes: dict[str, Any] = {}
    unexpected: list[int] = []
    final = ("completed", "discarded", "cancelled")
    for job_id, (state, _, errors, _, _, worker) in sorted(jobs.items()):
        allowed = EXPECTED.get(worker, final)
        entry = classes.setdefault(worker, {"expected": list(allowed), "jobs": 0, "ended": {}})
        entry["jobs"] += 1
        entry["ended"][state] = entry["ended"].get(state, 0) + 1
        wrong = state in final and state not in allowed
        if worker == "chaos.poison" and state in final:
            returned = {r["attempt"] for r in runs.get(job_id, []) if r["event"] == "returned"}
            wrong = wrong or not all(
                e.get("error") in ("NodeLost", "NodeFenced")
                or "could not be stored" in (e.get("message") or "")
                for e in errors
                if e.get("attempt") in returned
            )
        if wrong:
            unexpected.append(job_id)
    return classes, unexpected


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


async def run(
    minutes: float | None = None, seed: int | None = None, home: Path | None = None
) -> dict[str, Any]:
    profile = Profile.long(minutes) if minutes else Profile.short()
    seed = seed if seed is not None else random.randrange(1_000_000)
    directory = home or Path(tempfile.mkdtemp(prefix="shigoto-chaos-"))
    harness = Harness(profile, directory, seed)
    try:
        return await harness.run()
    finally:
        for node in harness.nodes:
            if node.process.poll() is None:
                node.process.kill()
        await asyncio.to_thread(stop_embedded, directory)
