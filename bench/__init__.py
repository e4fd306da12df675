"""shigoto's benchmarks: `python -m bench insert` (more sub-commands as features land).

Figures are JSON on stdout. The database is `--dsn`, else SHIGOTO_DSN, else the embedded
server; every run works in a fresh schema and drops it afterwards.
"""
