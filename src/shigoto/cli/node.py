"""Running a node: `shigoto worker`, `serve` (a node until a signal), the event loop.

    shigoto worker myapp:app --queues default=10,emails=5

    run_on_fastest_loop(serve(app))   # the same from your own script

The first SIGTERM or SIGINT stops gracefully; a second one stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer

from shigoto.app import Shigoto
from shigoto.cli.console import EXPECTED, fail
from shigoto.cli.context import load_app
from shigoto.cli.logs import configure_logging
from shigoto.cli.root import cli
from shigoto.config import parse_queues

T = TypeVar("T")

logger = logging.getLogger("shigoto.cli")


@cli.command()
def worker(
    app: Annotated[str, typer.Argument(help="Your application, as module:attribute.")],
    queues: Annotated[
        str | None,
        typer.Option(help="Queues and their concurrency, e.g. default=10,emails=5."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a node: claim and run jobs until SIGTERM or SIGINT (a second one stops at once)."""
    configure_logging(log_level)
    try:
        shigoto = load_app(app)
        chosen = parse_queues(queues) if queues else None
        run_on_fastest_loop(serve(shigoto, chosen))
    except EXPECTED as error:
        raise fail(error) from None
    _exit_despite_stuck_threads()


async def serve(app: Shigoto, queues: dict[str, int] | None = None) -> None:
    """Run the app's node until a signal; the first stops gracefully, the second at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(name: str) -> None:
        if not stop.is_set():
            logger.info("%s: stopping gracefully (send it again to stop at once)", name)
            stop.set()
        elif app.node is not None:
            logger.warning("%s: stopping now; running jobs go back to the queue", name)
            app.node.hurry()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await app.start(queues=queues)
        await stop.wait()
        await app.stop()
    finally:
        await app.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_on_fastest_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it is installed (the `fast` extra): a busy node spends
    about a tenth less CPU per job on it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _exit_despite_stuck_threads() -> None:
    """A sync job that ignored its timeout still holds a thread; the interpreter would wait
    for it forever at exit. Its job was already returned to the queue, so leave."""
    stuck = [t for t in threading.enumerate() if t.name.startswith("shigoto-sync") and t.is_alive()]
    if stuck:
        logger.warning("leaving %d sync job thread(s) behind", len(stuck))
        logging.shutdown()
        os._exit(0)
