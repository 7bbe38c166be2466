"""The suite's own rules: the unit tier starts no process; consoles and the test Slurm leave no
process behind them."""

import subprocess
import sys

import pytest


def test_a_unit_test_that_starts_a_process_fails_saying_so():
    with pytest.raises(AssertionError, match="a unit test started a process: .*'true'"):
        subprocess.run(["true"])
    with pytest.raises(AssertionError, match="a unit test started a process"):
        subprocess.Popen([sys.executable, "-c", "pass"])
