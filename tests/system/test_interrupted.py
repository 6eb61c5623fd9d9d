"""A blocking call interrupted by a signal (Ctrl-C, an alarm's handler raising) is withdrawn:
nothing is granted or handed to the abandoned request later, and what crossed the withdrawal
is given back. And an item put as its blocked consumer is killed is never lost.

Real processes, real signals (``setitimer`` in the child), real ``kill -9``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest

import procshare
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Any:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def interrupt(target: Any, how: str) -> tuple[str, Any]:
    """Run a child blocked in ``how`` on ``target`` until an alarm interrupts it; return
    what it reported, and its ``leave`` event (set it to let the child go)."""
    interrupted, leave, out = FORK.Event(), FORK.Event(), FORK.SimpleQueue()
    child = FORK.Process(
        target=children.interrupted_call, args=(target, how, interrupted, leave, out)
    )
    child.start()
    assert interrupted.wait(30), "the child never came back from its interrupted call"
    interrupt.children.append((child, leave))  # type: ignore[attr-defined]
    return out.get(), leave


interrupt.children = []  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def let_children_go() -> Any:
    yield
    for child, leave in interrupt.children:  # type: ignore[attr-defined]
        leave.set()
        child.join(10)
    interrupt.children.clear()  # type: ignore[attr-defined]


@pytest.mark.parametrize("typeid", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_an_interrupted_acquire_is_not_granted_the_lock_later(m: Any, typeid: str) -> None:
    lock = getattr(m, typeid)()
    lock.acquire()  # held here: the child's acquire waits
    said, _leave = interrupt(lock, "acquire")
    assert said == "interrupted"
    lock.release()
    # The abandoned request must not take it: another process can (the child stays alive).
    assert lock.acquire(timeout=10)
    lock.release()


def test_an_interrupted_get_loses_no_item(m: Any) -> None:
    q = m.Queue()
    said, _leave = interrupt(q, "get")
    assert said == "interrupted"
    q.put("precious")
    assert q.get(timeout=10) == "precious"


def test_an_interrupted_condition_wait_leaves_its_with_block_cleanly(m: Any) -> None:
    cond = m.Condition()
    interrupted, leave, out = FORK.Event(), FORK.Event(), FORK.SimpleQueue()
    child = FORK.Process(
        target=children.condition_interrupted, args=(cond, interrupted, leave, out)
    )
    child.start()
    try:
        assert interrupted.wait(30)
        assert out.get() == "interrupted cleanly"  # (no "cannot release un-acquired lock")
        assert cond.acquire(timeout=10)  # the child let it go
        cond.release()
    finally:
        leave.set()
        child.join(10)


def test_an_interrupted_event_wait_and_join_are_withdrawn(m: Any) -> None:
    ev, q = m.Event(), m.JoinableQueue()
    q.put("task")
    said, _ = interrupt(ev, "wait")
    assert said == "interrupted"
    said, _ = interrupt(q, "join")
    assert said == "interrupted"
    stats = {o["id"]: o for o in m.stats()["objects"]}
    assert not stats[ev._id]["state"]["waiters"]
    assert not stats[q._id]["state"]["joiners"]


def test_an_interrupted_barrier_wait_does_not_break_the_barrier(m: Any) -> None:
    barrier = m.Barrier(2)
    said, _ = interrupt(barrier, "wait")
    assert said == "interrupted"
    assert not barrier.broken
    assert barrier.n_waiting == 0


def test_an_item_put_as_its_blocked_consumer_is_killed_is_never_lost(m: Any) -> None:
    """The consumer's connection may still look open when the item is handed to it: the item
    is kept until the consumer shows it arrived, and goes back when the connection ends."""
    q = m.Queue()
    for trial in range(20):
        started = FORK.Event()
        consumer = FORK.Process(target=children.blocked_get_forever, args=(q, started))
        consumer.start()
        assert started.wait(30)
        deadline = time.monotonic() + 30
        while not _getters(m, q):  # parked on the server
            assert time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(consumer.pid, signal.SIGKILL)
        if trial % 2:
            time.sleep(trial * 0.0001)  # 0-2 ms after the kill
        q.put(("item", trial))
        consumer.join()
        assert q.get(timeout=10) == ("item", trial)


def _getters(m: Any, q: Any) -> list[Any]:
    for obj in m.stats()["objects"]:
        if obj["id"] == q._id:
            return list(obj["state"]["getters"])
    return []
