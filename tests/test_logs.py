"""Log records about jobs carry the job's id, worker, queue and attempt; the JSON format
is one object per line, and never a job's args."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shigoto import JobSpec, Shigoto
from shigoto.logs import FIELDS, JobFields, JsonFormatter, TextFormatter, job_fields

SECRET = "hunter2-secret"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    """The records of logger "jobs.test", through a handler with `JobFields`."""
    handler = Capture()
    handler.addFilter(JobFields())
    logger = logging.getLogger("jobs.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name, None) for name in FIELDS}


async def test_records_a_job_makes_carry_the_job_async_and_in_its_thread(
    app: Shigoto, captured: Capture
) -> None:
    log = logging.getLogger("jobs.test")

    @app.worker(queue="mail")
    async def greet(name: str) -> None:
        log.info("greeting")

    @app.worker(queue="mail", max_attempts=2)
    def resize(path: str) -> None:  # a plain function: it runs in a thread
        log.info("resizing")
        job_attempt = len([r for r in captured.records if r.getMessage() == "resizing"])
        if job_attempt == 1:
            raise RuntimeError("try again")

    first = await greet.enqueue({"name": SECRET})
    second = await resize.enqueue({"path": SECRET})
    log.info("outside any job")
    await app.drain_queue("mail", with_scheduled=True)
    by_message: dict[str, list[dict[str, Any]]] = {}
    for record in captured.records:
        by_message.setdefault(record.getMessage(), []).append(fields(record))
    assert by_message["greeting"] == [
        {"job_id": first.id, "worker": greet.name, "queue": "mail", "attempt": 1}
    ]
    assert by_message["resizing"] == [
        {"job_id": second.id, "worker": resize.name, "queue": "mail", "attempt": attempt}
        for attempt in (1, 2)
    ]
    assert by_message["outside any job"] == [dict.fromkeys(FIELDS)]


async def test_fields_given_as_extra_are_kept(app: Shigoto, captured: Capture) -> None:
    job = await app.insert(JobSpec.build("elsewhere", queue="q"))
    logging.getLogger("jobs.test").warning("about a job", extra=job_fields(job))
    assert fields(captured.records[0]) == {
        "job_id": job.id,
        "worker": "elsewhere",
        "queue": "q",
        "attempt": 0,
    }


def job_fields_of(job_id: int) -> dict[str, Any]:
    return {"job_id": job_id, "worker": "w", "queue": "q", "attempt": 1}


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("jobs.test", logging.ERROR, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_the_json_format_is_one_object_per_line_with_the_jobs_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("jobs.json")
    logger.addHandler(handler)
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        logger.exception(
            "failed", extra={**job_fields_of(42), "job_args": {"password": SECRET}, "token": SECRET}
        )
    logger.info("plain")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {
        "time",
        "level",
        "logger",
        "message",
        "job_id",
        "worker",
        "queue",
        "attempt",
        "exception",
    }
    assert first["level"] == "ERROR" and first["logger"] == "jobs.json"
    assert first["message"] == "failed"
    assert (first["job_id"], first["worker"], first["queue"], first["attempt"]) == (42, "w", "q", 1)
    assert first["exception"].startswith("Traceback")
    assert "broken\non two lines" in first["exception"]
    assert first["time"].endswith("+00:00")
    assert SECRET not in stream.getvalue()
    assert set(second) == {"time", "level", "logger", "message"}


def test_the_text_format_appends_the_job() -> None:
    formatter = TextFormatter()
    line = formatter.format(_record("resizing", **job_fields_of(42)))
    assert line.endswith("ERROR jobs.test: resizing [job 42 w, queue q, attempt 1]")
    assert formatter.format(_record("idle")).endswith("ERROR jobs.test: idle")


JOB_APP = """
import logging

from shigoto import Shigoto

app = Shigoto()
logging.getLogger("logs.app").setLevel(logging.INFO)


@app.worker(name="logs.hello")
def hello(secret: str) -> None:
    logging.getLogger("logs.app").info("hello from the job")
    raise RuntimeError("it broke")
"""


async def test_shigoto_worker_log_format_json_is_one_object_per_line_with_the_job(
    app: Shigoto, tmp_path: Path
) -> None:
    (tmp_path / "logs_app.py").write_text(JOB_APP)
    job = await app.insert(JobSpec.build("logs.hello", {"secret": SECRET}, max_attempts=1))
    environment = {
        **os.environ,
        "SHIGOTO_DSN": app.config.dsn or "",
        "SHIGOTO_SCHEMA": app.config.schema,
        "SHIGOTO_POLL_INTERVAL": "0.2",
        # This checkout's sources, when the tests run with PYTHONPATH=src.
        "PYTHONPATH": os.pathsep.join(
            str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ),
    }
    node = subprocess.Popen(
        [sys.executable, "-m", "shigoto.cli", "worker", "logs_app:app", "--log-format", "json"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await app.wait_for(job.id, timeout=60)
        node.send_signal(signal.SIGTERM)
        output = node.communicate(timeout=60)[0].decode()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert node.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is one object
    assert {line["logger"] for line in lines} >= {"logs.app", "shigoto.node"}
    (hello,) = [line for line in lines if line["logger"] == "logs.app"]
    assert hello["message"] == "hello from the job"
    assert hello["level"] == "INFO"
    expected = {"job_id": job.id, "worker": "logs.hello", "queue": "default", "attempt": 1}
    assert {name: hello[name] for name in FIELDS} == expected
    started = [line for line in lines if line["message"].startswith("node ")]
    assert started and "job_id" not in started[0]
    assert SECRET not in output


async def test_shigotos_records_about_a_job_made_outside_its_run_carry_it(app: Shigoto) -> None:
    handler = Capture()
    handler.addFilter(JobFields())
    executor = logging.getLogger("shigoto.executor")
    executor.addHandler(handler)

    @app.worker(timeout=0.05, max_attempts=1)
    def slow() -> None:  # in a thread: its timeout is noticed by the node, not in the run
        time.sleep(0.3)

    try:
        job = await slow.enqueue()
        await app.drain_queue()
    finally:
        executor.removeHandler(handler)
    (record,) = [r for r in handler.records if "passed its timeout" in r.getMessage()]
    assert fields(record) == {
        "job_id": job.id,
        "worker": slow.name,
        "queue": "default",
        "attempt": 1,
    }
