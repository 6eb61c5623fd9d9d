"""Reads granted with a lock, across real processes: faster, and never a stale answer.

``with lock: x = v.value`` asks, from its second time on, for ``v.value`` with the grant; the
read is then answered locally. These tests check that it is (the server counts no call for
it), and above all that a leased read never misses a write that finished before it began:
not another process's made without the lock, not the holder's own, not one made after the
lock was freed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import procshare
from tests import _children
from tests._threads import run_threads


def _calls(manager: Any) -> int:
    return int(manager._channel().control("stats")["counters"]["calls"])


def _learn(lock: Any, *reads: Callable[[], Any]) -> None:
    """Hold ``lock`` once, making ``reads``: the next grant brings them along."""
    with lock:
        for read in reads:
            read()


def test_the_reads_of_the_last_hold_come_with_the_grant(manager: Any) -> None:
    v, d, lock = manager.Value("i", 7), manager.dict(k="x"), manager.Lock()
    _learn(lock, lambda: v.value, lambda: d["k"], lambda: d.get("missing"))
    channel = v._channel()
    if channel.leases is None:
        pytest.skip("leases are off on this platform")
    with lock:
        before = _calls(manager)
        assert (v.value, d["k"], d.get("missing")) == (7, "x", None)
        assert (v.value, d["k"]) == (7, "x")  # a lease answers as often as asked
        assert _calls(manager) == before  # no call reached the server
    v.value = 8
    with lock:
        assert v.value == 8


def _write_then_tell(v: Any, conn: Any) -> None:
    v.value = 42
    conn.send("written")


def test_a_write_made_without_the_lock_is_seen_once_known(manager: Any, run: Any) -> None:
    """Linearizability: the child's write finishes, then it tells us through a pipe that the
    server never sees; our next read, though leased, must return it."""
    v, lock = manager.Value("i", 0), manager.Lock()
    _learn(lock, lambda: v.value)
    ours, theirs = procshare.Pipe()
    with lock:
        assert v.value == 0  # leased
        run(_write_then_tell, v, theirs)
        assert ours.recv() == "written"
        assert v.value == 42


def test_the_holders_own_writes_are_read_back(manager: Any) -> None:
    v, d, lock = manager.Value("i", 0), manager.dict(k=0), manager.Lock()
    _learn(lock, lambda: v.value, lambda: d["k"])
    for i in range(1, 20):
        with lock:
            assert v.value == i - 1 and d["k"] == i - 1
            v.value = i
            d["k"] = i
            assert v.value == i and d["k"] == i


def test_a_value_leased_with_a_lock_and_changed_after_its_release_is_read_afresh(
    manager: Any, run: Any
) -> None:
    """A lease outlives the hold (it depends on its object only): the change must end it."""
    v, lock = manager.Value("i", 0), manager.Lock()
    _learn(lock, lambda: v.value)
    lock.acquire()
    assert v.value == 0
    lock.release()
    run(_children.set_value, v, 5)
    assert v.value == 5
    # released behind our back, by another process (a plain Lock allows it)
    lock.acquire()
    assert v.value == 5
    run(_children.release_lock, lock)
    run(_children.set_value, v, 6)
    assert v.value == 6


def test_a_change_made_during_a_condition_wait_is_seen_after_it(manager: Any, run: Any) -> None:
    v, lock = manager.Value("i", 0), manager.RLock()
    cond = manager.Condition(lock)
    _learn(lock, lambda: v.value)
    with lock:
        assert v.value == 0
        done = threading.Event()

        def notifier() -> None:
            with cond:
                v.value = 3
                cond.notify()
            done.set()

        t = threading.Thread(target=notifier)
        t.start()
        assert cond.wait(timeout=30)
        assert v.value == 3
    t.join(30)
    assert done.is_set()


def test_locked_counters_are_exact_across_processes(manager: Any, ctx: Any) -> None:
    v, lock = manager.Value("i", 0), manager.Lock()
    d = manager.dict(n=0)
    workers = [
        ctx.Process(target=_children.locked_read_modify_write, args=(v, d, lock, 300))
        for _ in range(4)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    assert v.value == 1200 and d["n"] == 1200


def test_threads_sharing_a_connection_and_a_lock_stay_exact(manager: Any) -> None:
    v, lock = manager.Value("i", 0), manager.Lock()
    other = manager.Lock()

    def work(lk: Any) -> None:
        for _ in range(200):
            with lk:
                v.value = v.value + 1

    run_threads(work, [(lock,)] * 3)
    assert v.value == 600
    # two locks held one inside the other: each release ends what it must
    with lock:
        x = v.value
        with other:
            assert v.value == x
            v.value = x + 1
        assert v.value == x + 1


def test_tcp_connections_acquire_plainly_and_stay_correct() -> None:
    with procshare.Manager(address=("127.0.0.1", 0)) as m:
        v, lock = m.Value("i", 0), m.Lock()
        assert v._channel().leases is None
        for _ in range(5):
            with lock:
                v.value = v.value + 1
        assert v.value == 5


class _PlainLockManager(procshare.managers.BaseManager):
    pass


class _UserLock:
    """A lock class of the user's: run on the server's worker threads, not one of its kinds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


_PlainLockManager.register("Lock", _UserLock, procshare.managers.AcquirerProxy)
_PlainLockManager.register("Value", procshare.managers.Value, procshare.managers.ValueProxy)


def test_a_custom_lock_type_declines_and_the_proxy_acquires_plainly() -> None:
    with _PlainLockManager() as m:
        lock, v = m.Lock(), m.Value("i", 1)
        for _ in range(3):
            with lock:
                assert v.value == 1
        if v._channel().leases is not None:
            assert lock._lease_reads is None  # declined once, never asked again


def test_reads_that_compare_equal_across_types_are_not_mixed_up(manager: Any) -> None:
    d, lock = manager.dict(), manager.Lock()
    _learn(lock, lambda: d.get("k", 0))
    with lock:
        assert d.get("k", 0) == 0
        assert d.get("k", False) is False
        assert d.get("k", 0.0) == 0.0 and type(d.get("k", 0.0)) is float
