"""The seed tutorial's examples run on procshare with only the import changed.

``tests/seed_examples`` is a copy of ``../shared/acceptance`` (CI runs from a clean clone, where
the shared folder may be absent); when the shared folder is present, the copy must match it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parents[1] / "seed_examples"
SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "acceptance"


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_seed_examples_pass(method: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(HERE / "run.py"), "--start-method", method],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 passed, 0 failed" in proc.stdout


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/acceptance is not in this checkout")
def test_the_copy_matches_the_shared_examples() -> None:
    for shared in sorted(SHARED.iterdir()):
        assert (HERE / shared.name).read_bytes() == shared.read_bytes(), shared.name
