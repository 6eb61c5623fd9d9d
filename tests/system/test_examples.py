"""The examples in ``examples/`` run and do what they say."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> list[str]:
    """Run ``examples/<name>`` as a user would; its output lines."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_data_pool_watch_prints_every_number_as_it_arrives() -> None:
    lines = run_example("data_pool_watch.py")
    got = [int(line.split()[-1]) for line in lines if line.startswith("C got")]
    numbers = [*range(100, 105), *range(300, 309)]
    assert sorted(got) == numbers  # each one, once
    assert [n for n in got if n < 300] == list(range(100, 105))  # A's in A's order
    assert [n for n in got if n >= 300] == list(range(300, 309))  # B's in B's order
    assert lines[-1] == str(numbers)


def test_counters_reach_the_exact_count_both_ways() -> None:
    lines = run_example("counters.py")
    assert [line.split("count=")[1].split()[0] for line in lines[:2]] == ["2000", "2000"]
    assert lines[2] == "pipelined 1000 items; d[999] = 998001"
