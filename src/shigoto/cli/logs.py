"""Logging set-up for the commands that run a node (`worker`, `demo`).

    configure_logging("INFO")   # a plain format on stderr, unless logging is set up already

An app that set up logging itself keeps its handlers; only shigoto's level is set.
"""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Log shigoto's records at `level`; a handler on the root logger only if there is none
    (an app that set up logging keeps its own)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("shigoto").setLevel(level.upper())
