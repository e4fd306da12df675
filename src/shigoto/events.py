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
import functools
import inspect
import json
import logging
import re
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from shigoto import _validate as check
from shigoto.db import faults
from shigoto.outcomes import ConfigurationError, InvalidEventError

if TYPE_CHECKING:
    from shigoto.features.batches import Batch
    from shigoto.job import Job

logger = logging.getLogger("shigoto.events")
logger.addFilter(faults.SCRUBBED)  # a handler may fail with a database error (quoting args)

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
# Past the first part, a custom event's name may hold capitals and ":".
_PATTERN = re.compile(r"\*|[a-z][a-z0-9_]*(\.[A-Za-z0-9_:-]+)*(\.\*)?")
DEFAULT_BUFFER = 1000  # events an async handler or a stream may fall behind by
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Event:
    """Something that happened: `name` ("job.completed"), when (`at`), to what.

    `data` holds the measurements and details (JSON values): `duration` and `queue_wait`
    in seconds for a run's outcome, `kind` (the error's class) and `will_retry` for a
    failure, and so on. `job` is the job as this process knew it when the event happened
    (None where it has no copy: a job cancelled by id, an event from another node), `error`
    the exception a failed run raised, `batch` the closed batch of a batch.completed; none
    of them is part of `to_dict()` (a job holds its args).

    Every subscriber gets the same event: treat it as read-only. (A plain class with slots,
    not a frozen dataclass: a busy node builds tens of thousands a second, and a frozen
    one costs three times as much to build.)
    """

    __slots__ = (
        "_job",
        "_job_of",
        "attempt",
        "batch",
        "data",
        "error",
        "job_id",
        "name",
        "node",
        "priority",
        "queue",
        "timestamp",
        "worker",
    )

    def __init__(
        self,
        name: str,
        timestamp: float,  # seconds since the epoch (time.time())
        job_id: int | None = None,
        worker: str | None = None,
        queue: str | None = None,
        attempt: int | None = None,
        priority: int | None = None,
        node: str | None = None,
        data: Mapping[str, Any] = _EMPTY,
        job: Job | None = None,
        error: BaseException | None = None,
        batch: Batch | None = None,
        job_of: Callable[[], Job] | None = None,
    ) -> None:
        self.name = name
        self.timestamp = timestamp
        self.job_id = job_id
        self.worker = worker
        self.queue = queue
        self.attempt = attempt
        self.priority = priority
        self.node = node
        self.data = data
        self.error = error
        self.batch = batch
        self._job = job
        self._job_of = job_of  # makes `job` when first asked for (most handlers never do)

    @property
    def job(self) -> Job | None:
        if self._job is None and self._job_of is not None:
            self._job, self._job_of = self._job_of(), None
        return self._job

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def __repr__(self) -> str:
        about = f" job {self.job_id} ({self.worker})" if self.job_id is not None else ""
        return f"<Event {self.name}{about} at {self.at.isoformat()}>"

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
    name: str,
    job: Job,
    *,
    node: str | None = None,
    error: BaseException | None = None,
    final: Job | None = None,
    job_of: Callable[[], Job] | None = None,
    **data: Any,
) -> Event:
    """An event about `job`, with its id, worker, queue, attempt and priority. The job it
    hands out is `job`, or `final` (the job as its row reads after the event), or what
    `job_of` makes of it when a handler first asks for it."""
    return about_job(name, job, node, data or _EMPTY, error, final, job_of)


def about_job(
    name: str,
    job: Job,
    node: str | None,
    data: Mapping[str, Any],
    error: BaseException | None = None,
    final: Job | None = None,
    job_of: Callable[[], Job] | None = None,
) -> Event:
    """`job_event` without keyword arguments, for the runtime's busiest events."""
    return Event(
        name,
        time.time(),
        job.id,
        job.worker,
        job.queue,
        job.attempt,
        job.priority,
        node,
        data,
        final if final is not None else (None if job_of is not None else job),
        error,
        None,
        job_of,
    )


def batch_event(batch: Batch, node: str | None = None) -> Event:
    """batch.completed: `batch` closed, with its final counts."""
    data = {
        "batch_id": batch.id,
        "total": batch.total,
        "completed": batch.completed,
        "discarded": batch.discarded,
        "cancelled": batch.cancelled,
    }
    return Event("batch.completed", time.time(), node=node, data=data, batch=batch)


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
        self._wanted_any: dict[tuple[str, ...], bool] = {}
        self._routes: dict[str, tuple[tuple[Handler, ...], tuple[_AsyncHandler, ...]]] = {}
        self.active = False  # anything subscribed at all
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = 0  # events for async handlers published where no loop could run them
        # Tells this process's custom events from other processes' (see `custom_message`).
        self.origin = secrets.token_hex(8)

    def _changed(self) -> None:
        self._routes.clear()
        self._wanted.clear()
        self._wanted_any.clear()
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

    def wants_any(self, names: tuple[str, ...]) -> bool:
        """Whether anything subscribes to one of `names` (cached by the tuple)."""
        if not self.active:
            return False
        wanted = self._wanted_any.get(names)
        if wanted is None:
            wanted = self._wanted_any[names] = any(self.wants(name) for name in names)
        return wanted

    def publish(self, event: Event) -> None:
        """Hand `event` to its subscribers. Sync handlers run at once, in the calling thread;
        async handlers and streams on the event loop (from another thread, the loop this
        bus last published on, if it still runs)."""
        route = self._routes.get(event.name)
        if route is None:
            route = self._route(event.name)
        handlers, queued = route
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                logger.exception("event handler %r failed on %s", handler, event.name)
        if queued or self._streams:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                self._loop = loop
            except RuntimeError:
                loop = None
            for subscriber in queued:
                self._on_loop(loop, subscriber.put, event)
            for stream in list(self._streams):
                if matches(stream.pattern, event.name):
                    self._on_loop(loop, stream._put, event)

    def _route(self, name: str) -> tuple[tuple[Handler, ...], tuple[_AsyncHandler, ...]]:
        """The handlers of events called `name`: sync ones, and async ones (cached)."""
        matching = [h for p, h in self._handlers if matches(p, name)]
        route = (
            tuple(h for h in matching if not isinstance(h, _AsyncHandler)),
            tuple(h for h in matching if isinstance(h, _AsyncHandler)),
        )
        self._routes[name] = route
        return route

    def _on_loop(
        self,
        loop: asyncio.AbstractEventLoop | None,
        put: Callable[[Event], None],
        event: Event,
    ) -> None:
        if loop is not None:
            put(event)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(put, event)
        else:
            self._lost += 1  # published off any loop, before one ran: nowhere to run it

    def emit(self, name: str, **fields: Any) -> None:
        """Publish an event built from `fields` if anything wants it (not about a job)."""
        if self.wants(name):
            data = fields.pop("data", None)
            self.publish(Event(name, time.time(), data=data or _EMPTY, **fields))

    @property
    def dropped(self) -> int:
        """Events async handlers and streams never got: they fell behind, or the event was
        published in a thread before any loop ran here."""
        behind = sum(h.dropped for _, h in self._handlers if isinstance(h, _AsyncHandler))
        return behind + self._lost

    async def settle(self) -> None:
        """Wait until the async handlers have handled every event published so far."""
        for _, handler in list(self._handlers):
            if isinstance(handler, _AsyncHandler):
                await handler.idle.wait()


# -- hooks: sugar over subscriptions ----------------------------------------------------------

# A job stopped: `hook(job, will_retry)`, sync or async.
StoppedHook = Callable[["Job", bool], object]
HOOK_BUFFER = 10_000  # an async hook may fall this many events behind before it loses any


def with_will_retry(hook: Callable[..., object]) -> StoppedHook:
    """`hook` as a two-argument hook: one that takes a single argument is called with the
    job alone (so `def hook(job)` keeps working), one that takes two with `will_retry` too."""
    try:
        inspect.signature(hook).bind(None, None)
        return hook
    except (TypeError, ValueError):  # ValueError: no signature to read (some builtins)
        pass
    if _is_async(hook):

        @functools.wraps(hook)  # logged under its own name if it fails
        async def job_only_async(job: Job, will_retry: bool) -> object:
            return await hook(job)  # type: ignore[misc]

        return job_only_async

    @functools.wraps(hook)
    def job_only(job: Job, will_retry: bool) -> object:
        return hook(job)

    return job_only


def hook_handler(
    hook: Callable[..., object], args_of: Callable[[Event], tuple[Any, ...] | None]
) -> Handler:
    """A handler calling `hook(*args_of(event))` (sync or async, as `hook` is); an event for
    which `args_of` gives None is not the hook's."""
    if _is_async(hook):

        @functools.wraps(hook)
        async def call_async(event: Event) -> None:
            args = args_of(event)
            if args is not None:
                await hook(*args)  # type: ignore[misc]

        return call_async

    @functools.wraps(hook)
    def call(event: Event) -> None:
        args = args_of(event)
        if args is not None:
            hook(*args)

    return call


def _stopped_args(event: Event) -> tuple[Any, ...] | None:
    """`on_job_stopped`'s (job, will_retry): every run that ended its job, and every failed
    run (the final failure of a discarded job is heard once, as its discard)."""
    if event.job is None:  # not a run of this process (a job cancelled by id)
        return None
    if event.name == "job.failed":
        return (event.job, True) if event.data.get("will_retry") else None
    return (event.job, False)


STOPPED_EVENTS = ("job.completed", "job.failed", "job.discarded", "job.cancelled")


def stopped_handler(hook: Callable[..., object]) -> Handler:
    """The handler `on_job_stopped(hook)` subscribes to each of `STOPPED_EVENTS`."""
    return hook_handler(with_will_retry(hook), _stopped_args)


def batch_args(event: Event) -> tuple[Any, ...] | None:
    return None if event.batch is None else (event.batch,)


def job_args(event: Event) -> tuple[Any, ...] | None:
    return None if event.job is None else (event.job,)


def failure_args(event: Event) -> tuple[Any, ...] | None:
    return None if event.job is None else (event.job, event.error)


# -- custom events ------------------------------------------------------------------------------

MAX_CUSTOM_BYTES = 7_000  # of the message as JSON; NOTIFY refuses payloads of 8,000 bytes
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}")


def custom_message(origin: str, job_id: int | None, name: object, data: object) -> dict[str, Any]:
    """A custom event as the message sent to every node; `InvalidEventError` if it is not
    one (a bad name, data that is not a JSON object, or too big to send)."""
    if not isinstance(name, str) or not _CUSTOM_NAME.fullmatch(name):
        raise InvalidEventError(
            f"emit: name must be 1-100 letters, digits or _ . : - (not starting with "
            f". : -), got {name!r}"
        )
    if job_id is not None:
        job_id = check.job_id(job_id)
    try:
        document = check.json_object({} if data is None else data, "data")
    except ValueError as error:
        raise InvalidEventError(f"emit: {error}") from None
    message = {
        "action": "event",
        "origin": origin,
        "job_id": job_id,
        "name": name,
        "data": document,
        "at": time.time(),
    }
    size = len(json.dumps(message).encode())
    if size > MAX_CUSTOM_BYTES:
        raise InvalidEventError(
            f"emit: the event is {size:,} bytes as JSON, more than {MAX_CUSTOM_BYTES:,}: "
            "send a reference (an id, a key) rather than the data itself"
        )
    return message


def custom_event(message: Mapping[str, Any], node: str | None = None) -> Event | None:
    """The event a custom-event message carries (None if it is malformed)."""
    name, data, at = message.get("name"), message.get("data"), message.get("at")
    job_id = message.get("job_id")
    if not isinstance(name, str) or not isinstance(data, dict) or not isinstance(at, int | float):
        return None
    if job_id is not None and (isinstance(job_id, bool) or not isinstance(job_id, int)):
        return None
    return Event(
        CUSTOM_PREFIX + name, float(at), job_id=job_id, node=node, data=MappingProxyType(data)
    )


__all__ = [
    "EVENT_NAMES",
    "Event",
    "EventBus",
    "EventStream",
    "StoppedHook",
    "job_event",
    "with_will_retry",
]
