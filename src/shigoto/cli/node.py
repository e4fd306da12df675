"""Running a node: `shigoto worker`, `serve` (a node until a signal), the event loop.

    shigoto worker myapp:app --queues default=10,emails=5
    shigoto worker myapp:app --log-format json --metrics-port 9100

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
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from shigoto.app import Shigoto
from shigoto.cli.console import EXPECTED, fail
from shigoto.cli.context import load_app
from shigoto.cli.logs import configure_logging
from shigoto.cli.root import cli
from shigoto.config import parse_queues
from shigoto.outcomes import ConfigurationError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

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
    log_format: Annotated[
        str, typer.Option(help="Log lines as text, or json (one object per line).")
    ] = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port (needs the prometheus extra).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a node: claim and run jobs until SIGTERM or SIGINT (a second one stops at once)."""
    if log_format not in ("text", "json"):
        raise fail(f"--log-format: expected text or json, got {log_format!r}")
    configure_logging(log_level, log_format)
    server = None
    try:
        shigoto = load_app(app)
        chosen = parse_queues(queues) if queues else None
        if metrics_port is not None:
            server = _serve_metrics(shigoto, metrics_port)
        run_on_fastest_loop(serve(shigoto, chosen))
    except EXPECTED as error:
        raise fail(error) from None
    finally:
        if server is not None:
            server.shutdown()
    _exit_despite_stuck_threads()


def _serve_metrics(app: Shigoto, port: int) -> WSGIServer:
    """Count the app's jobs and serve them for Prometheus from a thread (every path)."""
    try:
        from shigoto.contrib.prometheus import instrument
    except ImportError:
        raise ConfigurationError(
            "--metrics-port: needs prometheus-client: pip install 'shigoto[prometheus]'"
        ) from None
    try:
        server = instrument(app).start_http_server(port)
    except OSError as error:
        raise ConfigurationError(
            f"--metrics-port: cannot listen on port {port}: {error.strerror or error}"
        ) from None
    logger.info("serving Prometheus metrics on port %d", server.server_port)
    return server


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
