"""The app's ways into the path of its jobs, a part of `Shigoto`: middleware around each
run, the events of what happened, and custom events.

    @app.middleware                           # around every job (see `shigoto.pipeline`)
    async def timing(job: Job, call_next): return await call_next()

    @app.on("job.completed")                  # also "job.*" and "*"; sync or async
    def seen(event: Event) -> None: ...

    async with app.events("job.*") as stream:  # a live, bounded stream
        async for event in stream: ...

    await app.emit(job.id, "progress", {"pct": 75})   # custom.progress, on every node

The hook decorators (`on_job_start`, `on_job_complete`, `on_job_fail`, `on_job_stopped`,
`on_batch_stopped`) are subscriptions to the events they are named after. Everything
here goes through the app's bus (`shigoto.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from shigoto import events
from shigoto.commands import Commands
from shigoto.db.database import Database
from shigoto.events import EventBus, EventStream
from shigoto.pipeline import Middleware
from shigoto.worker import WorkerRegistry

H = TypeVar("H", bound=Callable[..., object])
M = TypeVar("M", bound=Middleware)


class AppHooks:
    """`Shigoto`'s middleware (kept by its worker registry), subscriptions and custom
    events (over its bus)."""

    bus: EventBus
    commands: Commands
    database: Database
    workers: WorkerRegistry

    def middleware(self, middleware: M) -> M:
        """Run `middleware(job, call_next)` around every job, inside the middleware added
        before it and outside the worker's own (see `shigoto.pipeline`). A decorator.

            @app.middleware
            async def timing(job: Job, call_next):
                started = time.monotonic()
                try:
                    return await call_next()
                finally:
                    log.info("%s took %.3fs", job.worker, time.monotonic() - started)
        """
        self.workers.add_middleware(middleware)
        return middleware

    def on(self, pattern: str) -> Callable[[H], H]:
        """Call the decorated function (sync or async) with each event matching `pattern`:
        a name ("job.completed"), a prefix ("job.*") or "*". Errors are logged.

            @app.on("job.failed")
            def alert(event: Event) -> None:
                print(event.job_id, event.data["kind"], event.data["will_retry"])
        """
        events.check_pattern(pattern)

        def subscribe(handler: H) -> H:
            self.bus.subscribe(pattern, handler)
            return handler

        return subscribe

    def events(self, pattern: str = "*", *, size: int = events.DEFAULT_BUFFER) -> EventStream:
        """A live stream of this process's events matching `pattern` (and custom events
        from every node), from now on; at most `size` wait unread (the oldest are dropped,
        counted in `stream.dropped`).

            async with app.events("job.*") as stream:
                async for event in stream:
                    ...
        """
        return self.bus.stream(pattern, size=size)

    async def emit(
        self, job_id: int | None, name: str, data: Mapping[str, Any] | None = None
    ) -> None:
        """Publish a custom event, `custom.<name>`, here at once and on every node (it is
        not stored: whoever listens now hears it). `data` is a small JSON object.

            await app.emit(current_job().id, "progress", {"pct": 75})
        """
        to_every_node = self.commands.emit(job_id, name, data)
        if to_every_node is not None:
            await self.database.run(to_every_node)

    def on_job_stopped(self, hook: H) -> H:
        """Call `hook(job, will_retry)` (sync or async) where a job ran, once its outcome is
        written: for every run that ended it (completed, discarded, cancelled by its worker)
        and for every failed run (`will_retry` is True when it will run again). A hook that
        takes one argument gets the job alone. Runs on a node, in `drain_queue` and inline.
        A decorator; errors are logged.

            @app.on_job_stopped
            def count(job: Job, will_retry: bool) -> None:
                metrics.count(job.worker, "retry" if will_retry else job.state)
        """
        handler = events.stopped_handler(hook)
        for name in events.STOPPED_EVENTS:
            self.bus.subscribe(name, handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_batch_stopped(self, hook: H) -> H:
        """Call `hook(batch)` (sync or async) on the node that closes a batch, once per batch,
        with its final counts. A decorator; errors are logged."""
        handler = events.hook_handler(hook, events.batch_args)
        self.bus.subscribe("batch.completed", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_start(self, hook: H) -> H:
        """Call `hook(job)` (sync or async) as each run of a job starts. A decorator."""
        handler = events.hook_handler(hook, events.job_args)
        self.bus.subscribe("job.started", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_complete(self, hook: H) -> H:
        """Call `hook(job)` (sync or async) once a job completed (`job.result` is set)."""
        handler = events.hook_handler(hook, events.job_args)
        self.bus.subscribe("job.completed", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_fail(self, hook: H) -> H:
        """Call `hook(job, error)` (sync or async) after every failed run: `error` is what it
        raised (None for a run lost with its node), `job.state` says whether it will run
        again ("retryable", "available") or not ("discarded")."""
        handler = events.hook_handler(hook, events.failure_args)
        self.bus.subscribe("job.failed", handler, buffer=events.HOOK_BUFFER)
        return hook
