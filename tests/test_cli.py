"""The `shigoto` command, driven as a user would: arguments in, text and exit status out."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from shigoto import JobSpec, JobState, Shigoto
from shigoto.cli import cli
from tests.conftest import SHIPPED, wait_until

runner = CliRunner()


@pytest.fixture
def run(dsn: str, schema: str):
    def run(*args: str, env: dict[str, str] | None = None):
        env = {"SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema, **(env or {})}
        return runner.invoke(cli, list(args), env=env)

    return run


def test_help_lists_the_commands(run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("migrate", "status", "jobs", "enqueue"):
        assert command in result.output


def test_migrate_then_up_to_date(run, schema: str) -> None:
    first = run("migrate")
    assert first.exit_code == 0
    assert f"applied {len(SHIPPED)} migration(s): {', '.join(SHIPPED)}" in " ".join(
        first.output.split()
    )
    second = run("migrate")
    assert second.exit_code == 0 and f"schema '{schema}' is up to date" in second.output


def test_migrate_dry_run_prints_sql(run, schema: str) -> None:
    result = run("migrate", "--dry-run")
    assert result.exit_code == 0
    assert f"CREATE TABLE {schema}.jobs" in result.output
    assert run("migrate").output.startswith(
        f"applied {len(SHIPPED)}"
    )  # the dry run applied nothing


async def test_enqueue_list_show_cancel_retry(run, app: Shigoto) -> None:
    inserted = run(
        "enqueue",
        "mail.send",
        "--args",
        '{"to": "a@b.c"}',
        "--queue",
        "mail",
        "--priority",
        "5",
        "--tag",
        "x",
    )
    assert inserted.exit_code == 0, inserted.output
    job_id = int(inserted.output.split()[2])
    job = await app.get_job(job_id)
    assert job is not None
    assert (job.worker, job.args, job.queue, job.priority, job.tags) == (
        "mail.send",
        {"to": "a@b.c"},
        "mail",
        5,
        ["x"],
    )

    listed = run("jobs", "list", "--queue", "mail", "--json")
    assert [json.loads(line)["id"] for line in listed.output.splitlines()] == [job_id]
    assert run("jobs", "list", "--queue", "other", "--json").output == ""
    assert "mail.send" in run("jobs", "list").output

    shown = run("jobs", "show", str(job_id))
    assert json.loads(shown.output)["args"] == {"to": "a@b.c"}

    assert run("jobs", "cancel", str(job_id)).exit_code == 0
    assert (await app.get_job(job_id)).state is JobState.CANCELLED  # type: ignore[union-attr]
    again = run("jobs", "cancel", str(job_id))
    assert again.exit_code == 1 and "not cancelled" in again.output
    assert run("jobs", "retry", str(job_id)).exit_code == 0
    assert (await app.get_job(job_id)).state is JobState.AVAILABLE  # type: ignore[union-attr]

    status = run("status")
    assert status.exit_code == 0 and "mail" in status.output and "available" in status.output


async def test_bad_input_is_one_clear_line_and_writes_nothing(
    run, app: Shigoto, count_jobs
) -> None:
    bad_json = run("enqueue", "w", "--args", "{nope")
    assert bad_json.exit_code == 1 and "args: not valid JSON" in bad_json.output
    not_object = run("enqueue", "w", "--args", "[1, 2]")
    assert not_object.exit_code == 1 and "args: must be a JSON object" in not_object.output
    nul = run("enqueue", "w", "--args", '{"a": "\\u0000"}')
    assert nul.exit_code == 1 and 'args["a"]: contains a NUL character' in nul.output
    missing = run("jobs", "show", "999999")
    assert missing.exit_code == 1 and "no job with id 999999" in missing.output
    assert "Traceback" not in bad_json.output + not_object.output + nul.output
    assert await count_jobs() == 0


async def test_enqueue_with_app_checks_the_name_and_uses_worker_defaults(
    run, app: Shigoto, tmp_path: Path, monkeypatch, dsn: str, schema: str, count_jobs
) -> None:
    (tmp_path / "cli_app_module.py").write_text(
        textwrap.dedent(f"""
        from shigoto import Shigoto
        app = Shigoto(dsn={dsn!r}, schema={schema!r})

        @app.worker(name="reports.build", queue="reports", max_attempts=7)
        def build(month: str) -> None: ...
    """)
    )
    monkeypatch.chdir(tmp_path)
    env = {"SHIGOTO_DSN": "", "SHIGOTO_SCHEMA": ""}
    ok = run(
        "enqueue",
        "reports.build",
        "--args",
        '{"month": "2026-11"}',
        "--app",
        "cli_app_module:app",
        env=env,
    )
    assert ok.exit_code == 0, ok.output
    job = (await app.list_jobs()).jobs[0]
    assert (job.worker, job.queue, job.max_attempts) == ("reports.build", "reports", 7)

    unknown = run("enqueue", "reports.typo", "--app", "cli_app_module:app", env=env)
    assert unknown.exit_code == 1
    assert "no worker is registered under the name 'reports.typo'" in unknown.output
    wrong = run("status", "--app", "cli_app_module:nothing", env=env)
    assert wrong.exit_code == 1 and "is not a shigoto.Shigoto instance" in wrong.output
    assert await count_jobs() == 1


def test_demo_runs_to_its_summary_with_no_database_configured(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from shigoto.db.embedded import stop_embedded

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIGOTO_")}
    env["COLUMNS"] = "100"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "shigoto.cli", "demo", "--jobs", "300"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_embedded(tmp_path / ".shigoto")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inserted 300 jobs into 5 queues" in done.stdout
    summary = done.stdout[done.stdout.index("done in") :]
    assert "298 completed, 2 discarded" in " ".join(summary.split())
    assert "Traceback" not in done.stderr


async def test_queue_pause_and_resume_from_the_command_line(run, app: Shigoto) -> None:
    paused = run("queue", "pause", "emails")
    assert paused.exit_code == 0 and "queue 'emails' paused" in paused.output
    assert await app.is_queue_paused("emails")
    resumed = run("queue", "resume", "emails")
    assert resumed.exit_code == 0 and "queue 'emails' resumed" in resumed.output
    assert not await app.is_queue_paused("emails")


# -- the real command, in a process of its own -------------------------------------------

SHIGOTO = [str(Path(sys.executable).with_name("shigoto"))]  # the installed console script
PYTHON_M = [sys.executable, "-m", "shigoto"]


@pytest.fixture
def command_env(dsn: str, schema: str) -> dict[str, str]:
    """The environment of a `shigoto` process working on this test's schema."""
    return {
        **os.environ,
        "SHIGOTO_DSN": dsn,
        "SHIGOTO_SCHEMA": schema,
        "COLUMNS": "250",  # wide enough for a table never to wrap a name
    }


def shigoto(
    *args: str, env: dict[str, str], command: list[str] = SHIGOTO, **options: Any
) -> subprocess.CompletedProcess[str]:
    """Run the command to the end; its exit status, stdout and stderr."""
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=120, **options
    )


async def test_stored_names_queues_and_tags_are_printed_as_text_never_as_markup(
    app: Shigoto, command_env: dict[str, str]
) -> None:
    """Rich would read these as markup: `[/x]` crashed `jobs list` (and a committed
    `enqueue`, after its insert, exited 1), `[link=...]` made a link, `:smile:` an emoji."""
    queue, worker, tag = "[/x]", "[link=https://example.com]w[/link]", "[bold]t[/bold]:smile:"
    inserted = shigoto("enqueue", worker, "--queue", queue, "--tag", tag, env=command_env)
    assert inserted.returncode == 0, inserted.stderr
    assert f"({worker} on {queue}, available)" in inserted.stdout
    assert [job.queue for job in (await app.list_jobs()).jobs] == [queue]  # committed

    await app.schedule("[/s] nightly", "0 3 * * *", worker, queue=queue)
    for args in (["jobs", "list"], ["status"], ["cron", "list"], ["queue", "pause", queue]):
        shown = shigoto(*args, env=command_env)
        assert shown.returncode == 0, (args, shown.stderr)
        assert queue in shown.stdout, (args, shown.stdout)
        assert "Traceback" not in shown.stderr
    listed = shigoto("jobs", "list", env=command_env).stdout
    assert worker in listed and tag in listed
    assert "[/s] nightly" in shigoto("cron", "list", env=command_env).stdout


async def test_a_committed_enqueue_exits_zero_even_when_nobody_reads_its_output(
    app: Shigoto, command_env: dict[str, str]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails: a pipe whose reader is gone
    try:
        done = subprocess.run(
            [*SHIGOTO, "enqueue", "mail.send", "--args", '{"to": "a@b.c"}'],
            env=command_env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert [job.args for job in (await app.list_jobs()).jobs] == [{"to": "a@b.c"}]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_bad_input_or_a_database_that_is_down_is_one_line_and_exit_status_1(
    app: Shigoto, command_env: dict[str, str], count_jobs
) -> None:
    deep = '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}"
    huge = '{"n": 1' + "0" * 4_999 + "}"  # 5,000 digits: Python refuses to read it
    cases = {
        "deep": (["enqueue", "w", "--args", deep], "args: nested too deeply"),
        "huge": (["enqueue", "w", "--args", huge], "args: not valid JSON"),
        "job id": (["jobs", "show", str(2**63)], "job_id: must be between 1 and"),
        "down": (
            ["status", "--dsn", f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing"],
            "database",
        ),
    }
    for name, (args, message) in cases.items():
        done = shigoto(*args, env={**command_env, "COLUMNS": "40"})  # one line, even so
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (name, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, done.stderr)
        assert message in lines[0], (name, lines[0])
    assert await count_jobs() == 0


CWD_APP = """
import pathlib
from shigoto import Shigoto

app = Shigoto(poll_interval=0.2)

@app.worker(name="cwd.hello")
def hello() -> None:
    pathlib.Path("RAN").write_text("ok")
"""

# A module of the current directory named like a library `shigoto worker` imports.
FAKE_UVLOOP = """
import pathlib
pathlib.Path("FAKE_UVLOOP_RAN").write_text("imported from the current directory")
raise SystemExit(3)
"""


@pytest.mark.parametrize("command", [SHIGOTO, PYTHON_M], ids=["shigoto", "python -m shigoto"])
async def test_worker_imports_your_app_from_the_current_directory_but_no_library(
    app: Shigoto, command_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "cwd_app.py").write_text(CWD_APP)
    (tmp_path / "uvloop.py").write_text(FAKE_UVLOOP)
    job = await app.insert(JobSpec.build("cwd.hello"))
    node = subprocess.Popen(
        [*command, "worker", "cwd_app:app"],
        cwd=tmp_path,
        env=command_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def finished() -> bool:
            assert node.poll() is None, node.communicate()[0].decode()  # it must keep running
            stored = await app.get_job(job.id)
            return stored is not None and stored.state is JobState.COMPLETED

        await wait_until(finished, timeout=60)
        node.send_signal(signal.SIGTERM)
        output = node.communicate(timeout=60)[0].decode()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert node.returncode == 0, output
    assert (tmp_path / "RAN").read_text() == "ok"  # the app came from the current directory
    assert not (tmp_path / "FAKE_UVLOOP_RAN").exists()  # uvloop did not


async def test_python_m_shigoto_is_the_shigoto_command(
    app: Shigoto, command_env: dict[str, str]
) -> None:
    inserted = shigoto("enqueue", "mail.send", "--queue", "mail", env=command_env, command=PYTHON_M)
    assert inserted.returncode == 0, inserted.stderr
    helped = shigoto("--help", env=command_env, command=PYTHON_M)
    assert helped.returncode == 0 and "Usage: python -m shigoto" in helped.stdout
    for command in ("migrate", "status", "jobs", "enqueue", "worker", "cron", "queue"):
        assert command in helped.stdout
    for args in (["jobs", "list", "--json"], ["migrate"]):
        by_module = shigoto(*args, env=command_env, command=PYTHON_M)
        by_script = shigoto(*args, env=command_env)
        assert by_module.returncode == by_script.returncode == 0, by_module.stderr
        assert by_module.stdout == by_script.stdout, args
    [listed] = shigoto("jobs", "list", "--json", env=command_env, command=PYTHON_M).stdout.split(
        "\n"
    )[:-1]
    assert (json.loads(listed)["worker"], json.loads(listed)["queue"]) == ("mail.send", "mail")
    bad = shigoto("jobs", "list", "--limit", "0", env=command_env, command=PYTHON_M)
    assert bad.returncode == 1 and bad.stderr == "error: limit: must be between 1 and 1000, got 0\n"


def test_without_a_schema_the_commands_use_the_default_one(dsn: str) -> None:
    """With neither --schema nor SHIGOTO_SCHEMA every command failed: "schema: None is not
    a valid schema name"."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        own = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIGOTO_")}
        migrated = shigoto("migrate", "--dsn", own, env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith(f"applied {len(SHIPPED)} migration(s)")
        inserted = shigoto("enqueue", "mail.send", "--dsn", own, env=env)
        assert inserted.returncode == 0, inserted.stderr
        listed = shigoto("jobs", "list", "--json", "--dsn", own, env=env)
        assert [json.loads(line)["worker"] for line in listed.stdout.splitlines()] == ["mail.send"]
        with psycopg.connect(own) as conn:
            assert conn.execute("SELECT count(*) FROM shigoto.jobs").fetchone() == (1,)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
