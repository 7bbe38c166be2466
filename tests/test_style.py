"""The code keeps the project's style: ruff's lint and import order, as configured in
pyproject.toml, over every Python file (the unit tier runs it, so CI keeps it)."""

import subprocess
from pathlib import Path

import pytest
from ruff.__main__ import find_ruff_bin

REPO = Path(__file__).resolve().parent.parent
RUFF = find_ruff_bin()


@pytest.mark.tool(RUFF)
def test_ruff_finds_nothing():
    result = subprocess.run([RUFF, "check", "--no-cache", "--output-format", "concise", str(REPO)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

