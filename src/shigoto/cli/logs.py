"""Logging set-up for the commands that run a node (`worker`, `demo`).

    configure_logging("INFO")           # plain lines on stderr, unless logging is set up
    configure_logging("INFO", "json")   # one JSON object per line

Records made about a job carry its `job_id`, `worker`, `queue` and `attempt` (see
`shigoto.logs`). An app that set up logging itself keeps its handlers (they get the job's
fields, and the JSON format if asked for); shigoto's level is set.
"""

from __future__ import annotations

from shigoto.logs import install


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log shigoto's records at `level`, as "text" or "json" lines; a handler on the root
    logger only if there is none (an app that set up logging keeps its own)."""
    install(log_format, level=level)
