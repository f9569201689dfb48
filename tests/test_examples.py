"""Every script in examples/ runs to completion as a user would run it (with reflectkit's files
in a directory of the test's own; tests/test_user_data.py checks that they write none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.usefixtures("throwaway_files")
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=script.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
