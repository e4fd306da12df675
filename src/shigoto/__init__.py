"""shigoto: PostgreSQL-backed background jobs for Python.

from shigoto import Shigoto

app = Shigoto()                       # SHIGOTO_DSN, or an embedded PostgreSQL

@app.worker(queue="emails", max_attempts=5)
async def send_email(to: str, subject: str) -> None: ...

await app.migrate()
job = await send_email.enqueue({"to": "a@b.c", "subject": "Hi"})
"""

from shigoto._version import __version__
from shigoto.admin import BulkWhere, JobFilter, JobPage, ListWhere, QueueStatus, Status
from shigoto.app import Shigoto, SyncShigoto
from shigoto.config import Config
from shigoto.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateWorkerError,
    EmbeddedServerUnavailable,
    InvalidEventError,
    InvalidJobError,
    InvalidScheduleError,
    JobNotFoundError,
    MigrationError,
    PoolExhausted,
    ResultNotStored,
    ShigotoError,
    UnknownWorkerError,
)
from shigoto.events import Event, EventStream
from shigoto.features.batches import Batch
from shigoto.features.unique import Unique
from shigoto.job import FINAL_STATES, Job, JobSpec, JobState, Ref
from shigoto.outcomes import Cancel, Discard, RetryAfter, Snooze
from shigoto.runtime.context import current_job, dependency_results, report_progress
from shigoto.schedules import Cron, Daily, Every, Schedule, ScheduleInfo, Weekly
from shigoto.worker import FunctionWorker, Worker

__all__ = [
    "FINAL_STATES",
    "Batch",
    "BulkWhere",
    "Cancel",
    "Config",
    "ConfigurationError",
    "Cron",
    "Daily",
    "DatabaseUnavailable",
    "Discard",
    "DuplicateWorkerError",
    "EmbeddedServerUnavailable",
    "Event",
    "EventStream",
    "Every",
    "FunctionWorker",
    "InvalidEventError",
    "InvalidJobError",
    "InvalidScheduleError",
    "Job",
    "JobFilter",
    "JobNotFoundError",
    "JobPage",
    "JobSpec",
    "JobState",
    "ListWhere",
    "MigrationError",
    "PoolExhausted",
    "QueueStatus",
    "Ref",
    "ResultNotStored",
    "RetryAfter",
    "Schedule",
    "ScheduleInfo",
    "Shigoto",
    "ShigotoError",
    "Snooze",
    "Status",
    "SyncShigoto",
    "Unique",
    "UnknownWorkerError",
    "Weekly",
    "Worker",
    "__version__",
    "current_job",
    "dependency_results",
    "report_progress",
]
