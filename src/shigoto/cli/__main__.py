"""`python -m shigoto.cli`: the `shigoto` command (as `python -m shigoto`)."""

from shigoto.cli import main

main()
