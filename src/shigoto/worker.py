"""Workers: the code that runs jobs, their options, and the registry that names them.

Two styles, one behaviour:

    @app.worker(queue="emails", max_attempts=5)
    async def send_email(to: str, subject: str) -> None:   # args arrive as keyword arguments
        ...

    @app.worker
    class ApiSync(Worker):
        queue = "api"
        async def perform(self, job: Job) -> object:       # job.args is a dict
            ...

Either way `send_email.new(args, **options)` makes a `JobSpec` and
`await send_email.enqueue(args, **options)` inserts it.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from shigoto import _validate as check
from shigoto.job import Job, JobSpec
from shigoto.outcomes import (
    ConfigurationError,
    DuplicateWorkerError,
    InvalidJobError,
    UnknownWorkerError,
)
from shigoto.pipeline import Middleware, check_chain, check_middleware


class App(Protocol):
    """What a worker needs of the app it is registered with (a `Shigoto`): to insert its
    jobs (`Worker.enqueue`, `Worker.enqueue_many`)."""

    async def insert(self, spec: JobSpec, *, conn: Any = None) -> Job: ...

    async def insert_many(
        self, template: JobSpec, args: Iterable[Mapping[str, Any]], *, conn: Any = None
    ) -> list[int]: ...


BACKOFF_CAP = 1800.0

# The jitter's own generator: a library drawing from the global one would change what a
# program that seeds `random` for repeatable runs gets from it.
_jitter = random.Random()


def default_backoff(attempt: int) -> float:
    """The default backoff: attempt⁴ seconds plus 0-30 s of jitter, at most 30 minutes."""
    return min(attempt**4 + _jitter.uniform(0, 30), BACKOFF_CAP)


class Worker:
    """Base class of every worker; class attributes are its job defaults.

    Override `perform`; optionally `backoff` and `on_discard`. `perform` may be `async def`
    or a plain `def` (which runs in a thread pool so it never blocks the event loop).
    """

    name: ClassVar[str] = ""
    queue: ClassVar[str] = "default"
    max_attempts: ClassVar[int] = 3
    priority: ClassVar[int] = 0
    timeout: ClassVar[float] = 300.0
    tags: ClassVar[tuple[str, ...]] = ()
    unique: ClassVar[object | None] = None
    cron: ClassVar[object | None] = None  # a cron expression or a Schedule: fire on it
    # Its own middleware, run inside the app's (see `shigoto.pipeline`).
    middleware: ClassVar[tuple[Middleware, ...]] = ()
    app: ClassVar[App | None] = None
    signature: ClassVar[Signature | None] = None  # a function worker's, to check args by

    def perform(self, job: Job) -> object | Awaitable[object]:
        raise NotImplementedError(f"{type(self).__name__} must define perform(self, job)")

    def backoff(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before retrying after `attempt` (1-based) failed with `error`."""
        return default_backoff(attempt)

    async def on_discard(self, job: Job) -> None:
        """Called once when the job is discarded for good."""

    @classmethod
    def new(cls, args: Mapping[str, Any] | None = None, **options: Any) -> JobSpec:
        """Make a validated `JobSpec` for this worker; options override its defaults.

        Options: queue, priority, max_attempts, scheduled_at, scheduled_in, tags (replace the
        worker's), meta, partition_key, origin, unique (`Unique(...)`, True, or False to
        drop the worker's). Raises `InvalidJobError` on bad input.
        """
        defaults: dict[str, Any] = {
            "queue": cls.queue,
            "priority": cls.priority,
            "max_attempts": cls.max_attempts,
            "tags": list(cls.tags),
            "unique": cls.unique,
        }
        merged = {**defaults, **{k: v for k, v in options.items() if v is not None}}
        if merged.get("unique") is False:
            merged["unique"] = None
        spec = JobSpec.build(cls._registered_name(), args, **merged)
        # A name the function does not take is refused now; a missing one when the job is
        # inserted (a spec may be the template of insert_many, whose jobs bring the rest).
        signature = cls.signature
        if signature is not None and not signature.takes(spec.args):
            signature.check(spec.args, "args", complete=False)
        return spec

    @classmethod
    async def enqueue(
        cls, args: Mapping[str, Any] | None = None, *, conn: Any = None, **options: Any
    ) -> Job:
        """`new` then `app.insert`: insert one job for this worker."""
        return await cls._registered_app().insert(cls.new(args, **options), conn=conn)

    @classmethod
    async def enqueue_many(
        cls, args: Iterable[Mapping[str, Any]], *, conn: Any = None, **options: Any
    ) -> list[int]:
        """`app.insert_many`: one job of this worker per args, all with these options, in
        one statement; returns their ids in order."""
        return await cls._registered_app().insert_many(cls.new(None, **options), args, conn=conn)

    @classmethod
    def _registered_name(cls) -> str:
        if not cls.name:
            raise ConfigurationError(
                f"worker: {cls.__qualname__} is not registered; decorate it with @app.worker"
            )
        return cls.name

    @classmethod
    def _registered_app(cls) -> App:
        if cls.app is None:
            raise ConfigurationError(
                f"worker: {cls.__qualname__} is not registered; decorate it with @app.worker"
            )
        return cls.app


class Signature:
    """The keyword arguments a function worker takes, read once when it is registered, so
    that a job's args are checked when it is made rather than failing every run.

        Signature.of(send_email).check({"to": "a@b.c", "cc": 1}, "args")
        # InvalidJobError: args["cc"]: is not a parameter of send_email()
    """

    __slots__ = ("accepted", "name", "required")

    def __init__(self, name: str, accepted: frozenset[str] | None, required: frozenset[str]):
        self.name = name
        self.accepted = accepted  # None: it takes **kwargs, so any name
        self.required = required

    @classmethod
    def of(cls, func: Callable[..., Any]) -> Signature | None:
        """`func`'s signature, or None when it takes anything (or has none to read)."""
        try:
            parameters = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # a builtin or C function: nothing to check against
            return None
        name = getattr(func, "__name__", repr(func))
        accepted: set[str] | None = set()
        required = set()
        for parameter in parameters:
            if parameter.kind is parameter.VAR_KEYWORD:
                accepted = None
            elif parameter.kind is parameter.POSITIONAL_ONLY:
                if parameter.default is parameter.empty:
                    raise ConfigurationError(
                        f"worker: {name}() has the positional-only parameter "
                        f"{parameter.name!r}, but a job's args arrive as keyword arguments"
                    )
            elif parameter.kind is not parameter.VAR_POSITIONAL:
                if accepted is not None:
                    accepted.add(parameter.name)
                if parameter.default is parameter.empty:
                    required.add(parameter.name)
        if accepted is None and not required:
            return None
        return cls(name, None if accepted is None else frozenset(accepted), frozenset(required))

    def takes(self, args: Mapping[str, Any]) -> bool:
        """Whether the function takes every name in `args`."""
        return self.accepted is None or self.accepted.issuperset(args)

    def fits(self, args: Mapping[str, Any]) -> bool:
        """Whether the function can be called with `args`: it takes them all, and they hold
        every name it requires."""
        return (self.accepted is None or self.accepted.issuperset(args)) and self.required.issubset(
            args
        )

    def check(self, args: Mapping[str, Any], field: str, *, complete: bool = True) -> None:
        """Raise `InvalidJobError` naming the first argument the function would refuse."""
        if self.accepted is not None:
            for key in args:
                if key not in self.accepted:
                    raise InvalidJobError(
                        check.key_path(field, key), f"is not a parameter of {self.name}()"
                    )
        missing = sorted(self.required.difference(args)) if complete else []
        if missing:
            raise InvalidJobError(
                check.key_path(field, missing[0]), f"is missing: {self.name}() requires it"
            )


class FunctionWorker(Worker):
    """A worker made from a function; calling it still calls the function."""

    func: ClassVar[Callable[..., Any]]

    def perform(self, job: Job) -> object | Awaitable[object]:
        # A coroutine for an async function (awaited on the loop), the value for a plain one
        # (which the executor calls in its thread pool).
        outcome: object = type(self).func(**job.args)
        return outcome

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return type(self).func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<worker {self.name!r}>"


_OPTIONS = {
    "name",
    "queue",
    "max_attempts",
    "priority",
    "timeout",
    "tags",
    "unique",
    "cron",
    "middleware",
}
_HOOKS = {"backoff", "on_discard"}


def _checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _OPTIONS - _HOOKS
    if unknown:
        raise ConfigurationError(f"worker: unknown option(s) {', '.join(sorted(unknown))}")
    checked = dict(options)
    if "name" in checked:
        checked["name"] = check.worker_name(checked["name"], "name")
    if "queue" in checked:
        checked["queue"] = check.queue(checked["queue"])
    if "max_attempts" in checked:
        checked["max_attempts"] = check.max_attempts(checked["max_attempts"])
    if "priority" in checked:
        checked["priority"] = check.priority(checked["priority"])
    if "timeout" in checked:
        checked["timeout"] = check.seconds(checked["timeout"], "timeout", allow_zero=False)
    if "tags" in checked:
        checked["tags"] = tuple(check.tags(checked["tags"]))
    if "unique" in checked:
        from shigoto.features.unique import as_unique

        try:
            checked["unique"] = as_unique(checked["unique"])
        except InvalidJobError as error:
            raise ConfigurationError(f"worker: {error}") from None
    if checked.get("cron") is not None:
        from shigoto.schedules import Cron, Schedule

        if isinstance(checked["cron"], str):
            checked["cron"] = Cron(checked["cron"])
        elif not isinstance(checked["cron"], Schedule):
            raise ConfigurationError(
                f"worker: cron expects a cron expression or a schedule, got {checked['cron']!r}"
            )
    if "middleware" in checked:
        checked["middleware"] = check_chain(checked["middleware"], "worker: middleware")
    for hook in _HOOKS & set(checked):
        if not callable(checked[hook]):
            raise ConfigurationError(f"worker: {hook} must be callable")
    return checked


def _wrap_hooks(options: dict[str, Any]) -> dict[str, Any]:
    """Turn plain `backoff`/`on_discard` callables into methods of the worker class."""
    namespace = {k: v for k, v in options.items() if k not in _HOOKS}
    if "backoff" in options:
        backoff = options["backoff"]
        namespace["backoff"] = lambda self, attempt, error: backoff(attempt, error)
    if "on_discard" in options:
        on_discard = options["on_discard"]

        async def call_on_discard(self: Worker, job: Job) -> None:
            outcome = on_discard(job)
            if inspect.isawaitable(outcome):
                await outcome

        namespace["on_discard"] = call_on_discard
    return namespace


class WorkerRegistry:
    """The workers of one app, by name."""

    def __init__(self) -> None:
        self._workers: dict[str, type[Worker]] = {}
        # The function workers whose args can be wrong, by name: one lookup per insert.
        self.signatures: dict[str, Signature] = {}
        # The app's middleware, outermost first; the version tells executors to compose
        # their chains again when one is added.
        self.middleware: list[Middleware] = []
        self.middleware_version = 0

    def add_middleware(self, middleware: object) -> Middleware:
        """Add `middleware` (checked) inside the app's others."""
        checked = check_middleware(middleware, "middleware")
        self.middleware.append(checked)
        self.middleware_version += 1
        return checked

    def __contains__(self, name: object) -> bool:
        return name in self._workers

    def __iter__(self) -> Any:
        return iter(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def check_args(self, worker: str, args: Mapping[str, Any], field: str = "args") -> None:
        """Raise `InvalidJobError` if `worker` is a function worker of this registry that
        cannot be called with `args` (a name it does not take, or one it needs missing)."""
        signature = self.signatures.get(worker)
        if signature is not None and not signature.fits(args):
            signature.check(args, field)

    def get(self, name: str) -> type[Worker]:
        try:
            return self._workers[name]
        except KeyError:
            raise UnknownWorkerError(name) from None

    def decorate(self, app: App, target: Any, options: Mapping[str, Any]) -> Any:
        """`app.worker`: register `target` (a function or a `Worker` subclass), or, with
        no target, return the decorator that does."""

        def register(obj: Any) -> Any:
            if isinstance(obj, type):
                return self.register_class(app, obj, options)
            return self.register_function(app, obj, options)

        return register if target is None else register(target)

    def register_function(
        self, app: App, func: Callable[..., Any], options: Mapping[str, Any]
    ) -> FunctionWorker:
        if not callable(func) or isinstance(func, type):
            raise ConfigurationError("worker: @app.worker decorates a function or a Worker class")
        checked = _checked_options(options)
        name = checked.pop("name", f"{func.__module__}.{func.__qualname__}")
        namespace = _wrap_hooks(checked)
        signature = Signature.of(func)
        if checked.get("cron") is not None and signature is not None and signature.required:
            needed = ", ".join(sorted(signature.required))
            raise ConfigurationError(
                f"worker: {signature.name}() fires on cron= with no args, but requires {needed}"
            )
        namespace.update(func=staticmethod(func), signature=signature, __doc__=func.__doc__)
        cls: type[FunctionWorker] = type(func.__name__, (FunctionWorker,), namespace)
        self._add(app, name, cls)
        instance = cls()
        functools.update_wrapper(instance, func, updated=())
        return instance

    def register_class(
        self, app: App, cls: type[Worker], options: Mapping[str, Any]
    ) -> type[Worker]:
        if not (isinstance(cls, type) and issubclass(cls, Worker)):
            raise ConfigurationError("worker: @app.worker decorates a function or a Worker class")
        if cls.perform is Worker.perform:
            raise ConfigurationError(f"worker: {cls.__qualname__} must define perform(self, job)")
        checked = _checked_options(options)
        # Class attributes are options too: check the ones the class set itself.
        own = {k: v for k, v in vars(cls).items() if k in _OPTIONS and k != "name"}
        own_checked = _checked_options(own)
        if "middleware" in own_checked:
            cls.middleware = own_checked["middleware"]
        name = (
            checked.pop("name", None)
            or cls.__dict__.get("name")
            or (f"{cls.__module__}.{cls.__qualname__}")
        )
        check.worker_name(name, "name")
        for key, value in _wrap_hooks(checked).items():
            setattr(cls, key, value)
        self._add(app, name, cls)
        return cls

    def _add(self, app: App, name: str, cls: type[Worker]) -> None:
        if name in self._workers:
            raise DuplicateWorkerError(name)
        if cls.app is not None and cls.app is not app:
            raise ConfigurationError(f"worker: {cls.__qualname__} is registered with another app")
        cls.name = name
        cls.app = app
        self._workers[name] = cls
        if cls.signature is not None:
            self.signatures[name] = cls.signature
