"""Log records about jobs carry the job: `job_id`, `worker`, `queue` and `attempt`.

    import logging
    from shigoto.logs import JobFields, JsonFormatter

    handler = logging.StreamHandler()
    handler.addFilter(JobFields())        # the running job's fields on every record
    handler.setFormatter(JsonFormatter())  # one JSON object per line
    logging.getLogger().addHandler(handler)

    @app.worker
    def resize(path: str) -> None:
        logging.getLogger("images").info("resizing")   # ... "job_id": 42, "worker": ...

`JobFields` reads the job being run where the record is made (a job's own code, async or
in its thread, and shigoto's records made inside a run); shigoto's records about a job
made elsewhere (a timeout noticed by the node, a rescue) pass the same fields as `extra`.
`shigoto worker` installs the filter on its handlers, and `--log-format json` the
formatter. A job's args and result are never part of a record's fields.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shigoto.runtime import context

if TYPE_CHECKING:
    from shigoto.job import Job

FIELDS = ("job_id", "worker", "queue", "attempt")


def job_fields(job: Job) -> dict[str, Any]:
    """The fields of a record about `job`, for `extra=`:

    logger.warning("job %s timed out", job.id, extra=job_fields(job))
    """
    return {"job_id": job.id, "worker": job.worker, "queue": job.queue, "attempt": job.attempt}


class JobFields(logging.Filter):
    """Puts the running job's `job_id`, `worker`, `queue` and `attempt` on each record made
    while it runs (a record that has them already, from `extra`, keeps its own). Install it
    on a handler: a filter on a logger does not see its children's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            run = context.running()
            if run is not None:
                job = run.job
                record.job_id = job.id
                record.worker = job.worker
                record.queue = job.queue
                record.attempt = job.attempt
        return True


class TextFormatter(logging.Formatter):
    """`shigoto worker`'s text lines: time, level, logger and message, then the job's fields
    when the record has them: `... resizing [job 42 resize, queue default, attempt 1]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            return line
        worker = getattr(record, "worker", None)
        queue = getattr(record, "queue", None)
        attempt = getattr(record, "attempt", None)
        return f"{line} [job {job_id} {worker}, queue {queue}, attempt {attempt}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (ISO 8601, UTC), `level`, `logger`, `message`, the
    job's fields when the record has them, and `exception` (the traceback, as text) when it
    carries one. Other `extra` values are left out: they might hold a job's args.

    {"time": "2025-01-02T03:04:05.678+00:00", "level": "INFO", "logger": "images",
     "message": "resizing", "job_id": 42, "worker": "resize", "queue": "default",
     "attempt": 1}
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def install(log_format: str = "text", level: str | int | None = None) -> None:
    """Set up logging as `shigoto worker` does: a stderr handler on the root logger unless
    one is there, every root handler with `JobFields` (and `JsonFormatter` for "json"),
    and `level` for shigoto's loggers.

    shigoto.logs.install("json", level="INFO")
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log format: expected 'text' or 'json', got {log_format!r}")
    root = logging.getLogger()
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
        root.handlers[0].setFormatter(formatter)
    elif log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(formatter)
    for handler in root.handlers:
        if not any(isinstance(f, JobFields) for f in handler.filters):
            handler.addFilter(JobFields())
    if level is not None:
        logging.getLogger("shigoto").setLevel(level.upper() if isinstance(level, str) else level)


__all__ = ["JobFields", "JsonFormatter", "TextFormatter", "install", "job_fields"]
