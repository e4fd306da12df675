"""Property tests over wide input spaces (DESIGN §7): random dependency graphs run in a
valid order or are refused as cycles; unique keys collide exactly when the chosen fields
are equal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from shigoto import InvalidJobError, JobSpec, JobState, Ref, Shigoto, Unique
from shigoto.testing import drain_queue

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], set[int]]:
    """A graph of up to 10 jobs where job i may depend on any j < i (so no cycle), and
    some jobs that fail (discarded)."""
    size = draw(st.integers(1, 10))
    edges = [
        sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(size)
    ]
    failing = draw(st.sets(st.integers(0, size - 1), max_size=2))
    return edges, failing


@pytest.fixture
async def graph_app(app: Shigoto) -> Shigoto:
    @app.worker(name="node", max_attempts=1)
    async def node(i: int, fail: bool) -> int:
        app.ran.append(i)  # type: ignore[attr-defined]
        if fail:
            raise RuntimeError(f"job {i} fails")
        return i

    return app


@SETTINGS
@given(graph=dags())
async def test_any_dag_runs_in_dependency_order_and_failures_cancel_downstream(
    graph_app: Shigoto, db, schema: str, graph: tuple[list[list[int]], set[int]]
) -> None:
    edges, failing = graph
    app = graph_app
    await db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "jobs")))
    app.ran = []  # type: ignore[attr-defined]
    specs = [
        app.new_job("node", {"i": i, "fail": i in failing}, depends_on=[Ref(j) for j in deps])
        for i, deps in enumerate(edges)
    ]
    jobs = await app.insert_all(specs)
    await drain_queue(app, "default")
    final = [await app.get_job(job.id) for job in jobs]
    order = {i: position for position, i in enumerate(app.ran)}  # type: ignore[attr-defined]

    # Which jobs can run: those whose every ancestor completed.
    doomed: set[int] = set()
    for i, deps in enumerate(edges):
        if any(j in failing or j in doomed for j in deps):
            doomed.add(i)
    for i, (job, deps) in enumerate(zip(final, edges, strict=True)):
        assert job is not None
        if i in doomed:
            assert job.state is JobState.CANCELLED and i not in order
            assert job.errors[-1]["error"] == "DependencyFailed"
        else:
            assert job.state is (JobState.DISCARDED if i in failing else JobState.COMPLETED)
            assert all(order[j] < order[i] for j in deps)  # after all its dependencies


@SETTINGS
@given(
    size=st.integers(2, 8),
    extra=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=4),
)
async def test_a_graph_with_a_cycle_is_refused_and_nothing_is_written(
    app: Shigoto, size: int, extra: list[tuple[int, int]]
) -> None:
    # A ring through all jobs, plus random extra edges: always at least one cycle.
    deps: list[set[int]] = [{(i + 1) % size} for i in range(size)]
    for a, b in extra:
        deps[a % size].add(b % size)
    specs = [
        JobSpec.build("node", {"i": i}, depends_on=[Ref(j) for j in deps[i]]) for i in range(size)
    ]
    with pytest.raises(InvalidJobError, match="cycle"):
        await app.insert_all(specs)
    assert (await app.list_jobs()).jobs == []


field_values = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", ""]), st.none())


@SETTINGS
@given(
    first=st.dictionaries(st.sampled_from(["user", "day", "n"]), field_values, max_size=3),
    second=st.dictionaries(st.sampled_from(["user", "day", "n"]), field_values, max_size=3),
    queues=st.tuples(st.sampled_from(["q1", "q2"]), st.sampled_from(["q1", "q2"])),
    keys=st.sampled_from(
        [
            ["worker", "args"],
            ["worker"],
            ["worker", "queue"],
            ["args.user"],
            ["args.user", "args.day"],
        ]
    ),
)
async def test_unique_jobs_collide_exactly_when_their_chosen_fields_are_equal(
    app: Shigoto,
    db,
    schema: str,
    first: dict[str, Any],
    second: dict[str, Any],
    queues: tuple[str, str],
    keys: list[str],
) -> None:
    await db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "jobs")))
    unique = Unique(keys=keys)
    a = await app.insert(JobSpec.build("w", first, queue=queues[0], unique=unique))
    b = await app.insert(JobSpec.build("w", second, queue=queues[1], unique=unique))

    def chosen(args: dict[str, Any], queue: str) -> list[Any]:
        fields = {"worker": "w", "queue": queue, "args": args}
        return [fields[k] if k in fields else args.get(k[5:]) for k in sorted(keys)]

    same = chosen(first, queues[0]) == chosen(second, queues[1])
    assert b.conflict is same
    assert (b.id == a.id) is same
