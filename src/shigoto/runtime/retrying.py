"""What the runtime's loops share when the database is away: which errors to wait out,
and how long to wait before the next try."""

from __future__ import annotations

from shigoto.outcomes import DatabaseUnavailable

# Errors that mean "the database is unreachable right now", not "this request is wrong":
# the app's statements raise `DatabaseUnavailable` for those (see `shigoto.db.faults`), and
# only those are waited out and retried. An error about the data is never retried.
TRANSIENT = (DatabaseUnavailable,)


class Backoff:
    """Growing delays for consecutive failures; `reset()` after a success.

    backoff = Backoff()
    await asyncio.sleep(backoff.next())   # 0.05, 0.1, 0.25, 0.5, 1.0, 1.0 ...

    At most a second: a node must work again within about a second of the server's
    return, however long it was away. A try costs the database nothing while it is down:
    it waits for a pooled connection (up to `connect_timeout`), and the pool's attempts
    to connect are paced on their own.
    """

    def __init__(self, delays: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)):
        self._delays = delays
        self.failures = 0

    def next(self) -> float:
        delay = self._delays[min(self.failures, len(self._delays) - 1)]
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
