"""The app a command works on: yours (`--app module:attr`), or one for `--dsn`/`--schema`.

    with open_app(dsn, schema, app) as shigoto:
        print(shigoto.sync.status())

Errors on the way (bad input, a database that cannot be reached) exit with one line.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shigoto.app import Shigoto
from shigoto.cli.console import EXPECTED, fail
from shigoto.outcomes import ConfigurationError


def load_app(target: str) -> Shigoto:
    """Import `module:attribute` (from the current directory too) and return the app."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app: expected module:attribute, got {target!r}")
    _current_directory_last()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"--app: cannot import {module_name!r}: {error}") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, Shigoto):
        raise ConfigurationError(f"--app: {target!r} is not a shigoto.Shigoto instance")
    return app


def _current_directory_last() -> None:
    """Let your modules in the current directory be imported, after installed ones: a file
    there named like a library (`uvloop.py`) must not replace it. (`python -m` puts the
    current directory first: `main` takes it out before this runs.)"""
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def drop_current_directory() -> None:
    """Take out the current directory that `python -m` (or `-c`) put first on `sys.path`;
    `load_app` puts it back, last."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


@contextmanager
def open_app(dsn: str | None, schema: str | None, app: str | None = None) -> Iterator[Shigoto]:
    """The app a command works on, closed after; errors (bad input, a database that cannot
    be reached) become one red line and exit status 1."""
    if not logging.getLogger().handlers:
        # No logging set up: the pool's warnings (one per failed connection attempt) would
        # go to stderr around that one line, which says what failed.
        logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        if app is not None:
            if dsn is not None or schema is not None:
                raise ConfigurationError("--app: give --app, or --dsn/--schema, not both")
            shigoto = load_app(app)
        else:
            # Only what was given: schema=None would be a value, not "the default".
            given: dict[str, Any] = {} if schema is None else {"schema": schema}
            shigoto = Shigoto(dsn=dsn, **given)
        try:
            yield shigoto
        finally:
            shigoto.sync.close()
    except EXPECTED as error:
        raise fail(error) from None
