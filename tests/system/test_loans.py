"""Locks lent to the process that keeps taking them (``procshare/_loans.py``), with real
processes: taken without the server while lent, recalled for anyone else, freed when their
holder is killed, and the same to a program as a lock that never was lent."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare import ConnectionLost
from procshare._loans import lending_here
from tests import _children as children
from tests._holders import kill, start_holder

pytestmark = pytest.mark.skipif(not lending_here(), reason="locks are lent on x86 only")

FORK = procshare.get_context("fork")
WAIT = 10.0  # seconds before a wait is called a deadlock


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK, release_delay=0.2) as manager:
        yield manager


def counters(m: procshare.SyncManager) -> dict[str, int]:
    return dict(m.stats()["counters"])


def state_of(m: procshare.SyncManager, proxy: Any) -> dict[str, Any]:
    [obj] = [o for o in m.stats()["objects"] if o["id"] == proxy._id]
    return dict(obj["state"])


def lent_here(proxy: Any) -> bool:
    loans = proxy._channel().loans
    return loans is not None and loans.lent(proxy._id)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_lock_taken_twice_in_a_row_is_lent_and_then_costs_no_call(
    m: procshare.SyncManager, kind: str
) -> None:
    lock = getattr(m, kind)()
    lent = counters(m)["locks lent"]
    lock.acquire()
    lock.release()
    assert not lent_here(lock)  # (once is not a habit)
    children.borrow(lock)
    assert lent_here(lock)
    assert counters(m)["locks lent"] == lent + 1
    calls = counters(m)["calls"]
    for _ in range(200):
        with lock:
            pass
    assert counters(m)["calls"] - calls <= 1  # (the stats() call itself)
    assert lock.locked() is False
    with lock:
        assert lock.locked() is True
        state = state_of(m, lock)
        assert state["lent"] is True
        assert state["holder"]["pid"] == os.getpid()
        assert state["holder"]["owner"] == threading.get_ident()
    assert state_of(m, lock)["holder"] is None


def test_a_lent_lock_is_recalled_when_another_process_asks(
    m: procshare.SyncManager, ctx: Any
) -> None:
    lock = m.Lock()
    children.borrow(lock)
    assert lent_here(lock)
    lock.acquire()
    out = ctx.Queue()
    taker = ctx.Process(target=children.say_then_acquire, args=(lock, out))
    taker.start()
    try:
        assert out.get(timeout=WAIT) == "waiting"
        with pytest.raises(queue.Empty):
            out.get(timeout=0.2)  # (held here: the other process waits)
        lock.release()  # finds the recall: gives the loan back, with this release
        assert out.get(timeout=WAIT) == "acquired"
    finally:
        taker.join(WAIT)
    assert taker.exitcode == 0
    assert not lent_here(lock)
    assert counters(m)["loans given back"] >= 1
    assert lock.acquire(timeout=WAIT)  # (and it works as any lock from then on)
    lock.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
@pytest.mark.parametrize("waiter", [True, False])
def test_a_lent_lock_whose_holder_is_killed_is_freed(
    m: procshare.SyncManager, kind: str, waiter: bool
) -> None:
    lock = getattr(m, kind)()
    holder = start_holder(children.borrow_hold_and_die, lock, 2 if kind == "RLock" else 1)
    assert state_of(m, lock)["lent"] is True
    assert state_of(m, lock)["holder"]["pid"] == holder.pid
    got: list[bool] = []

    def take() -> None:
        got.append(lock.acquire(timeout=WAIT))
        if got[-1]:
            lock.release()

    thread = threading.Thread(target=take)
    if waiter:
        thread.start()  # (parked on the server: the loan was recalled, the child holds it)
        assert lock.acquire(timeout=0.1) is False
    kill(holder)
    if not waiter:
        thread.start()
    thread.join(WAIT)
    assert got == [True], "the lock of the killed borrower stayed held"
    assert state_of(m, lock)["holder"] is None


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_counter_under_a_lent_lock_loses_no_increment(
    m: procshare.SyncManager, ctx: Any, kind: str
) -> None:
    lock, value = getattr(m, kind)(), m.Value("i", 0)
    children.borrow(lock)  # (lent to this process at the start)
    workers = [
        ctx.Process(target=children.threaded_locked_increments, args=(value, lock, 2, 150))
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    children.threaded_locked_increments(value, lock, 2, 150)
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert value.value == 8 * 150
    assert counters(m)["locks lent"] >= 1


def _rlock_script(rlock: Any) -> list[Any]:
    """What an RLock does, step by step, after it was taken twice in a row."""
    children.borrow(rlock)
    seen: list[Any] = [rlock.acquire(), rlock.acquire(), rlock.acquire(False)]
    other: list[Any] = []

    def from_another_thread() -> None:
        other.append(rlock.acquire(False))
        try:
            rlock.release()
        except RuntimeError as exc:
            other.append(str(exc))

    t = threading.Thread(target=from_another_thread)
    t.start()
    t.join()
    seen.append(other)
    for _ in range(3):
        rlock.release()
    try:
        rlock.release()
    except RuntimeError as exc:
        seen.append(str(exc))
    seen.append(rlock.acquire(timeout=0.01))
    rlock.release()
    return seen


def _lock_script(lock: Any) -> list[Any]:
    """What a Lock does, step by step, after it was taken twice in a row."""
    children.borrow(lock)
    seen: list[Any] = [lock.acquire(), lock.acquire(False), lock.acquire(timeout=0.01)]
    t = threading.Thread(target=lock.release)  # (a Lock may be released by any thread)
    t.start()
    t.join()
    seen.append(lock.acquire(False))
    lock.release()
    try:
        lock.release()
    except RuntimeError as exc:
        seen.append(str(exc))
    return seen


def test_a_lent_lock_behaves_as_the_stdlibs(m: procshare.SyncManager, stdlib_manager: Any) -> None:
    assert _rlock_script(m.RLock()) == _rlock_script(stdlib_manager.RLock())
    assert _lock_script(m.Lock()) == _lock_script(stdlib_manager.Lock())


def test_a_lent_lock_released_by_another_process(m: procshare.SyncManager, run: Any) -> None:
    lock = m.Lock()
    children.borrow(lock)
    lock.acquire()
    run(children.release_lock, lock)  # (threading allows it: so does the stdlib's manager)
    assert lock.locked() is False
    assert lock.acquire(False) is True
    lock.release()


def test_a_thread_finding_the_lent_lock_held_here_waits_without_ending_the_loan(
    m: procshare.SyncManager,
) -> None:
    lock = m.Lock()
    children.borrow(lock)
    given_back = counters(m)["loans given back"]
    lock.acquire()
    tried: list[bool] = []
    t = threading.Thread(target=lambda: tried.append(lock.acquire(False)))
    t.start()
    t.join()
    assert tried == [False]
    assert lent_here(lock)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=WAIT)))
    t.start()  # (a wait: the server recalls the loan and parks the thread)
    while not state_of(m, lock)["waiters"]:
        threading.Event().wait(0.01)
    assert state_of(m, lock)["lent"] is False
    lock.release()  # (finds the recall: gives the loan back, with this release)
    t.join(WAIT)
    assert got == [True]
    assert counters(m)["loans given back"] == given_back + 1
    lock.release()


def test_a_condition_over_a_lent_lock(m: procshare.SyncManager) -> None:
    lock = m.Lock()
    children.borrow(lock)
    assert lent_here(lock)
    cond = m.Condition(lock)
    assert state_of(m, lock)["lent"] is False
    done: list[bool] = []

    def waiter() -> None:
        with cond:
            done.append(cond.wait(WAIT))

    t = threading.Thread(target=waiter)
    t.start()
    while not state_of(m, cond)["waiters"]:
        threading.Event().wait(0.01)
    with cond:
        cond.notify()
    t.join(WAIT)
    assert done == [True]
    children.borrow(lock)
    assert not lent_here(lock)  # (a Condition's lock is never lent)


def test_another_process_borrows_and_lends_no_further(m: procshare.SyncManager, ctx: Any) -> None:
    lock = m.Lock()
    children.borrow(lock)
    out = ctx.Queue()
    p = ctx.Process(target=children.borrow_then_report, args=(lock, out))
    p.start()
    assert out.get(timeout=WAIT) is True
    p.join(WAIT)
    assert p.exitcode == 0
    assert lock.acquire(timeout=WAIT)  # (the child's loan ended with it)
    lock.release()


def test_loans_can_be_turned_off(m: procshare.SyncManager, ctx: Any) -> None:
    lock = m.Lock()
    out = ctx.Queue()
    p = ctx.Process(target=children.borrow_without_loans, args=(lock, out))
    p.start()
    assert out.get(timeout=WAIT) is False
    p.join(WAIT)


def test_a_lent_lock_fails_once_its_server_is_gone() -> None:
    m = procshare.Manager(ctx=FORK)
    lock = m.Lock()
    children.borrow(lock)
    assert lent_here(lock)
    m.shutdown()
    with pytest.raises(ConnectionLost):
        lock.acquire()
    with pytest.raises(ConnectionLost):
        lock.release()


def test_garbage_given_back_changes_nothing(m: procshare.SyncManager) -> None:
    lock = m.Lock()
    children.borrow(lock)
    for args in [("x", 1, 1, False), (10**30, -1, None, False), (0, 0, 0, 0), ()]:
        with contextlib.suppress(TypeError):  # (wrong number of arguments: refused)
            lock._callmethod("#loan", args)
    assert lent_here(lock)
    with lock:
        assert lock.locked()
    assert not lock.locked()


@pytest.mark.parametrize("step", ["acquire", "release"])
def test_a_recall_between_a_borrowers_store_and_its_check(
    m: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Dekker's both-see case, made to happen: another process asks for the lock, and the
    server recalls it, right between the borrower's store to its slot and its look at the
    recall flag. The borrower backs out (an acquire) or has released (a release), and the
    other process gets the lock either way."""
    import procshare._client._loans as client_loans

    lock = m.Lock()
    children.borrow(lock)
    cue, leave, out = FORK.Event(), FORK.Event(), FORK.Queue()
    other = FORK.Process(target=children.take_on_cue, args=(lock, cue, out, leave))
    other.start()
    real_fence = client_loans.fence
    recalled: list[bool] = []

    def fence_with_a_recall() -> None:
        if not recalled:  # (once: the store was made, the check not yet)
            cue.set()
            while state_of(m, lock)["lent"]:
                threading.Event().wait(0.005)
            recalled.append(True)
        real_fence()

    try:
        if step == "release":
            lock.acquire()
        monkeypatch.setattr(client_loans, "fence", fence_with_a_recall)
        if step == "acquire":
            # The recall found it held by this thread: the server waits for the loan back,
            # which the back-out sends at once; then either may take it first.
            got: list[bool] = []

            def take_and_free() -> None:
                got.append(lock.acquire(timeout=WAIT))
                lock.release()

            t = threading.Thread(target=take_and_free)
            t.start()
            assert out.get(timeout=WAIT) is True
            leave.set()
            t.join(WAIT)
            assert got == [True]
        else:
            lock.release()  # (the recall found it free: the other process has it at once)
            assert out.get(timeout=WAIT) is True
            assert lock.acquire(False) is False
            leave.set()
        assert recalled == [True]
        other.join(WAIT)
        assert other.exitcode == 0
        assert not lent_here(lock)
        assert lock.acquire(timeout=WAIT)
        lock.release()
    finally:
        leave.set()
        other.join(WAIT)


def test_an_acquire_interrupted_while_taking_a_lent_lock_leaves_it_free(
    m: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt between the borrower's store and its look at the recall flag (a
    signal arrives there as anywhere): the acquire raises and the lock is not taken."""
    import procshare._client._loans as client_loans

    lock = m.Lock()
    children.borrow(lock)
    assert lent_here(lock)

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(client_loans, "fence", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    monkeypatch.undo()
    assert lock.acquire(False) is True  # (free: nobody holds it, this thread neither)
    lock.release()
    assert lock.locked() is False


def test_a_lent_rlock_given_back_when_its_connection_has_news(
    m: procshare.SyncManager, stdlib_manager: Any
) -> None:
    """A borrower whose connection shows something to read (perhaps the server's end) asks
    the server instead of taking the lock here: it gives the loan back first, with its count,
    so the count the server keeps from then on is the one this thread holds."""

    def script(rlock: Any) -> list[Any]:
        children.borrow(rlock)
        seen = [rlock.acquire()]
        book = rlock._channel().loans if hasattr(rlock, "_channel") else None
        if book is not None:
            vouched = book._vouched
            book._vouched = lambda: False  # (something to read on the connection)
        seen.append(rlock.acquire())
        if book is not None:
            book._vouched = vouched
        rlock.release()
        rlock.release()
        try:
            rlock.release()
        except RuntimeError as exc:
            seen.append(str(exc))
        seen.append(rlock.acquire(False))
        rlock.release()
        return seen

    assert script(m.RLock()) == script(stdlib_manager.RLock())


def test_a_loan_the_server_ended_is_not_held_though_its_slot_is_lent_again() -> None:
    """A lent lock disposed of (its proxies dropped): the server ends the loan and may lend
    its slot to another lock. The book still lists the first loan until a take finds it out;
    it must not count it as held by whoever holds the slot's new lock (two locks held would
    make the Value sets bound to the new one unknown here, and never posted)."""
    import mmap

    from procshare._client._loans import LoanBook
    from procshare._loans import HEADER_WORDS, HOLDER, NUMBER, PAGE_BYTES

    book = LoanBook(mmap.mmap(-1, PAGE_BYTES), lambda: True)
    words = memoryview(book._map).cast("Q")
    me = threading.get_ident() & 0xFFFFFFFFFFFFFFFF
    words[HEADER_WORDS + NUMBER], words[HEADER_WORDS + HOLDER] = 1, me
    book.add(4, 0, 1, False)  # (lent, held by this thread, as the server writes it)
    assert book.held_by(me) == [4] and book.holds(4, me)
    words[HEADER_WORDS + HOLDER] = 0  # freed here; then disposed of: the loan ends...
    words[HEADER_WORDS + NUMBER], words[HEADER_WORDS + HOLDER] = 2, me  # ...slot lent again
    book.add(29, 0, 2, False)
    assert book.held_by(me) == [29]
    assert not book.holds(4, me) and book.holds(29, me)
