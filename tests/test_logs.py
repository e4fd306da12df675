"""Log records about jobs carry the job's id, worker, queue and attempt; the JSON format
is one object per line, and never a job's args."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
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
