"""pytest fixtures for suites that test code using shigoto.

# conftest.py
pytest_plugins = ["shigoto.pytest_plugin"]

@pytest.fixture
def shigoto_app():
    return myproject.jobs.app

def test_signup_sends_a_welcome_email(shigoto_manual):
    signup("a@b.c")
    shigoto_manual.assert_enqueued(worker="emails.welcome", args={"to": "a@b.c"})
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shigoto.app import Shigoto
from shigoto.testing import Recorder, inline, manual


@pytest.fixture
def shigoto_inline(shigoto_app: Shigoto) -> Iterator[None]:
    """Inserts run their job at once for the duration of the test."""
    with inline(shigoto_app):
        yield


@pytest.fixture
def shigoto_manual(shigoto_app: Shigoto) -> Iterator[Recorder]:
    """Inserts are recorded for the duration of the test; assert on the recorder."""
    with manual(shigoto_app) as recorder:
        yield recorder
