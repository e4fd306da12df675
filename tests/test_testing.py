"""The helpers users test their own code with: inline and manual modes, the pytest plugin."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from shigoto import ConfigurationError, JobState, Shigoto, Snooze
from shigoto.testing import InlineJobFailed, inline, manual


@pytest.fixture
def workers(app: Shigoto):
    @app.worker(name="emails.send", queue="emails", tags=["mail"])
    async def send(to: str, extra: object = None) -> str:
        return f"sent to {to}"

    @app.worker(name="broken")
    async def broken() -> None:
        raise RuntimeError("boom")

    @app.worker(name="later")
    async def later() -> object:
        return Snooze(30)

    @app.worker(name="report")
    def report(month: str) -> str:
        return month.upper()

    return send, broken, later, report


async def test_inline_runs_the_job_at_once_and_writes_nothing(
    app: Shigoto, workers, count_jobs
) -> None:
    send, broken, later, _report = workers
    with inline(app):
        job = await send.enqueue({"to": "a@b.c"})
        assert (job.state, job.result, job.attempt) == (JobState.COMPLETED, "sent to a@b.c", 1)
        [snoozed] = await app.insert_all([later.new()])
        assert snoozed.state is JobState.SCHEDULED and snoozed.attempt == 0
        with pytest.raises(InlineJobFailed, match="job broken failed inline: RuntimeError: boom"):
            await broken.enqueue()
        done = await asyncio.to_thread(app.sync.enqueue, "report", {"month": "nov"})
        assert done.result == "NOV"
    assert await count_jobs() == 0


async def test_inline_from_sync_code_inside_an_event_loop_is_refused(app: Shigoto, workers) -> None:
    with inline(app), pytest.raises(ConfigurationError, match="inside a running event loop"):
        app.sync.enqueue("report", {"month": "nov"})


async def test_manual_records_inserts_for_assertions(app: Shigoto, workers, count_jobs) -> None:
    send, broken, _later, _report = workers
    with manual(app) as jobs:
        await send.enqueue({"to": "a@b.c", "extra": {"x": 1}})
        await send.enqueue({"to": "z@b.c"}, scheduled_in=60)
        app.sync.enqueue("report", {"month": "nov"})
        [many] = await app.insert_many(send.new(), [{"to": "many@b.c"}])

        assert jobs.assert_enqueued(args={"to": "many@b.c"}).id == many
        first = jobs.assert_enqueued(worker=send, args={"to": "a@b.c"})
        assert first.state is JobState.AVAILABLE and first.queue == "emails"
        assert jobs.assert_enqueued(worker="emails.send", args={"extra": {"x": 1}}) is first
        assert len(jobs.all_enqueued(worker=send)) == 3
        assert len(jobs.all_enqueued(state="scheduled", tags=["mail"])) == 1
        assert len(jobs.all_enqueued()) == 4
        jobs.refute_enqueued(worker=broken)
        with pytest.raises(AssertionError, match="no job enqueued matching worker='broken'"):
            jobs.assert_enqueued(worker="broken")
        with pytest.raises(AssertionError, match=r"3 job\(s\) enqueued matching"):
            jobs.refute_enqueued(queue="emails")
        jobs.reset()
        assert jobs.all_enqueued() == []
    assert await count_jobs() == 0
    await send.enqueue({"to": "real"})  # outside the block, jobs are written again
    assert await count_jobs() == 1


def test_modes_do_not_nest(app: Shigoto) -> None:
    with manual(app), pytest.raises(ConfigurationError, match="already active"), inline(app):
        pass


def test_the_pytest_plugin_gives_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        textwrap.dedent("""
            import pytest
            from shigoto import Shigoto

            pytest_plugins = ["shigoto.pytest_plugin"]
            app = Shigoto(dsn="postgresql://nowhere.invalid/none")

            @app.worker(name="greet")
            def greet(name: str) -> str:
                return "hi " + name

            @pytest.fixture
            def shigoto_app():
                return app
        """)
    )
    pytester.makepyfile(
        textwrap.dedent("""
            from conftest import app, greet

            def test_manual(shigoto_manual):
                app.sync.enqueue("greet", {"name": "ada"})
                shigoto_manual.assert_enqueued(worker=greet, args={"name": "ada"})

            def test_inline(shigoto_inline):
                assert app.sync.enqueue("greet", {"name": "bo"}).result == "hi bo"
        """)
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
