"""Job outcomes a worker can return or raise (and shigoto's errors, from `shigoto.errors`).

A worker signals anything other than plain success or failure with an outcome:

    from shigoto import Snooze

    async def perform(self, job):
        if not await api_is_up():
            return Snooze(60)      # try again in a minute, no attempt consumed
"""

from __future__ import annotations

from datetime import timedelta

from shigoto import _validate, errors
from shigoto.errors import *  # noqa: F403 - shigoto's errors are named shigoto.outcomes.<Name>


class Outcome(Exception):
    """Base of the outcomes a worker may return or raise instead of a value."""


class Snooze(Outcome):
    """Run the job again after `seconds`, without consuming an attempt."""

    def __init__(self, seconds: float | timedelta) -> None:
        self.seconds = _validate.seconds(seconds, "snooze")
        super().__init__(f"snoozed for {self.seconds:g}s")


class RetryAfter(Outcome):
    """Fail this attempt and retry after exactly `seconds` (attempts permitting)."""

    def __init__(self, seconds: float | timedelta, reason: str = "") -> None:
        self.seconds = _validate.seconds(seconds, "retry_after")
        self.reason = reason
        super().__init__(reason or f"retry after {self.seconds:g}s")


class Cancel(Outcome):
    """Stop the job for good: it ends `cancelled`."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "cancelled")


class Discard(Outcome):
    """Give up on the job at once: it ends `discarded`, whatever attempts remain."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "discarded")


__all__ = ["Cancel", "Discard", "Outcome", "RetryAfter", "Snooze"]
__all__ += errors.__all__
