"""Every example in `examples/` runs to completion, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_runs(example: Path, dsn: str, schema: str) -> None:
    env = {**os.environ, "SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema}
    done = subprocess.run(
        [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_the_readme_example_runs(tmp_path: Path, dsn: str, schema: str) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = {**os.environ, "SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed sent 'Hi' to ada@example.com"
