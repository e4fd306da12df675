"""Events: every state change of a job, a queue or a node, as one `Event` on one bus.

    @app.on("job.completed")                 # also "job.*" and "*"; sync or async
    def seen(event: Event) -> None:
        print(event.name, event.job_id, event.data["duration"])

    async for event in app.events("job.*"):  # a live stream, bounded
        ...

Hooks, telemetry (Prometheus, OpenTelemetry, logging) and tests are all subscribers of
the same bus. Publishing costs next to nothing while nobody subscribes: the runtime asks
`bus.wants(name)` (one dictionary look-up) before it builds an event.

Handlers never change what happens to a job: one that raises is logged. A sync handler
runs at once, where the event happens (keep it quick: it runs on the node's event loop);
an async one runs in a task of its own, fed by a bounded buffer, so a slow handler loses
its oldest events (counted in `dropped`) rather than slowing the node.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from shigoto.outcomes import ConfigurationError

if TYPE_CHECKING:
    from shigoto.job import Job

logger = logging.getLogger("shigoto.events")

# Every event the library publishes. Custom events (`app.emit`) are named "custom.<name>".
JOB_EVENTS = (
    "job.inserted",
    "job.claimed",
    "job.started",
    "job.completed",
    "job.failed",
    "job.snoozed",
    "job.discarded",
    "job.cancelled",
    "job.progress",
    "job.rescued",
)
OTHER_EVENTS = (
    "queue.poll",
    "queue.paused",
    "queue.resumed",
    "batch.completed",
    "cron.scheduled",
    "node.started",
    "node.stopped",
    "component.crashed",
)
EVENT_NAMES = frozenset(JOB_EVENTS + OTHER_EVENTS)
CUSTOM_PREFIX = "custom."

# A pattern: a name, a prefix ending in ".*", or "*" for everything.
_PATTERN = re.compile(r"\*|[a-z][a-z0-9_]*(\.[a-z0-9_-]+)*(\.\*)?")
DEFAULT_BUFFER = 1000  # events an async handler or a stream may fall behind by
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: `name` ("job.completed"), when (`at`), to what.

    `data` holds the measurements and details (JSON values): `duration` and `queue_wait`
    in seconds for a run's outcome, `error` for a failure, `will_retry`, and so on. `job`
    is the job as this process knew it when the event happened (None where it has no copy:
    a job cancelled by id, an event from another node); it is never part of `to_dict()`,
    since it holds the job's args.
    """

    name: str
    timestamp: float  # seconds since the epoch (time.time())
    job_id: int | None = None
    worker: str | None = None
    queue: str | None = None
    attempt: int | None = None
    priority: int | None = None
    node: str | None = None
    data: Mapping[str, Any] = _EMPTY
    job: Job | None = field(default=None, repr=False, compare=False)
    error: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON values (no args, no result): for logs, streams and pages."""
        return {
            "name": self.name,
            "at": self.at.isoformat(),
            "job_id": self.job_id,
            "worker": self.worker,
            "queue": self.queue,
            "attempt": self.attempt,
            "priority": self.priority,
            "node": self.node,
            "data": dict(self.data),
        }


def job_event(
    name: str, job: Job, *, node: str | None = None, error: BaseException | None = None, **data: Any
) -> Event:
    """An event about `job`, with its id, worker, queue, attempt and priority."""
    return Event(
        name,
        time.time(),
        job.id,
        job.worker,
        job.queue,
        job.attempt,
        job.priority,
        node,
        MappingProxyType(data) if data else _EMPTY,
        job,
        error,
    )


def check_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
        raise ConfigurationError(
            f"event pattern: expected a name such as 'job.completed', a prefix such as "
            f"'job.*', or '*'; got {pattern!r}"
        )
    return pattern


def matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return name == pattern


Handler = Callable[[Event], object]


def _is_async(handler: object) -> bool:
    """An async function, or an object whose `__call__` is one."""
    call = vars(type(handler)).get("__call__")
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class _AsyncHandler:
    """An async handler, fed in order from a bounded buffer by a task of its own."""

    def __init__(self, handler: Callable[[Event], Awaitable[object]], size: int) -> None:
        self.handler = handler
        self.buffer: deque[Event] = deque(maxlen=size)
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def put(self, event: Event) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(event)
        self.idle.clear()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._feed(), name="shigoto-event-handler"
            )

    async def _feed(self) -> None:
        while self.buffer:
            event = self.buffer.popleft()
            try:
                await self.handler(event)
            except Exception:
                logger.exception("event handler %r failed on %s", self.handler, event.name)
        self.idle.set()


class EventStream:
    """`app.events(pattern)`: the matching events from now on, as an async iterator.

        async with app.events("job.*") as stream:
            async for event in stream:
                ...

    It keeps at most `size` events it has not handed out: a consumer that falls behind
    loses the oldest ones, counted in `dropped`, and never slows the node. Leaving the
    `async with` block (or `close()`) ends the subscription.
    """

    def __init__(self, bus: EventBus, pattern: str, size: int) -> None:
        self.pattern = pattern
        self.dropped = 0
        self._bus = bus
        self._buffer: deque[Event] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self._closed = False

    def _put(self, event: Event) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(event)
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the subscription; events already buffered are still handed out."""
        if not self._closed:
            self._closed = True
            self._bus._streams.discard(self)
            self._bus._changed()
            self._ready.set()


class EventBus:
    """One process's events: who subscribes to what, and handing each event to them."""

    def __init__(self) -> None:
        self._handlers: list[tuple[str, Handler | _AsyncHandler]] = []
        # Streams are held weakly: one its consumer dropped without closing goes away.
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._wanted: dict[str, bool] = {}  # name -> has a subscriber (a cache)
        self.active = False  # anything subscribed at all

    def _changed(self) -> None:
        self._wanted.clear()
        self.active = bool(self._handlers) or bool(self._streams)

    def subscribe(self, pattern: str, handler: Handler, *, buffer: int = DEFAULT_BUFFER) -> Handler:
        """Call `handler(event)` for every event matching `pattern`; returns the handler."""
        check_pattern(pattern)
        if not callable(handler):
            raise ConfigurationError(f"on({pattern!r}): expected a function, got {handler!r}")
        entry: Handler | _AsyncHandler = handler
        if _is_async(handler):
            entry = _AsyncHandler(handler, buffer)  # type: ignore[arg-type]
        self._handlers.append((pattern, entry))
        self._changed()
        return handler

    def unsubscribe(self, handler: Handler) -> None:
        self._handlers = [
            (p, h)
            for p, h in self._handlers
            if h is not handler and not (isinstance(h, _AsyncHandler) and h.handler is handler)
        ]
        self._changed()

    def stream(self, pattern: str = "*", *, size: int = DEFAULT_BUFFER) -> EventStream:
        check_pattern(pattern)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"events: size must be a positive integer, got {size!r}")
        stream = EventStream(self, pattern, size)
        self._streams.add(stream)
        self._changed()
        return stream

    def wants(self, name: str) -> bool:
        """Whether anything subscribes to `name` (ask before building an event)."""
        if not self.active:
            return False
        wanted = self._wanted.get(name)
        if wanted is None:
            wanted = self._wanted[name] = any(matches(p, name) for p, _ in self._handlers) or any(
                matches(s.pattern, name) for s in self._streams
            )
        return wanted

    def publish(self, event: Event) -> None:
        """Hand `event` to its subscribers (call on the event loop's thread)."""
        for pattern, handler in self._handlers:
            if matches(pattern, event.name):
                if isinstance(handler, _AsyncHandler):
                    handler.put(event)
                    continue
                try:
                    handler(event)
                except Exception:
                    logger.exception("event handler %r failed on %s", handler, event.name)
        for stream in list(self._streams):
            if matches(stream.pattern, event.name):
                stream._put(event)

    def emit(self, name: str, **fields: Any) -> None:
        """Publish an event built from `fields` if anything wants it (not about a job)."""
        if self.wants(name):
            data = fields.pop("data", None)
            self.publish(
                Event(name, time.time(), data=MappingProxyType(data) if data else _EMPTY, **fields)
            )

    @property
    def dropped(self) -> int:
        """Events the async handlers lost because they fell behind."""
        return sum(h.dropped for _, h in self._handlers if isinstance(h, _AsyncHandler))

    async def settle(self) -> None:
        """Wait until the async handlers have handled every event published so far."""
        for _, handler in list(self._handlers):
            if isinstance(handler, _AsyncHandler):
                await handler.idle.wait()


__all__ = ["EVENT_NAMES", "Event", "EventBus", "EventStream", "job_event"]
