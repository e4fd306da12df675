"""`python -m shigoto`: the `shigoto` command.

    python -m shigoto worker myapp:app

`python -m` puts the current directory first on `sys.path`. It is taken out before the
command imports anything more (what `shigoto.cli.main` does for `python -m shigoto.cli`),
so that a file there named like a library (`uvloop.py`) is not imported in its place;
your app is still found there, after the installed packages.
"""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from shigoto.cli import cli

cli()
