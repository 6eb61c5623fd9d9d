"""Connection files: ``procshare inspect`` lists this user's servers and attaches to one by pid,
embedded ``Manager()`` servers (random authkey) included; ``procshare top --once``."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare._discovery import running_servers

FORK = multiprocessing.get_context("fork")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROCSHARE_URL", "PROCSHARE_AUTHKEY")}
    return subprocess.run(
        [sys.executable, "-m", "procshare", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def _listed(pid: int) -> dict[str, Any]:
    """The server ``pid`` as its connection file has it (written as it starts serving)."""
    deadline = time.monotonic() + 30
    while not (found := [s for s in running_servers() if s["pid"] == pid]):
        assert time.monotonic() < deadline, "no connection file"
        time.sleep(0.01)
    (info,) = found
    return info


def _file_of(pid: int) -> pathlib.Path:
    """The connection file of the server ``pid``, which listens on a unix socket."""
    info = _listed(pid)
    path = pathlib.Path(info["address"].removeprefix("unix://")).parent / "server.json"
    assert path.exists()
    return path


def test_the_connection_file_is_private_and_goes_with_the_server() -> None:
    with procshare.Manager(ctx=FORK) as m:
        path = _file_of(m._process.pid)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        pid = m._process.pid
    assert not path.exists() and not path.parent.exists()
    assert all(s["pid"] != pid for s in running_servers())


def test_inspect_lists_servers_and_attaches_by_pid(m: procshare.SyncManager) -> None:
    pid = m._process.pid
    _file_of(pid)
    listing = run("inspect")
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[0] == str(pid) for line in listing.stdout.splitlines()[1:-1])
    m.named("config").dict({"mode": "run"})
    shown = run("inspect", str(pid))  # no authkey given: the connection file has it
    assert shown.returncode == 0, shown.stderr
    assert f"pid {pid}, up " in shown.stdout and "name='config'" in shown.stdout
    nobody = run("inspect", "1")  # (init: not a server of ours)
    assert nobody.returncode != 0 and "no server of yours runs as pid 1" in nobody.stderr


def test_top_once_shows_objects_clients_and_the_lock_holder(m: procshare.SyncManager) -> None:
    jobs = m.named("jobs").Queue()
    jobs.put("work")
    lock = m.Lock()
    lock.acquire()
    _file_of(m._process.pid)
    out = run("top", str(m._process.pid), "--once", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "OBJECTS (2)" in text and "CLIENTS (" in text
    row = next(line for line in text.splitlines() if line.startswith("jobs "))
    assert "Queue" in row and "size=1" in row
    assert f"held by pid {os.getpid()}" in text
    assert any(line.split()[:1] == [str(os.getpid())] for line in text.splitlines())
    lock.release()


def test_a_killed_servers_file_is_removed_by_the_next_server() -> None:
    killed = procshare.managers.SyncManager(ctx=FORK)
    killed.start()
    path = _file_of(killed._process.pid).parent
    os.kill(killed._process.pid, signal.SIGKILL)
    killed._process.join(30)  # (reaped: its pid is gone)
    assert path.exists()  # left behind
    assert all(s["pid"] != killed._process.pid for s in running_servers())
    with procshare.Manager(ctx=FORK):  # the next server cleans up
        assert not path.exists()
    killed.shutdown()


def test_top_draws_rich_tables_of_the_same_rows(m: procshare.SyncManager) -> None:
    rich_console = pytest.importorskip("rich.console")
    from procshare._top import render_rich

    m.named("jobs").Queue().put("work")
    before = m.stats()
    m.named("jobs").Queue().put("more")
    after = m.stats()
    console = rich_console.Console(record=True, width=140)
    console.print(render_rich(before, after, 1.0))
    text = console.export_text()
    assert "OBJECTS (1)" in text and "CLIENTS (" in text
    row = next(line for line in text.splitlines() if "jobs" in line)
    assert "Queue" in row and "size=2" in row
    assert str(os.getpid()) in text


def test_top_shows_where_tcp_clients_connect_from() -> None:
    with procshare.managers.SyncManager(address=("127.0.0.1", 0), ctx=FORK) as m:
        m.dict()
        assert _listed(m._process.pid)["address"].startswith("tcp://127.0.0.1:")
        out = run("top", str(m._process.pid), "--once", "--interval", "0.2")
        assert out.returncode == 0, out.stderr
        mine = next(
            line for line in out.stdout.splitlines() if line.split()[:1] == [str(os.getpid())]
        )
        assert "127.0.0.1" in mine, out.stdout
