"""Processes die holding things: nothing deadlocks, nothing is lost.

Real processes, really killed (SIGKILL), ``os._exit`` and uncaught exceptions. The server must
release what a dead process held and hand it to the next waiter within a second.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from tests import _children as children
from tests._holders import kill, start_holder

FORK = multiprocessing.get_context("fork")
RELEASED_WITHIN = 1.0  # seconds: the guarantee
WAIT = 10.0  # seconds: how long a test waits before calling it a deadlock


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK, release_delay=0.2) as manager:
        yield manager


@pytest.mark.parametrize("how", ["kill", "exit", "raise"])
def test_a_lock_held_by_a_dead_process_goes_to_the_next_waiter(
    m: procshare.SyncManager, how: str
) -> None:
    lock = m.Lock()
    holder = start_holder(children.hold_and_die, lock, how)
    got: list[float] = []
    waiter = threading.Thread(
        target=lambda: lock.acquire(timeout=WAIT) and got.append(time.monotonic())
    )
    waiter.start()
    time.sleep(0.1)  # the waiter is parked on the server
    died = kill(holder) if how == "kill" else _reap(holder)
    waiter.join(WAIT)
    assert got, "the waiter never got the lock: deadlock"
    assert got[0] - died < RELEASED_WITHIN
    lock.release()


def _reap(p: Any) -> float:
    p.join(WAIT)
    assert p.exitcode in (3, 4)
    return time.monotonic()


def test_an_rlock_held_twice_is_released_fully(m: procshare.SyncManager) -> None:
    rlock = m.RLock()
    holder = start_holder(children.hold_rlock_twice_and_wait, rlock)
    assert rlock.acquire(timeout=0.05) is False
    died = kill(holder)
    assert rlock.acquire(timeout=WAIT) is True
    assert time.monotonic() - died < RELEASED_WITHIN + 0.5
    rlock.release()
    assert rlock.locked() is False  # one release undid our one acquire: nothing left over


def test_semaphore_slots_of_a_dead_process_come_back(m: procshare.SyncManager) -> None:
    sem = m.BoundedSemaphore(2)
    holders = [start_holder(children.hold_semaphore_and_wait, sem) for _ in range(2)]
    assert sem.acquire(timeout=0.05) is False
    kill(holders[0])
    assert sem.acquire(timeout=WAIT) is True
    kill(holders[1])
    assert sem.acquire(timeout=WAIT) is True
    sem.release()
    sem.release()


def test_a_process_killed_inside_condition_wait(m: procshare.SyncManager) -> None:
    cond = m.Condition()
    waiter = start_holder(children.wait_in_condition, cond)
    time.sleep(0.1)  # inside wait(): the lock is released
    assert cond.acquire(timeout=WAIT)
    cond.release()
    kill(waiter)
    with cond:
        cond.notify_all()  # nobody to wake: must not hang or fail
    assert cond.acquire(timeout=WAIT)
    cond.release()


def test_a_process_killed_holding_a_condition_lock(m: procshare.SyncManager) -> None:
    lock = m.Lock()
    cond = m.Condition(lock)
    holder = start_holder(children.hold_and_die, lock, "sleep")
    kill(holder)
    with cond:
        assert cond.wait(0.01) is False


def test_a_queue_item_never_goes_to_a_dead_consumer(m: procshare.SyncManager) -> None:
    q = m.Queue()
    consumer = start_holder(children.block_on_get, q)
    time.sleep(0.2)  # parked in get()
    kill(consumer)
    q.put("precious")
    assert q.get(timeout=WAIT) == "precious"


def test_a_joinable_queue_redelivers_and_join_returns(m: procshare.SyncManager) -> None:
    q = m.JoinableQueue()
    q.put("job")
    consumer = start_holder(children.take_and_die, q)  # took the job, never task_done
    kill(consumer)
    assert q.get(timeout=WAIT) == "job"  # back again
    q.task_done()
    joined = threading.Thread(target=q.join)
    joined.start()
    joined.join(WAIT)
    assert not joined.is_alive()


def test_a_barrier_breaks_when_a_waiting_party_dies(m: procshare.SyncManager) -> None:
    barrier = m.Barrier(3)
    party = start_holder(children.party_and_die, barrier)
    outcome: list[str] = []

    def wait() -> None:
        try:
            barrier.wait(WAIT)
            outcome.append("passed")
        except threading.BrokenBarrierError:
            outcome.append("broken")

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    kill(party)
    t.join(WAIT)
    assert outcome == ["broken"]


def test_inspection_shows_who_holds_and_who_waits(m: procshare.SyncManager) -> None:
    lock = m.Lock()
    holder = start_holder(children.hold_and_die, lock, "sleep")
    waiting = threading.Thread(target=lambda: lock.acquire(timeout=WAIT) and lock.release())
    waiting.start()
    time.sleep(0.2)
    [obj] = [o for o in m.stats()["objects"] if o["id"] == lock._id]
    assert obj["state"]["holder"]["pid"] == holder.pid
    assert [w["pid"] for w in obj["state"]["waiters"]] == [os.getpid()]
    kill(holder)
    waiting.join(WAIT)
    [obj] = [o for o in m.stats()["objects"] if o["id"] == lock._id]
    assert obj["state"]["holder"] is None and obj["state"]["waiters"] == []


@pytest.mark.stress
@pytest.mark.parametrize("trial", range(100))
def test_kill_the_lock_holder_again_and_again(m: procshare.SyncManager, trial: int) -> None:
    lock = m.Lock() if trial % 2 else m.RLock()
    holder = start_holder(children.hold_and_die, lock, "sleep")
    kill(holder)
    assert lock.acquire(timeout=WAIT), f"trial {trial}: deadlock"
    lock.release()


def test_a_killed_servers_socket_directory_is_removed_by_the_next_server() -> None:
    killed = procshare.Manager(ctx=FORK)
    killed_dir = os.path.dirname(killed.address)
    live = procshare.Manager(ctx=FORK)
    live_dir = os.path.dirname(live.address)
    try:
        os.kill(killed._process.pid, signal.SIGKILL)
        killed._process.join(WAIT)
        assert os.path.exists(os.path.join(killed_dir, "server.sock"))  # left behind
        with procshare.Manager(ctx=FORK) as fresh:
            assert not os.path.exists(killed_dir)
            assert os.path.exists(live.address)  # a live server's is kept
            assert fresh.dict(a=1)["a"] == 1
        assert live.list([1])[:] == [1]
    finally:
        live.shutdown()
    assert not os.path.exists(live_dir)  # (one that exits removes its own)
