"""The `shigoto` command, driven as a user would: arguments in, text and exit status out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shigoto import JobState, Shigoto
from shigoto.cli import cli
from tests.conftest import SHIPPED

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
