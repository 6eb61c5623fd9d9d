"""Posted calls across real processes (a lock's release by its holder, a put on an unbounded
queue): they do not wait for the server, and nobody can tell: what a process posted is seen by
every request made after it, the other process being told through a pipe the server knows
nothing of, or by the process's death."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from tests import _children as children

WAIT = 30.0


@pytest.fixture(scope="module", params=["fork", "spawn"])
def m(request: pytest.FixtureRequest) -> Iterator[procshare.SyncManager]:
    ctx = multiprocessing.get_context(request.param)
    with procshare.Manager(ctx=ctx) as manager:
        manager.ctx = ctx  # type: ignore[attr-defined]
        yield manager


def _posted(m: Any) -> int:
    return int(m._channel().control("stats")["counters"]["posted"])


def test_a_release_told_through_a_pipe_is_seen_by_a_try_acquire(m: Any) -> None:
    lock = m.Lock()
    here, there = m.ctx.Pipe()
    before = _posted(m)
    child = m.ctx.Process(target=children.release_then_tell, args=(lock, 200, there))
    child.start()
    for _ in range(200):
        assert here.poll(WAIT)
        here.recv()
        assert lock.acquire(False), "released (and told so), yet held"
        lock.release()
        here.send("next")
    child.join(WAIT)
    assert child.exitcode == 0
    assert _posted(m) - before >= 199 * 2  # (the child's releases, and ours)


def test_a_put_told_through_a_pipe_is_there_for_get_nowait(m: Any) -> None:
    q = m.Queue()
    for round_ in range(20):
        here, there = m.ctx.Pipe()
        child = m.ctx.Process(target=children.put_then_tell, args=(q, round_, there))
        child.start()
        assert here.poll(WAIT)
        here.recv()
        assert q.qsize() == 2
        assert q.get_nowait() == "registering"
        assert q.get_nowait() == round_
        with pytest.raises(queue.Empty):
            q.get_nowait()
        here.send("done")
        child.join(WAIT)


def test_puts_posted_by_a_killed_process_all_arrive_in_order(m: Any) -> None:
    q = m.Queue()
    before = _posted(m)
    child = m.ctx.Process(target=children.put_then_kill_myself, args=(q, 500))
    child.start()
    child.join(WAIT)
    assert child.exitcode == -9
    assert [q.get(timeout=WAIT) for _ in range(500)] == list(range(500))
    assert _posted(m) - before == 499


def test_a_put_of_a_value_that_names_code_waits_for_its_answer(m: Any) -> None:
    q = m.Queue()
    q.put("registering")
    before = _posted(m)
    q.put(procshare.ProcshareError("a class is named"))
    q.put(1)
    assert _posted(m) - before == 1
    assert q.get() == "registering"
    assert isinstance(q.get(), procshare.ProcshareError)
    assert q.get() == 1


def test_a_bounded_queue_waits_for_every_put(m: Any) -> None:
    q = m.Queue(3)
    before = _posted(m)
    for i in range(3):
        q.put(i)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert _posted(m) == before


def test_a_posted_release_that_failed_is_raised_by_the_next_call(m: Any) -> None:
    """A lock taken here and released by another process meanwhile (a Lock has no owner):
    our release, posted, fails on the server; the call that reads that answer keeps it, and
    the next raises it (no call's own answer is lost for it)."""
    lock = m.Lock()
    lock.acquire()
    lock.release()  # (registers: the next releases are posted)
    lock.acquire()
    child = m.ctx.Process(target=children.release_lock, args=(lock,))
    child.start()
    child.join(WAIT)
    lock.release()  # posted: the server finds it unlocked
    assert lock.locked() is False  # (its answer comes after the failure, which it keeps)
    with pytest.raises(procshare.PostedCallFailed) as failed:
        lock.locked()
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert lock.locked() is False  # (raised once)
