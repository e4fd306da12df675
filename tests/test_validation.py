"""Bad input: each rejection names the field and the problem, and writes nothing."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shigoto import (
    ConfigurationError,
    Daily,
    DatabaseUnavailable,
    DuplicateWorkerError,
    Every,
    InvalidJobError,
    InvalidScheduleError,
    JobNotFoundError,
    JobSpec,
    ResultNotStored,
    RetryAfter,
    Shigoto,
    ShigotoError,
    Snooze,
    Unique,
    UnknownWorkerError,
    Worker,
)
from shigoto.testing import manual


@pytest.fixture
def greet(app: Shigoto):
    @app.worker(name="greet")
    async def greet(name: str = "") -> None: ...

    return greet


NAIVE = datetime(2030, 1, 1, 12, 0)
LONG_QUEUE = "q" * 129

# (options for Worker.new / enqueue, field named in the error, words of the problem)
BAD_OPTIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"args": [1, 2]}, "args", "must be a JSON object (a dict), got list"),
    ({"args": "to=a@b.c"}, "args", "must be a JSON object (a dict), got str"),
    ({"args": {"a": {"b": [1, {2, 3}]}}}, 'args["a"]["b"][1]', "set is not JSON-serializable"),
    ({"args": {"when": datetime.now(UTC)}}, 'args["when"]', "datetime is not JSON-serializable"),
    ({"args": {"obj": object()}}, 'args["obj"]', "object is not JSON-serializable"),
    ({"args": {1: "one"}}, "args[1]", "keys must be strings, got int"),
    ({"args": {"x": float("nan")}}, 'args["x"]', "nan is not a JSON number"),
    ({"args": {"x": [float("inf")]}}, 'args["x"][0]', "inf is not a JSON number"),
    ({"args": {"name": "a\x00b"}}, 'args["name"]', "NUL character"),
    ({"args": {"a\x00": 1}}, "args['a\\x00']", "NUL character"),
    ({"args": {"name": "a\ud800b"}}, 'args["name"]', "lone surrogate"),
    ({"meta": ["not", "an", "object"]}, "meta", "must be a JSON object"),
    ({"meta": {"note": "\x00"}}, 'meta["note"]', "NUL character"),
    ({"queue": ""}, "queue", "must not be empty"),
    ({"queue": LONG_QUEUE}, "queue", "is 129 characters long; at most 128"),
    ({"queue": "a\x00b"}, "queue", "NUL character"),
    ({"queue": "a\udc00"}, "queue", "lone surrogate"),
    ({"queue": 5}, "queue", "must be a string, got int"),
    ({"priority": 40_000}, "priority", "must be between -32768 and 32767, got 40000"),
    ({"priority": -40_000}, "priority", "must be between -32768 and 32767"),
    ({"priority": "high"}, "priority", "must be an integer, got str"),
    ({"priority": True}, "priority", "must be an integer, got bool"),
    ({"priority": 1.5}, "priority", "must be an integer, got float"),
    ({"max_attempts": 0}, "max_attempts", "must be between 1 and 10000, got 0"),
    ({"max_attempts": 10_001}, "max_attempts", "must be between 1 and 10000"),
    ({"max_attempts": "3"}, "max_attempts", "must be an integer, got str"),
    ({"scheduled_at": NAIVE}, "scheduled_at", "naive datetime"),
    ({"scheduled_at": "2030-01-01"}, "scheduled_at", "must be a datetime, got str"),
    (
        {"scheduled_at": datetime.now(UTC), "scheduled_in": 5},
        "scheduled_at",
        "give scheduled_at or scheduled_in, not both",
    ),
    ({"scheduled_in": -1}, "scheduled_in", "must be >= 0"),
    ({"scheduled_in": "soon"}, "scheduled_in", "must be a number of seconds or a timedelta"),
    ({"tags": "urgent"}, "tags", "must be a list of strings"),
    ({"tags": ["ok", ""]}, "tags[1]", "must not be empty"),
    ({"tags": [7]}, "tags[0]", "must be a string, got int"),
    ({"tags": ["a\x00"]}, "tags[0]", "NUL character"),
    ({"tags": [f"t{i}" for i in range(65)]}, "tags", "has 65 tags; at most 64"),
    ({"partition_key": ""}, "partition_key", "must not be empty"),
    ({"partition_key": "p\x00"}, "partition_key", "NUL character"),
    ({"origin": "o" * 256}, "origin", "at most 255"),
]


def _ids(case: tuple[dict[str, Any], str, str]) -> str:
    return case[1]


@pytest.mark.parametrize(("options", "field", "problem"), BAD_OPTIONS, ids=map(_ids, BAD_OPTIONS))
async def test_bad_job_input_is_rejected_and_nothing_is_written(
    app: Shigoto, greet, count_jobs, options: dict[str, Any], field: str, problem: str
) -> None:
    options = dict(options)
    args = options.pop("args", {"name": "x"})

    with pytest.raises(InvalidJobError) as raised:
        await greet.enqueue(args, **options)
    with pytest.raises(InvalidJobError):
        app.sync.enqueue("greet", args, **options)

    error = raised.value
    assert isinstance(error, ShigotoError)
    assert error.field == field
    assert problem in str(error)
    assert str(error).startswith(f"{field}: ")
    assert await count_jobs() == 0


async def test_a_bad_spec_in_a_bulk_insert_writes_none_of_them(
    app: Shigoto, greet, count_jobs
) -> None:
    specs: list[Any] = [greet.new({"name": "a"}), {"worker": "greet"}, greet.new({"name": "b"})]
    with pytest.raises(InvalidJobError, match=r"^spec: expected a JobSpec"):
        await app.insert_all(specs)
    with pytest.raises(InvalidJobError, match=r"^spec: expected a JobSpec"):
        await app.insert("greet")  # type: ignore[arg-type]
    assert await count_jobs() == 0


@pytest.mark.parametrize(
    ("worker", "problem"),
    [("", "worker: must not be empty"), ("w" * 256, "worker: is 256 characters long")],
)
async def test_bad_worker_names_are_rejected(
    app: Shigoto, count_jobs, worker: str, problem: str
) -> None:
    with pytest.raises(InvalidJobError, match=problem):
        JobSpec.build(worker, {})
    with pytest.raises(InvalidJobError, match=problem):
        await app.enqueue(worker, {})
    assert await count_jobs() == 0


async def test_registering_two_workers_under_one_name_fails(app: Shigoto, greet) -> None:
    with pytest.raises(DuplicateWorkerError, match="'greet' is already registered"):

        @app.worker(name="greet")
        def other() -> None: ...

    assert app.workers.get("greet") is type(greet)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"queue": ""}, InvalidJobError, "queue: must not be empty"),
        ({"timeout": 0}, InvalidJobError, "timeout: must be > 0"),
        ({"max_attempts": 0}, InvalidJobError, "max_attempts: must be between 1 and 10000"),
        ({"name": "n\x00"}, InvalidJobError, "name: contains a NUL character"),
        ({"backoff": 5}, ConfigurationError, "backoff must be callable"),
        ({"retries": 5}, ConfigurationError, "unknown option(s) retries"),
    ],
)
def test_bad_worker_options_are_rejected(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    app = Shigoto(dsn="postgresql://unused")
    with pytest.raises(error) as raised:
        app.worker(**options)(lambda: None)
    assert message in str(raised.value)
    assert len(app.workers) == 0


def test_class_attributes_are_checked_too() -> None:
    app = Shigoto(dsn="postgresql://unused")

    class Bad(Worker):
        priority = 99_999

        def perform(self, job: Any) -> None: ...

    with pytest.raises(InvalidJobError, match="priority: must be between"):
        app.worker(Bad)


def test_worker_without_perform_is_rejected() -> None:
    app = Shigoto(dsn="postgresql://unused")

    class Empty(Worker):
        pass

    with pytest.raises(ConfigurationError, match="must define perform"):
        app.worker(Empty)


def test_unregistered_worker_cannot_make_jobs() -> None:
    class Loose(Worker):
        def perform(self, job: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="not registered"):
        Loose.new({})


BAD_FILTERS: list[tuple[str, Callable[[Shigoto], Any], type[Exception], str]] = [
    ("no filter", lambda app: app.cancel_by(), InvalidJobError, "filter: give at least one"),
    (
        "final state",
        lambda app: app.cancel_by(states=["completed"]),
        InvalidJobError,
        "states: completed not allowed here",
    ),
    (
        "unknown state",
        lambda app: app.retry_by(states=["bogus"]),
        InvalidJobError,
        "state: 'bogus' is not a job state",
    ),
    (
        "running job",
        lambda app: app.retry_by(states=["executing"]),
        InvalidJobError,
        "states: executing not allowed here",
    ),
    ("limit", lambda app: app.list_jobs(limit=0), InvalidJobError, "limit: must be between 1"),
    (
        "naive since",
        lambda app: app.list_jobs(since=NAIVE),
        InvalidJobError,
        "since: is a naive datetime",
    ),
    ("empty queue", lambda app: app.list_jobs(queue=""), InvalidJobError, "queue: must not be"),
    (
        "negative age",
        lambda app: app.delete_finished(older_than=-5),
        InvalidJobError,
        "older_than: must be >= 0",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [c[1:] for c in BAD_FILTERS], ids=[c[0] for c in BAD_FILTERS]
)
async def test_bad_admin_filters_are_rejected_and_change_nothing(
    app: Shigoto, greet, call: Any, error: type[Exception], message: str
) -> None:
    job = await greet.enqueue({"name": "x"})
    with pytest.raises(error, match=message):
        await call(app)
    assert await app.get_job(job.id) == job


def test_a_long_key_is_cut_in_the_error_path_so_the_message_stays_readable() -> None:
    # Found by the fuzz test: a 2,000-character key made the path so long that the stored
    # message lost its beginning (the field's name).
    key = "x" * 2000
    with pytest.raises(InvalidJobError) as caught:
        JobSpec.build("w", {key: {1, 2}})
    message = str(caught.value)
    assert message.startswith('args["xxx') and "…" in message
    assert len(message) < 200


# -- the edges: every rejection a ShigotoError naming the field, never a raw error ---------

TOO_LONG = 10**4300  # 4,301 digits: one more than Python converts to text by default


def _case(name: str, call: Callable[[Any], Any], error: type[ShigotoError], field: str):
    return pytest.param(call, error, field, id=name)


# Each call gets the async app or its sync facade (the same names on both).
EDGE_CASES = [
    _case("int args", lambda a: a.enqueue("greet", {"n": TOO_LONG}), InvalidJobError, 'args["n"]'),
    _case(
        "negative int, nested",
        lambda a: a.enqueue("greet", {"x": [{"n": -TOO_LONG}]}),
        InvalidJobError,
        'args["x"][0]["n"]',
    ),
    _case(
        "int meta",
        lambda a: a.enqueue("greet", {}, meta={"n": TOO_LONG}),
        InvalidJobError,
        'meta["n"]',
    ),
    _case(
        "int schedule args",
        lambda a: a.schedule("s", "0 3 * * *", "greet", {"n": TOO_LONG}),
        InvalidJobError,
        'args["n"]',
    ),
    _case(
        "int priority",
        lambda a: a.enqueue("greet", {}, priority=TOO_LONG),
        InvalidJobError,
        "priority",
    ),
    _case(
        "scheduled_in",
        lambda a: a.enqueue("greet", {}, scheduled_in=1e300),
        InvalidJobError,
        "scheduled_in",
    ),
    _case(
        "scheduled_in int",
        lambda a: a.enqueue("greet", {}, scheduled_in=TOO_LONG),
        InvalidJobError,
        "scheduled_in",
    ),
    _case(
        "scheduled_in nan",
        lambda a: a.enqueue("greet", {}, scheduled_in=float("nan")),
        InvalidJobError,
        "scheduled_in",
    ),
    _case(
        "unique period",
        lambda a: a.enqueue("greet", {}, unique=Unique(period=1e300)),
        InvalidJobError,
        "unique.period",
    ),
    _case(
        "debounce",
        lambda a: a.enqueue("greet", {}, unique=Unique(debounce=1e300)),
        InvalidJobError,
        "unique.debounce",
    ),
    _case(
        "older_than",
        lambda a: a.delete_finished(older_than=1e300),
        InvalidJobError,
        "older_than",
    ),
    _case(
        "depends_on",
        lambda a: a.enqueue("greet", {}, depends_on=[2**63]),
        InvalidJobError,
        "depends_on",
    ),
    _case(
        "depends_on huge",
        lambda a: a.enqueue("greet", {}, depends_on=[TOO_LONG]),
        InvalidJobError,
        "depends_on",
    ),
    _case("get_job str", lambda a: a.get_job("1 or 1=1"), InvalidJobError, "job_id"),
    _case("get_job bool", lambda a: a.get_job(True), InvalidJobError, "job_id"),
    _case("get_job 2**63", lambda a: a.get_job(2**63), InvalidJobError, "job_id"),
    _case("cancel str", lambda a: a.cancel("1"), InvalidJobError, "job_id"),
    _case("retry float", lambda a: a.retry(1.0), InvalidJobError, "job_id"),
    _case("delete str", lambda a: a.delete("1; DROP TABLE jobs"), InvalidJobError, "job_id"),
    _case("pause_job", lambda a: a.pause_job(None), InvalidJobError, "job_id"),
    _case("resume_job", lambda a: a.resume_job(-1), InvalidJobError, "job_id"),
    _case("get_batch", lambda a: a.get_batch("7"), InvalidJobError, "batch_id"),
    _case("list_jobs queue", lambda a: a.list_jobs(queue=5), InvalidJobError, "queue"),
    _case("list_jobs worker", lambda a: a.list_jobs(worker=3.5), InvalidJobError, "worker"),
    _case("cancel_by queue", lambda a: a.cancel_by(queue=5), InvalidJobError, "queue"),
    _case(
        "Every inf",
        lambda a: a.schedule("s", Every(float("inf")), "greet"),
        InvalidScheduleError,
        "every",
    ),
    _case(
        "Every nan",
        lambda a: a.schedule("s", Every(float("nan")), "greet"),
        InvalidScheduleError,
        "every",
    ),
    _case(
        "Every 1e12", lambda a: a.schedule("s", Every(1e12), "greet"), InvalidScheduleError, "every"
    ),
    _case(
        "catch_up",
        lambda a: a.schedule("s", "0 3 * * *", "greet", catch_up=1e300),
        InvalidScheduleError,
        "catch_up",
    ),
    _case(
        "Daily hour",
        lambda a: a.schedule("s", Daily(TOO_LONG), "greet"),
        InvalidScheduleError,
        "hour",
    ),
]


@pytest.mark.parametrize(("call", "error", "field"), EDGE_CASES)
async def test_every_edge_is_a_shigoto_error_naming_the_field(
    app: Shigoto, greet, count_jobs, call: Any, error: type[ShigotoError], field: str
) -> None:
    """Each of these raised a raw ValueError, TypeError, OverflowError or psycopg error."""
    for facade in (app, app.sync):
        with pytest.raises(ShigotoError) as raised:
            outcome = call(facade)
            if inspect.isawaitable(outcome):
                await outcome
        assert type(raised.value) is error, raised.value
        assert str(raised.value).startswith(f"{field}: "), str(raised.value)
        if isinstance(raised.value, InvalidJobError):
            assert raised.value.field == field
        assert len(str(raised.value)) < 300  # never a 4,301-digit number in a message
    assert await count_jobs() == 0
    assert await app.schedules() == []


def test_outcomes_with_durations_no_database_can_hold_are_refused() -> None:
    for outcome, field in ((Snooze, "snooze"), (RetryAfter, "retry_after")):
        for seconds in (1e300, float("nan"), float("inf"), TOO_LONG, -1):
            with pytest.raises(InvalidJobError) as raised:
                outcome(seconds)
            assert raised.value.field == field


async def test_mappings_and_tuples_at_any_depth_are_stored_as_json(app: Shigoto) -> None:
    """A nested MappingProxyType (or any Mapping) reached json.dumps and raised TypeError."""

    @app.worker(name="anything")
    async def anything(**args: Any) -> None: ...

    args = {"m": MappingProxyType({"a": (1, MappingProxyType({"b": None}))}), "t": (1.5, "x")}
    plain = {"m": {"a": [1, {"b": None}]}, "t": [1.5, "x"]}
    for job in (
        await anything.enqueue(args, meta={"m": MappingProxyType({"k": 1})}),
        app.sync.enqueue("anything", args, meta={"m": MappingProxyType({"k": 1})}),
    ):
        assert job.args == plain and type(job.args["m"]) is dict
        stored = await app.get_job(job.id)
        assert stored is not None
        assert (stored.args, stored.meta) == (plain, {"m": {"k": 1}})
    with pytest.raises(InvalidJobError) as raised:
        await anything.enqueue({"m": MappingProxyType({"bad": {1, 2}})})
    assert raised.value.field == 'args["m"]["bad"]'


# -- a function worker's args, checked against its signature ------------------------------


@pytest.fixture
def report(app: Shigoto):
    @app.worker(name="report")
    async def report(month: str, *, region: str = "eu", draft: bool = False) -> None: ...

    return report


async def test_args_a_function_cannot_take_are_refused_when_the_job_is_made(
    app: Shigoto, report, count_jobs
) -> None:
    """They were inserted, and each run raised TypeError until the job was discarded."""
    unknown = {"month": "nov", "regoin": "us"}
    for make in (
        lambda: report.new(unknown),
        lambda: report.enqueue(unknown),
        lambda: app.enqueue("report", unknown),
        lambda: app.sync.enqueue("report", unknown),
        lambda: app.new_job("report", unknown),
    ):
        with pytest.raises(InvalidJobError) as raised:
            made = make()
            if inspect.isawaitable(made):
                await made
        assert raised.value.field == 'args["regoin"]'
        assert str(raised.value) == 'args["regoin"]: is not a parameter of report()'

    missing = {"region": "us"}
    spec = report.new(missing)  # a template for insert_many may leave args out ...
    for insert in (
        lambda: app.insert(spec),  # ... but a job must have them all
        lambda: app.insert_all([report.new({"month": "nov"}), spec]),
        lambda: app.sync.insert(spec),
        lambda: report.enqueue(missing),
        lambda: app.sync.enqueue("report", missing),
        lambda: app.insert_many(report.new(), [{"month": "nov"}, {"region": "us"}]),
        lambda: app.sync.insert_many(report.new(), [{"month": "nov"}, {}]),
        lambda: report.enqueue_many([{"month": "nov"}, {"draft": True}]),
        lambda: app.batch([spec]),
        lambda: app.schedule("monthly", "0 3 1 * *", "report", missing),
        lambda: app.sync.schedule("monthly", "0 3 1 * *", report, {"draft": True}),
    ):
        with pytest.raises(InvalidJobError) as raised:
            made = insert()
            if inspect.isawaitable(made):
                await made
        assert raised.value.field.endswith('["month"]'), raised.value
        assert str(raised.value).endswith(": is missing: report() requires it")
    assert await count_jobs() == 0
    assert await app.schedules() == []

    # What the function takes goes in, a template's args included.
    template = report.new({"region": "us"})
    ids = await app.insert_many(template, [{"month": "nov"}, {"month": "dec", "draft": True}])
    assert len(ids) == 2
    assert (await report.enqueue({"month": "nov", "draft": True})).args["draft"] is True


async def test_a_function_taking_any_keyword_is_only_checked_for_what_it_needs(
    app: Shigoto, count_jobs
) -> None:
    @app.worker(name="flexible")
    def flexible(user: int, **rest: Any) -> None: ...

    @app.worker(name="anything")
    def anything(*args: Any, **kwargs: Any) -> None: ...

    assert (await flexible.enqueue({"user": 1, "whatever": [1]})).args["whatever"] == [1]
    assert (await anything.enqueue({"x": 1})).args == {"x": 1}
    with pytest.raises(InvalidJobError, match=r'^args\["user"\]: is missing'):
        await flexible.enqueue({"whatever": 1})
    assert await count_jobs() == 2


def test_a_function_whose_parameter_no_keyword_can_fill_is_refused_when_registered() -> None:
    app = Shigoto(dsn="postgresql://unused")
    with pytest.raises(ConfigurationError, match="positional-only parameter 'month'"):

        @app.worker
        def report(month: str, /) -> None: ...

    # A worker declared with cron= fires with no args: it must need none.
    with pytest.raises(ConfigurationError, match=r"report\(\) fires on cron= .* requires month"):

        @app.worker(cron="0 3 * * *")
        def report(month: str, region: str = "eu") -> None: ...

    assert len(app.workers) == 0


SIGNATURE_NAMES = ["month", "region", "draft", "regoin", "self", "args"]


@settings(max_examples=200, deadline=None)
@given(args=st.dictionaries(st.sampled_from(SIGNATURE_NAMES), st.integers(), max_size=6))
def test_a_job_is_made_exactly_when_the_function_could_be_called_with_its_args(
    args: dict[str, int],
) -> None:
    app = Shigoto(dsn="postgresql://unused")

    @app.worker(name="report")
    def report(month: str, *extra: Any, region: str = "eu", draft: bool = False) -> None: ...

    try:
        inspect.signature(report.func).bind(**args)
        callable_with_them = True
    except TypeError:
        callable_with_them = False
    with manual(app) as recorded:
        try:
            app.sync.enqueue("report", args)
        except InvalidJobError as error:
            assert not callable_with_them, error
            assert error.field.startswith("args[")
        else:
            assert callable_with_them
            assert recorded.assert_enqueued(worker="report").args == args


durations = st.one_of(
    st.floats(),  # NaN and the infinities included
    st.integers(min_value=-(10**400), max_value=10**400),
    st.timedeltas(),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(seconds=durations)
def test_any_duration_is_taken_or_refused_with_a_shigoto_error(seconds: Any) -> None:
    """Wherever a duration goes, it is one a timestamp can be moved by, or a ShigotoError."""
    makers: list[tuple[str, Callable[[], object]]] = [
        ("scheduled_in", lambda: JobSpec.build("w", scheduled_in=seconds)),
        ("unique.period", lambda: Unique(period=seconds)),
        ("unique.debounce", lambda: Unique(debounce=seconds)),
        ("snooze", lambda: Snooze(seconds)),
        ("retry_after", lambda: RetryAfter(seconds)),
        ("every", lambda: Every(seconds)),
    ]
    for field, make in makers:
        if seconds is None and field.startswith(("unique", "scheduled")):
            continue  # None means "not given" there
        try:
            made = make()
        except ShigotoError as error:
            assert str(error).startswith(f"{field}: "), error
            continue
        if isinstance(made, JobSpec):
            assert made.scheduled_at is not None and made.scheduled_at.year < 2200
        elif isinstance(made, Every):
            assert made.after(datetime.now(UTC)).year < 2200


@pytest.mark.parametrize(
    "error",
    [
        InvalidJobError("args", "not JSON"),
        JobNotFoundError(7),
        UnknownWorkerError("emails.send"),
        DuplicateWorkerError("emails.send"),
        ResultNotStored("it is too big"),
        DatabaseUnavailable("the server went away", may_have_run=True),
        ConfigurationError("no DSN"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_read_the_same_after_pickling(error: Exception) -> None:
    """An error sent to another process (multiprocessing, a result store) is the same
    error there: same class, message and attributes."""
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert vars(again) == vars(error)
