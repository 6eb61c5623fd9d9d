"""``timeout=`` / ``$PROCSHARE_TIMEOUT``: a stopped server makes a call fail, not hang; calls
that wait on the server wait as long as they ask to."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK, timeout=0.3) as manager:
        yield manager


def test_a_call_to_a_stopped_server_raises_a_timeout_error(m: procshare.SyncManager) -> None:
    d = m.dict(kept=1)
    pid = m._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(procshare.ServerUnreachable, match=r"did not answer within 0\.3 s"):
            d["x"] = 1
        with pytest.raises(TimeoutError):  # (and every later call on that connection, too)
            m.dict()
    finally:
        os.kill(pid, signal.SIGCONT)
    # The server goes on; a new connection reaches it.
    other = procshare.managers.SyncManager(address=m.address, authkey=bytes(m._authkey))
    other.connect()
    assert other.dict(a=1)["a"] == 1


def _hold(lock: Any, held: Any, seconds: float) -> None:
    with lock:
        held.set()
        time.sleep(seconds)


def test_calls_that_wait_on_the_server_wait_as_long_as_they_ask(m: procshare.SyncManager) -> None:
    q = m.Queue()
    with pytest.raises(queue.Empty):  # not TimeoutError: the server answered after 1 s
        q.get(timeout=1.0)
    lock, held = m.Lock(), FORK.Event()
    p = FORK.Process(target=_hold, args=(lock, held, 1.0))
    p.start()
    assert held.wait(30)
    assert lock.acquire()  # waited ~1 s, past the 0.3 s call timeout
    lock.release()
    p.join(30)
    event = m.Event()
    threading.Timer(0.8, event.set).start()
    assert event.wait()


def test_the_environment_sets_the_timeout_and_an_idle_watch_survives_it(
    m: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCSHARE_TIMEOUT", "0.2")
    with procshare.connect(f"unix://{m.address}", authkey=bytes(m._authkey)) as other:
        d = other.dict()
        assert other._channel().call_timeout == 0.2
        with d.watch() as changes:  # its push connection is quiet for longer than 0.2 s
            threading.Timer(0.6, d.__setitem__, ("k", 1)).start()
            change = changes.get(timeout=10)
        assert change.args == ("k", 1)


@pytest.mark.parametrize("bad", ["soon", "0", "-1"])
def test_a_bad_timeout_is_refused(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with procshare.Manager(ctx=FORK) as m:
        monkeypatch.setenv("PROCSHARE_TIMEOUT", bad)
        with pytest.raises(ValueError, match="PROCSHARE_TIMEOUT"):
            m.dict()
        monkeypatch.delenv("PROCSHARE_TIMEOUT")
    with pytest.raises(ValueError, match="positive"):
        procshare.managers.SyncManager(timeout=0)


def test_a_waiting_call_to_a_stopped_server_times_out_after_its_own_wait(
    m: procshare.SyncManager,
) -> None:
    q = m.Queue()
    pid = m._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(procshare.ServerUnreachable):
            q.get(timeout=0.5)  # 0.5 s of its own, then the 0.3 s call timeout
        assert time.monotonic() - started >= 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
