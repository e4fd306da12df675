"""The `shigoto` command: run a node, migrate, look at jobs, manage them, enqueue.

    shigoto worker myapp:app --queues default=10,emails=5
    shigoto migrate                     # SHIGOTO_DSN, or the embedded PostgreSQL
    shigoto status
    shigoto jobs list --state available --queue emails
    shigoto enqueue myapp.send_email --args '{"to": "a@b.c"}' --app myapp:app

Every admin command takes `--dsn` (or `SHIGOTO_DSN`) and `--schema`; `--app module:attr`
(or `SHIGOTO_APP`) loads your application instead, with its workers and configuration.
`python -m shigoto` is the same command.

What the database holds (queue, worker and schedule names, tags) is printed as plain text,
never read as rich markup; an error is one line on stderr and exit status 1.

Layout: `root` holds the `cli` group; each topic module adds its commands to it.
Running a node: `node` (`worker`, `serve`, the event loop), `logs` (logging set-up),
`demo`. Admin commands: `store` (migrate, status, prune), `jobs` (the `jobs` group and
`enqueue`), `schedules` (`cron`), `queues` (`queue pause/resume`). Their shared plumbing:
`console` (output, one-line errors, times), `options` (`--dsn`, `--schema`, `--app`),
`context` (`load_app`, the app a command works on). A new command goes in its topic's
module (or a new module imported below); commands are listed in `--help` in the order
they are registered, so the import order below is the help's order.
"""

from __future__ import annotations

# Imported for their commands, in the order `shigoto --help` lists them.
# isort: off
from shigoto.cli import store, jobs, schedules, queues, node, demo  # noqa: F401

# isort: on
from shigoto.cli.context import drop_current_directory, load_app
from shigoto.cli.node import run_on_fastest_loop, serve
from shigoto.cli.root import cli

__all__ = ["cli", "load_app", "main", "run_on_fastest_loop", "serve"]


def main() -> None:
    """Entry point of the `shigoto` console script, and of `python -m shigoto.cli`."""
    drop_current_directory()
    cli()
