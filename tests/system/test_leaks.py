"""Nothing leaks: dead processes' objects, reference cycles, a long run of comers and goers."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare._bench import _rss_kib

FORK = multiprocessing.get_context("fork")
DELAY = 0.1


@pytest.fixture
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK, release_delay=DELAY) as manager:
        yield manager


def settle(manager: procshare.SyncManager) -> int:
    """Let references drain and the cycle collector run twice; return how many objects the
    server still has (those held only inside other objects included, unlike the stdlib's
    ``_number_of_objects``, which counts what client proxies hold)."""
    gc.collect()
    channel = manager._channel()
    for _ in range(2):
        time.sleep(3 * DELAY)
        channel.control("collect")
    time.sleep(3 * DELAY)
    return len(manager.stats()["objects"])


def table(manager: procshare.SyncManager) -> list[dict[str, Any]]:
    """The server's objects, for a failure message."""
    return manager.stats()["objects"]  # type: ignore[no-any-return]


def test_a_list_containing_itself_is_freed(m: procshare.SyncManager) -> None:
    b = m.list()
    b.append(b)
    del b
    assert settle(m) == 0, table(m)


def test_objects_holding_each_other_are_freed(m: procshare.SyncManager) -> None:
    a, b = m.dict(), m.dict()
    a["other"] = b
    b["other"] = a
    a["payload"] = m.list(range(100))  # hangs off the cycle
    del a, b
    assert settle(m) == 0, table(m)


def test_a_cycle_someone_still_holds_is_kept(m: procshare.SyncManager) -> None:
    a = m.list()
    a.append(a)
    holder = m.dict(cycle=m.list([m.list([1])]))
    assert settle(m) >= 2
    assert a[0][0][0] is not None  # still there, through itself
    assert holder["cycle"][0][:] == [1]


def test_objects_of_dead_processes_are_freed(m: procshare.SyncManager) -> None:
    shared = m.dict()
    before = settle(m)
    for how in ("exit", "kill"):
        p = FORK.Process(target=_make_garbage, args=(shared, how))
        p.start()
        if how == "kill":
            time.sleep(1.0)
            os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    assert settle(m) == before + 1  # what the child stored in `shared` stays; the rest is gone
    assert len(shared) == 1


def _make_garbage(shared: Any, how: str) -> None:
    shared["kept"] = _create(shared, "dict")  # held by a live object: must survive the child
    junk = [_create(shared, "list") for _ in range(20)]  # held only by this process
    assert len(junk) == 20
    if how == "kill":
        time.sleep(60)


def _create(proxy: Any, typeid: str) -> Any:
    """Create a shared object from a child that only has a proxy (no manager object)."""
    from procshare._protocol import Create

    return proxy._channel().request(Create(0, typeid, (), None, 0))


def _churn(d: Any, lst: Any, lock: Any, rounds: int) -> None:
    for i in range(rounds):
        with lock:
            d[i % 10] = list(range(50))
        lst.append(i)
        junk = [_create(d, "dict") for _ in range(3)]
        del junk


@pytest.mark.slow
def test_server_memory_stays_flat_over_processes_that_come_and_go(
    m: procshare.SyncManager,
) -> None:
    d, lst, lock = m.dict(), m.list(), m.Lock()
    baseline_objects = settle(m)
    rss: list[int] = []
    for wave in range(12):
        killing = wave % 3 == 2  # every third wave, kill one mid-way
        procs = [
            # (the one to kill churns until killed: a short one may be done and reaped by then)
            FORK.Process(target=_churn, args=(d, lst, lock, 10**6 if killing and n == 0 else 30))
            for n in range(6)
        ]
        for p in procs:
            p.start()
        if killing:
            time.sleep(0.05)
            os.kill(procs[0].pid, signal.SIGKILL)
        for p in procs:
            p.join(60)
        lst.clear()
        assert settle(m) == baseline_objects, table(m)
        rss.append(_rss_kib(m._process.pid))
    # No steady growth: the second half uses no more memory than the first half's peak + slack.
    assert max(rss[6:]) <= max(rss[:6]) + 4096, rss
