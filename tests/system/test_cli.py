"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from procshare._bench import PACED_CALLS_PER_S
from procshare.managers import BaseManager
from tests._serve import serving


def run(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "procshare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_help_and_version() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("serve", "inspect", "demo", "bench"):
        assert command in out.stdout
    assert run("--version").stdout.startswith("procshare ")


def test_the_console_script_is_installed() -> None:
    script = pathlib.Path(sys.executable).with_name("procshare")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout


def test_demo_runs_the_seed_scenarios() -> None:
    out = run("demo")
    assert out.returncode == 0, out.stderr
    assert "0=0, 1=2, 2=4" in out.stdout  # workers filling a dict
    assert "[100, 101, 102, 103, 104, 300" in out.stdout  # two producers
    assert "list=[21, 22, 23, 24, 25]" in out.stdout  # twenty processes under a lock
    assert "pay: zhangsan:2000" in out.stdout  # the custom class
    assert "read the list 0 times" in out.stdout  # the push version of the data pool
    assert out.stdout.count("multiprocessing.Manager") >= 4  # each timed side by side


def test_bench_reports_both_managers_as_json() -> None:
    out = run("bench", "--quick", "--only", "dict set", "--only", "Lock acquire+release", "--json")
    assert out.returncode == 0, out.stderr
    results = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"dict set", "Lock acquire+release"} <= set(results)
    assert any(name.startswith("floor") for name in results)
    for name in ("dict set", "Lock acquire+release"):
        assert results[name]["stdlib_us"] > 0 and results[name]["procshare_us"] > 0
        assert results[name]["ratio"] == pytest.approx(
            results[name]["procshare_us"] / results[name]["stdlib_us"]
        )


def test_bench_measures_what_calls_cost_the_machine_flat_out_and_paced() -> None:
    rows = {
        "workers' progress while a client calls (per 1k)": "progress",
        f"workers' progress, {PACED_CALLS_PER_S:,} calls a second (per 1k)": "progress",
        f"CPU per dict set, {PACED_CALLS_PER_S:,} a second": "cpu",
    }
    only = [arg for name in rows for arg in ("--only", name)]
    out = run("bench", "--quick", *only, "--no-memory", "--json")
    assert out.returncode == 0, out.stderr
    results = {r["name"]: r for r in json.loads(out.stdout)}
    for name, kind in rows.items():
        assert results[name]["kind"] == kind
        assert results[name]["stdlib_us"] > 0 and results[name]["procshare_us"] > 0


def test_bench_runs_under_load_and_times_blocked_calls() -> None:
    case = "write seen by a blocked Queue.get"
    out = run("bench", "--quick", "--only", case, "--load", "0", "--load", "1", "--no-memory")
    assert out.returncode == 0, out.stderr
    assert "1 CPU-bound processes running" in out.stdout
    assert "side by side" in out.stdout and case in out.stdout.split("side by side")[1]


def test_bench_refuses_unknown_cases() -> None:
    out = run("bench", "--only", "teleport")
    assert out.returncode != 0 and "unknown case" in out.stderr


def test_serve_and_inspect(tmp_path: pathlib.Path) -> None:
    address = f"unix://{tmp_path}/cli.sock"
    env = dict(os.environ, PROCSHARE_AUTHKEY="cli-secret")
    with serving("--address", address, env=env):

        class Client(BaseManager):
            pass

        Client.register("Lock")
        m = Client(address=str(tmp_path / "cli.sock"), authkey=b"cli-secret")
        m.connect()
        lock = m.Lock()  # type: ignore[attr-defined]
        lock.acquire()
        shown = run("inspect", address, env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"held by pid {os.getpid()}" in shown.stdout
        as_json = json.loads(run("inspect", address, "--json", env=env).stdout)
        assert any(s["pid"] == os.getpid() for s in as_json["sessions"])
        denied = run("inspect", address, "--authkey", "wrong")
        assert denied.returncode != 0 and "AuthenticationError" in denied.stderr
        lock.release()


def test_serve_with_msgpack_takes_plain_data_from_unrelated_programs(
    tmp_path: pathlib.Path,
) -> None:
    pytest.importorskip("msgpack")
    address = f"unix://{tmp_path}/safe.sock"
    env = dict(os.environ, PROCSHARE_AUTHKEY="cli-secret")
    with serving("--address", address, "--serializer", "msgpack", env=env):

        class Client(BaseManager):
            pass

        Client.register("dict")
        safe = Client(
            address=str(tmp_path / "safe.sock"), authkey=b"cli-secret", serializer="msgpack"
        )
        safe.connect()
        d = safe.dict({"job": (1, 2)})  # type: ignore[attr-defined]
        assert d["job"] == (1, 2)
        shown = run("inspect", address, "--serializer", "msgpack", env=env)
        assert shown.returncode == 0 and "dict" in shown.stdout, shown.stderr
        refused = run("inspect", address, env=env)  # (asks for pickle)
        assert refused.returncode != 0 and "it accepts 'msgpack'" in refused.stderr


def test_serve_on_host_port_listens_on_tcp() -> None:
    env = dict(os.environ, PROCSHARE_AUTHKEY="cli-secret")
    with serving("--address", "127.0.0.1:0", env=env) as served:
        assert served.url.startswith("tcp://127.0.0.1:"), served.url
        port = int(served.url.rsplit(":", 1)[1])
        shown = run("inspect", f"127.0.0.1:{port}", env=env)
        assert shown.returncode == 0, shown.stderr


def test_errors_are_one_line_and_the_traceback_is_for_debug() -> None:
    env = dict(os.environ, PROCSHARE_AUTHKEY="cli-secret")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run("serve", "--address", f"127.0.0.1:{port}", env=env)
        assert taken.returncode == 1
        assert taken.stderr == (
            f"procshare: cannot listen on tcp://127.0.0.1:{port}: address already in use\n"
        )
    nobody = run("inspect", f"127.0.0.1:{port}", env=env)
    assert nobody.returncode == 1 and len(nobody.stderr.splitlines()) == 1, nobody.stderr
    assert nobody.stderr.startswith("procshare: ServerRefused: ")
    debug = run("--debug", "inspect", f"127.0.0.1:{port}", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_the_authkey_from_a_file_and_the_address_from_the_environment(
    tmp_path: pathlib.Path,
) -> None:
    keyfile = tmp_path / "authkey"
    keyfile.write_text("from-a-file\n")
    keyfile.chmod(0o600)
    address = f"unix://{tmp_path}/keyed.sock"
    env = {k: v for k, v in os.environ.items() if k != "PROCSHARE_AUTHKEY"}
    with serving("--address", address, "--authkey-file", str(keyfile), env=env):
        shown = run("inspect", "--authkey-file", str(keyfile), env=dict(env, PROCSHARE_URL=address))
        assert shown.returncode == 0 and "sessions" in shown.stdout, shown.stderr
        missing = run("inspect", "--authkey-file", str(tmp_path / "nope"), address, env=env)
        assert missing.returncode == 1 and "cannot read the authkey file" in missing.stderr
        listed = run("inspect", env=env)  # no address: this user's running servers
        assert listed.returncode == 0 and f"unix://{tmp_path}/keyed.sock" in listed.stdout


def test_serve_logs_at_the_level_asked(tmp_path: pathlib.Path) -> None:
    env = dict(os.environ, PROCSHARE_AUTHKEY="cli-secret")
    address = f"unix://{tmp_path}/logged.sock"
    with serving("--address", address, "--log-level", "INFO", env=env, capture_stderr=True) as s:
        pass
    assert "procshare.server INFO: serving at unix://" in s.stderr, s.stderr
    assert "procshare.server INFO: stopped serving at" in s.stderr, s.stderr
