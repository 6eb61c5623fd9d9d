"""CPython's own manager tests (the installed interpreter's ``test`` package) pass on procshare.

They run in a subprocess per start method (``cpython_managers``), with
``multiprocessing.managers`` replaced by procshare's, as a drop-in user would.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

HAS_TESTS = importlib.util.find_spec("test._test_multiprocessing") is not None


@pytest.mark.skipif(not HAS_TESTS, reason="this interpreter has no test package")
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_cpythons_manager_tests_pass(start_method: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.conformance.cpython_managers"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PROCSHARE_CPYTHON_TESTS=start_method),
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    report = out.stdout[-6000:] + out.stderr[-3000:]
    assert out.returncode == 0, report
    ran = [line for line in out.stdout.splitlines() if line.startswith("ran ")]
    assert ran and int(ran[-1].split()[1].rstrip(",")) > 50, report  # (they did run)
