"""Job dependencies: who waits for whom, checked before anything is written.

    extract = work.new({"step": "extract"})
    load = work.new({"step": "load"}, depends_on=[extract])      # a spec of the same call
    report = work.new({"step": "report"}, depends_on=[Ref(1), 42])  # position 1, job 42
    await app.insert_all([extract, load, report])

A job with dependencies is inserted `waiting` and is released (available) once all of them
have completed; a dependency discarded or cancelled cancels it, with an error naming that
dependency, unless it was made with `on_dependency_failure="run"`. The database does the
releasing (`resolve_dependencies.sql`, run by every node's stager), so it holds across
nodes and restarts; waiting jobs never enter the claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shigoto.job import JobSpec, Ref
from shigoto.outcomes import InvalidJobError


@dataclass(frozen=True)
class Plan:
    """For each spec of a call: the existing job ids and the positions in the call it
    depends on."""

    existing: list[list[int]]
    local: list[list[int]]

    @property
    def named_ids(self) -> list[int]:
        return sorted({i for ids in self.existing for i in ids})

    @property
    def has_local(self) -> bool:
        return any(self.local)


def plan(specs: Sequence[JobSpec]) -> Plan:
    """Resolve every spec's dependencies; raises `InvalidJobError` on a reference outside
    the call, a unique job depending on the call, or a cycle."""
    position = {id(spec): i for i, spec in enumerate(specs)}
    existing: list[list[int]] = []
    local: list[list[int]] = []
    for i, spec in enumerate(specs):
        ids: list[int] = []
        here: list[int] = []
        for item in spec.depends_on:
            if isinstance(item, int):
                ids.append(item)
                continue
            j = position.get(id(item)) if isinstance(item, JobSpec) else item.position
            if j is None or j >= len(specs):
                raise InvalidJobError(
                    f"depends_on of job {i}",
                    "refers to a job that is not in this insert_all call",
                )
            here.append(j)
        if here and spec.unique is not None:
            raise InvalidJobError(
                f"depends_on of job {i}",
                "a unique job may depend on existing jobs only, not on jobs of the same call",
            )
        existing.append(ids)
        local.append(sorted(set(here)))
    _check_acyclic(local)
    return Plan(existing, local)


def _check_acyclic(local: list[list[int]]) -> None:
    """Depth-first search for a cycle among the jobs of one call."""
    state = [0] * len(local)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(local)):
        if state[start]:
            continue
        stack = [(start, iter(local[start]))]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state[child] == 1:
                path = [n for n, _ in stack]
                cycle = [*path[path.index(child) :], child]
                raise InvalidJobError(
                    "depends_on",
                    "the jobs at positions " + " -> ".join(map(str, cycle)) + " form a cycle",
                )
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(local[child])))


__all__ = ["Plan", "Ref", "plan"]
