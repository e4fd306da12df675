"""What commands print: stdout and stderr consoles, one-line errors, ages of moments.

    from shigoto.cli.console import fail, out

    out.print("done")
    raise fail("no job with id 7")    # `error: no job with id 7` on stderr, exit status 1

Output is plain text: markup in a name from the database is printed as it is.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Container, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import typer
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from shigoto.outcomes import DatabaseUnavailable, ShigotoError


class _Output(Console):
    """stdout. A reader that went away (`shigoto jobs list | head -1`) silences it instead
    of failing the command: what the command did (an insert, say) is done by then."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        # Or the interpreter's own flush at exit would fail on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# Markup, emoji codes and highlighting off: names and tags from the database are shown as
# they are (a queue named "[/x]" would otherwise crash the command, "[link=...]" make a link).
out = _Output(markup=False, emoji=False, highlight=False)
# soft_wrap: an error stays one line, however narrow the terminal (the terminal wraps it).
err = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)


# What a command reports as one line rather than a traceback: bad input, a database that
# cannot be reached or refuses a statement.
EXPECTED = (ShigotoError, psycopg.Error)


T = TypeVar("T")


def json_lines(items: Iterable[T], document: Callable[[T], dict[str, Any]]) -> None:
    """A listing's `--json`: one JSON object per line, one line per item."""
    for item in items:
        typer.echo(json.dumps(document(item)))


def table(
    columns: Sequence[str], *, right: Container[str] = (), no_wrap: Container[str] = ()
) -> Table:
    """A listing's table: these columns, left-aligned but the `right` ones."""
    listing = Table(title_justify="left")
    for column in columns:
        justify: JustifyMethod = "right" if column in right else "left"
        listing.add_column(column, justify=justify, no_wrap=column in no_wrap)
    return listing


def fail(problem: object) -> typer.Exit:
    """Print `problem` as one red-labelled line on stderr; the exit to raise (status 1)."""
    if isinstance(problem, DatabaseUnavailable):
        text = f"database: {problem}"
    elif isinstance(problem, psycopg.Error):
        text = _database_error(problem)
    else:
        text = str(problem)
    err.print(Text.assemble(("error:", "red"), " ", " ".join(text.split())))
    return typer.Exit(1)


def _database_error(error: psycopg.Error) -> str:
    """What went wrong with the database, in one line: the server's main message (never its
    detail or context, which may quote a statement's values), or the client's first line."""
    primary = error.diag.message_primary
    lines = str(error).strip().splitlines()
    return f"database: {primary or (lines[0] if lines else type(error).__name__)}"


def age(moment: datetime | None) -> str:
    """How long ago `moment` was, shortly: '42s', '5m', '3h' (negative: still to come)."""
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if abs(seconds) < 120:
        return f"{seconds:.0f}s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def when(moment: datetime) -> str:
    """'5m ago' or 'in 5m'."""
    ago = age(moment)
    return f"in {ago.lstrip('-')}" if ago.startswith("-") else f"{ago} ago"
