"""The primitives driven through their host interface alone (``_host.Host``), by a fake host.

No core, no transport, no clock: a handler gets a ``CallContext`` whose host records what it is
asked to do. This is how each primitive can be read and tested on its own; the same behaviour
through the real server is covered in ``test_core.py`` and the system tests.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

from procshare._server._host import PARKED, CallContext, Host, Primitive
from procshare._server._objects import Barrier, Event, Lock, Queue, Semaphore
from procshare._server._session import Session
from procshare._server._waiters import Waiter


class FakeHost:
    """Answers parked requests into ``answers``; runs jobs at once; counts; tracks grants."""

    def __init__(self, lock_window: float = 0.0) -> None:
        self.ended_leases: list[Any] = []
        self.lock_window = lock_window
        self.answers: list[tuple[Session, int, Any]] = []
        self.tracked: dict[tuple[Session, int], tuple[Primitive, int, Any]] = {}
        self.deadlines: list[Waiter] = []
        self.windows: list[tuple[Primitive, float]] = []
        self.counters: dict[str, int] = {}
        self.gone: set[Session] = set()

    def answer(self, waiter: Waiter, value: Any) -> None:
        waiter.session.waiters.discard(waiter)
        self.answers.append((waiter.session, waiter.req_id, value))

    def answer_error(self, waiter: Waiter, error: BaseException) -> None:
        waiter.session.waiters.discard(waiter)
        self.answers.append((waiter.session, waiter.req_id, error))

    def deliverable(self, session: Session) -> bool:
        return session not in self.gone

    def track(self, session: Session, req_id: int, owner: int, prim: Primitive, what: Any) -> None:
        self.tracked[session, req_id] = (prim, owner, what)

    def add_deadline(self, waiter: Waiter) -> None:
        self.deadlines.append(waiter)

    def open_window(self, prim: Primitive, until: float) -> None:
        self.windows.append((prim, until))

    def run_job(
        self,
        session: Session,
        req_id: int,
        fn: Callable[[], Any],
        done: Callable[[Host, bool, Any], None],
    ) -> None:
        try:
            value, ok = fn(), True
        except Exception as exc:
            value, ok = exc, False
        done(self, ok, value)

    def count(self, counter: str) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + 1

    def end_leases(self, entries: list[Any]) -> None:
        self.ended_leases.extend(entries)


def _session(sid: int) -> Session:
    return Session(sid, None, {"pid": 1000 + sid}, now=0.0)  # type: ignore[arg-type]


class _Calls:
    """Request ids for one fake host: ``ctx(session)`` is the context of a new request."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.next_id = 0

    def ctx(self, session: Session, owner: int = 1, now: float = 0.0) -> CallContext:
        self.next_id += 1
        return CallContext(self.host, session, self.next_id, owner, now)


def test_the_core_and_the_fake_implement_every_operation_of_the_host_interface() -> None:
    from procshare._server._core import Core

    wanted = {name for name in vars(Host) if not name.startswith("_")}
    assert wanted >= {"answer", "answer_error", "deliverable", "track", "run_job", "count"}
    core = Core({}, address=None, rebuild=lambda *a: None)
    for implementation in (core, FakeHost()):
        assert all(hasattr(implementation, name) for name in wanted), type(implementation)


def test_lock_release_hands_over_to_the_first_waiter_and_tracks_the_grant() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b, c = _session(1), _session(2), _session(3)
    lock = Lock()
    assert lock.acquire(calls.ctx(a)) is True
    assert lock.acquire(calls.ctx(b)) is PARKED
    assert lock.acquire(calls.ctx(c)) is PARKED
    assert lock.acquire(calls.ctx(a, owner=2), False) is False  # another thread, no wait
    lock.release(calls.ctx(a))
    assert host.answers == [(b, 2, True)]
    assert host.tracked[b, 2] == (lock, 1, 1)
    assert b.holdings == {lock: 1} and a.holdings == {}


def test_a_dead_lock_holder_passes_the_lock_on_and_an_undeliverable_waiter_is_skipped() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b, c = _session(1), _session(2), _session(3)
    lock = Lock()
    lock.acquire(calls.ctx(a))
    lock.acquire(calls.ctx(b))
    lock.acquire(calls.ctx(c))
    host.gone.add(b)  # b's peer died while it waited
    lock.drop_session(host, a, a.holdings[lock])
    assert [(s.id, rid) for s, rid, _ in host.answers] == [(3, 3)]
    assert lock.holder == (c, 1)


def test_a_window_opened_by_release_is_asked_of_the_host_and_a_barge_is_counted() -> None:
    host = FakeHost(lock_window=0.001)
    calls = _Calls(host)
    a, b = _session(1), _session(2)
    lock = Lock()
    lock.acquire(calls.ctx(a))
    lock.acquire(calls.ctx(b))
    lock.release(calls.ctx(a))
    assert host.windows and host.windows[0][0] is lock and host.answers == []
    assert lock.acquire(calls.ctx(a)) is True  # taken within the window: a barge
    assert host.counters == {"lock barges": 1}
    lock.release(calls.ctx(a))
    (_, until) = host.windows[-1]
    lock.window_closed(host, until)
    assert [(s, rid, v) for s, rid, v in host.answers] == [(b, 2, True)]


def test_semaphore_slots_of_a_dead_session_come_back_to_a_waiter() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b = _session(1), _session(2)
    sem = Semaphore(2)
    assert sem.acquire(calls.ctx(a)) is True
    assert sem.acquire(calls.ctx(a)) is True
    assert sem.acquire(calls.ctx(b)) is PARKED
    sem.drop_session(host, a, a.holdings[sem])
    assert host.answers == [(b, 3, True)]
    assert sem.get_value() == 1


def test_a_queue_item_given_back_goes_to_the_front_and_is_not_lost() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b = _session(1), _session(2)
    q = Queue()
    q.put(calls.ctx(a), "first")
    q.put(calls.ctx(a), "second")
    ctx = calls.ctx(b)
    assert q.get(ctx) == "first"
    prim, owner, what = host.tracked[b, ctx.req_id]
    assert prim is q and what == "first"
    q.give_back(host, b, owner, what)  # b's caller abandoned the get before it arrived
    assert q.get(calls.ctx(a)) == "first"
    assert q.get(calls.ctx(a)) == "second"
    with pytest.raises(queue.Empty):
        q.get(calls.ctx(a), False)


def test_a_queue_put_skips_a_getter_whose_peer_died() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b, c = _session(1), _session(2), _session(3)
    q = Queue()
    assert q.get(calls.ctx(b)) is PARKED
    assert q.get(calls.ctx(c)) is PARKED
    host.gone.add(b)
    q.put(calls.ctx(a), "item")
    assert host.answers == [(c, 2, "item")]


def test_event_set_answers_every_waiter() -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b = _session(1), _session(2)
    event = Event()
    assert event.wait(calls.ctx(a)) is PARKED
    assert event.wait(calls.ctx(b), 5) is PARKED
    assert len(host.deadlines) == 1  # only the wait with a timeout asks for a deadline
    event.set(calls.ctx(a))
    assert sorted((s.id, v) for s, _, v in host.answers) == [(1, True), (2, True)]


@pytest.mark.parametrize("fails", [False, True])
def test_barrier_action_runs_through_the_host_and_its_failure_breaks_the_barrier(
    fails: bool,
) -> None:
    host = FakeHost()
    calls = _Calls(host)
    a, b = _session(1), _session(2)
    ran: list[int] = []

    def action() -> None:
        ran.append(1)
        if fails:
            raise ValueError("boom")

    barrier = Barrier(2, action)
    assert barrier.wait(calls.ctx(a)) is PARKED
    assert barrier.wait(calls.ctx(b)) is PARKED  # the last party waits for the action
    assert ran == [1]
    if not fails:
        assert sorted(v for _, _, v in host.answers) == [0, 1]
        assert not barrier.broken
    else:
        errors = {s.id: v for s, _, v in host.answers}
        assert isinstance(errors[2], ValueError)  # the last party gets what the action raised
        assert isinstance(errors[1], threading.BrokenBarrierError)
        assert barrier.broken
