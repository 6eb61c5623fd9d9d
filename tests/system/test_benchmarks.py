"""The scripts in benchmarks/ run, as a user runs them (tiny sizes: correctness, not speed)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).parents[2] / "benchmarks"


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_floor() -> None:
    out = run("floor.py", "--n", "100", "--rounds", "1")
    assert "sleep in recv" in out and "busy-poll" in out


def test_a_short_program_phase_by_phase() -> None:
    out = run("startup.py", "--rounds", "1")
    rows = {line[:14].strip(): line.split()[-3:] for line in out.splitlines()[2:]}
    assert list(rows) == ["import", "start", "import + start", "pool", "shutdown", "program"]
    assert all(float(v) > 0 for values in rows.values() for v in values)


def test_where_a_call_goes_on_a_busy_machine() -> None:
    out = run("schedstat.py", "--load", "1", "--n", "200", "--rounds", "1")
    rows = {line[:14].strip(): line[14:].split() for line in out.splitlines()[2:8]}
    assert list(rows) == [
        "wall",
        "client cpu",
        "client runq",
        "server cpu",
        "server runq",
        "switches in",
    ], out
    assert all(float(v) >= 0 for values in rows.values() for v in values), out
    assert float(rows["client cpu"][1]) > 0 and float(rows["server cpu"][1]) > 0, out


def test_throughput_with_a_chart(tmp_path: pathlib.Path) -> None:
    chart = tmp_path / "chart.png"
    out = run(
        "throughput.py", "--clients", "1,2", "--ops", "200", "--rounds", "1", "--plot", str(chart)
    )
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_the_locked_counter_taken_apart() -> None:
    out = run("locked_counter.py", "--ops", "200", "--rounds", "1")
    assert "stdlib, locked" in out and "procshare, increment()" in out


@pytest.mark.parametrize("read", ["copy", "items"])
def test_whole_reads(read: str) -> None:
    out = run("whole_reads.py", "--sizes", "300", "--copies", "5", "--rounds", "1", "--read", read)
    assert f"each {read}()" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["300"]]
    assert len(rows) == 3 and all(float(row[-1]) > 0 for row in rows)


def test_the_server_path_in_one_process() -> None:
    out = run("server_path.py", "--calls", "300", "--rounds", "1", "--profile", "3")
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("dict")}
    assert set(rows) == {"set", "get"}
    assert all(float(row[2]) > 0 for row in rows.values())
    assert "function calls" in out


def test_the_server_profile_with_cprofile() -> None:
    out = run("profile_server.py", "--seconds", "0.3", "--top", "5", "--cprofile")
    assert "ops/s under cProfile" in out and "function calls" in out


@pytest.mark.parametrize("args", [["--quick", "--only", "dict set"]])
def test_run_all_is_procshare_bench(args: list[str]) -> None:
    out = run("run_all.py", *args)
    assert "dict set" in out and "floor" in out


def test_reads_made_again() -> None:
    out = run("leases.py", "--n", "200", "--rounds", "1")
    rows = {line[:24].strip(): line[24:].split() for line in out.splitlines()[1:]}
    assert set(rows) == {"poll", "poll, changing", "check, then lock", "v.value += 1"}
    assert all(len(row) == 3 and all(float(x) > 0 for x in row) for row in rows.values())


def test_bytecodes_per_operation() -> None:
    out = run("opcodes.py", "--calls", "100", "--only", "dict get", "--top", "3")
    row = next(line.split() for line in out.splitlines() if line.startswith("dict get"))
    stdlib_client, ours_client, stdlib_server, ours_server = (int(x) for x in row[2:])
    # both sides of both managers executed Python for each get (a server that served
    # nothing, or a tracer that counted nothing, shows 0)
    assert min(stdlib_client, ours_client, stdlib_server, ours_server) > 50, out
    functions = [line.split()[-1] for line in out.splitlines() if line.startswith("    ")]
    assert "_call" in functions or "run" in functions, out
