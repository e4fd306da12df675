"""Run tests through PgBouncer in transaction pooling mode, then prove it kept no session state.

    python -m tests.pgbouncer tests/test_producer.py tests/test_admin.py -q   # pytest's arguments

Starts PgBouncer (Debian's `pgbouncer` package) on a free port in front of the tests'
database (the embedded PostgreSQL, or `SHIGOTO_TEST_DSN`), with trust auth and a config of
its own in a temporary directory, and runs pytest with `SHIGOTO_TEST_PGBOUNCER` set to its
DSN: `tests/conftest.py` then builds the tests' apps and nodes as a deployment behind
PgBouncer would be (`prepared_statements=False`, `listen_dsn` straight to the server),
while the tests' own inspection connections still go straight to the server.

Afterwards it opens as many transactions through PgBouncer at once as it keeps server
connections, so every one of them is looked at, and fails if any still has a listening
channel, a prepared statement, an advisory lock or a setting made with `SET`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import database_dsn

SERVER_CONNECTIONS = 20  # PgBouncer's default_pool_size: server connections per database
# Settings PgBouncer itself sets on a server connection to match each client's.
TRACKED = [
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
]
LEFTOVERS = """
SELECT pg_backend_pid(),
       ARRAY(SELECT pg_listening_channels()),
       ARRAY(SELECT name FROM pg_prepared_statements),
       ARRAY(SELECT objid::text FROM pg_locks
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
       ARRAY(SELECT name || '=' || setting FROM pg_settings
             WHERE source = 'session' AND lower(name) <> ALL(%s))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user(host: str) -> str:
    """The Unix user PgBouncer runs as when started by root (it refuses to run as root):
    the owner of the server's socket directory, who may connect through it, or postgres."""
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "postgres"


@contextmanager
def pgbouncer(direct: str) -> Iterator[str]:
    """PgBouncer in transaction pooling mode in front of `direct`; yields its DSN."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise SystemExit("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = conninfo_to_dict(direct)
    host, dbname = str(server.get("host") or "127.0.0.1"), str(server.get("dbname"))
    user = str(server.get("user") or "postgres")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="shigoto-pgbouncer-") as workdir:
        home = Path(workdir)
        (home / "users.txt").write_text(f'"{user}" ""\n')
        (home / "pgbouncer.ini").write_text(
            f"""[databases]
{dbname} = host={host} port={server.get("port") or 5432} dbname={dbname} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home / "users.txt"}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 1000
logfile = {home / "pgbouncer.log"}
"""
        )
        command = [binary, "-q", str(home / "pgbouncer.ini")]
        if os.geteuid() == 0:
            runner = pwd.getpwnam(_server_user(host))
            os.chown(home, runner.pw_uid, runner.pw_gid)
            command[1:1] = ["-u", runner.pw_name]
        process = subprocess.Popen(command)
        dsn = make_conninfo(host="127.0.0.1", port=port, dbname=dbname, user=user)
        try:
            _wait_until_ready(dsn, process, home / "pgbouncer.log")
            yield dsn
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_until_ready(dsn: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(dsn, prepare_threshold=None, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else ""
                raise SystemExit(f"pgbouncer did not start: {error}\n{text}") from None
            time.sleep(0.1)


def leftovers(dsn: str) -> tuple[int, list[str]]:
    """Look at every server connection PgBouncer keeps (one open transaction pins each);
    returns how many were seen and what session state was found on them."""
    found: list[str] = []
    pids: set[int] = set()
    connections = [psycopg.connect(dsn, prepare_threshold=None) for _ in range(SERVER_CONNECTIONS)]
    try:
        for conn in connections:
            row = conn.execute(LEFTOVERS, [TRACKED]).fetchone()
            assert row is not None
            pid, channels, statements, locks, settings = row
            pids.add(pid)
            for kind, items in [
                ("listening on", channels),
                ("prepared statements", statements),
                ("advisory locks", locks),
                ("session settings", settings),
            ]:
                if items:
                    found.append(f"server connection {pid}: {kind} {', '.join(items)}")
    finally:
        for conn in connections:
            conn.close()
    return len(pids), found


def plant(dsn: str) -> None:
    """Leave each kind of session state on a server connection, as a careless client would."""
    with psycopg.connect(dsn, prepare_threshold=None, autocommit=True) as conn:
        conn.execute(
            "BEGIN; LISTEN planted; SET work_mem = '7MB'; PREPARE planted AS SELECT 1; "
            "SELECT pg_advisory_lock(7); COMMIT"
        )


def main(arguments: list[str]) -> int:
    direct = database_dsn()
    # First prove that the check sees what a careless client leaves, on a PgBouncer of its
    # own (whose server connections go when it stops).
    with pgbouncer(direct) as probe:
        plant(probe)
        _, planted = leftovers(probe)
    kinds = ("listening on", "prepared statements", "advisory locks", "session settings")
    if not all(any(kind in line for line in planted) for kind in kinds):
        print(f"the check for leftovers does not see planted session state: {planted}")
        return 1
    with pgbouncer(direct) as dsn:
        print(f"== pytest through PgBouncer (transaction pooling) at {dsn}", flush=True)
        env = {**os.environ, "SHIGOTO_TEST_DSN": direct, "SHIGOTO_TEST_PGBOUNCER": dsn}
        code = subprocess.run([sys.executable, "-m", "pytest", *arguments], env=env).returncode
        seen, found = leftovers(dsn)
    print(f"== {seen} server connections behind PgBouncer looked at afterwards")
    for line in found:
        print(f"left behind: {line}")
    if found:
        return 1
    print("no listening channel, prepared statement, advisory lock or session setting left")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
