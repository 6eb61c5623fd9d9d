"""watch() and wait_until(): pushed changes, across processes, in order, none missed."""

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
from procshare._client._push import Watch
from procshare.managers import BaseManager
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def test_changes_from_other_processes_arrive_once_in_order(m: procshare.SyncManager) -> None:
    lst = m.list()
    with lst.watch(timeout=30) as changes:
        writers = [
            FORK.Process(target=children.append_numbers, args=(lst, w * 100, 50)) for w in range(3)
        ]
        for p in writers:
            p.start()
        seen = []
        for change in changes:
            assert change.op == "append"
            seen.append(change)
            if len(seen) == 150:
                break
        for p in writers:
            p.join(30)
    assert [c.version for c in seen] == list(range(1, 151))  # in order, none missed
    assert sorted(c.args[0] for c in seen) == sorted(lst[:])  # each exactly once
    for w in range(3):  # each writer's appends in its own order
        mine = [c.args[0] for c in seen if w * 100 <= c.args[0] < w * 100 + 50]
        assert mine == list(range(w * 100, w * 100 + 50))


def test_a_watcher_in_another_process(m: procshare.SyncManager) -> None:
    d = m.dict()
    ready, out = FORK.Event(), FORK.Queue()
    p = FORK.Process(target=children.watch_and_report, args=(d, 3, ready, out))
    p.start()
    assert ready.wait(30)
    d["a"] = 1
    d.update(b=2)
    d.pop("a")
    assert out.get(timeout=30) == [
        ("__setitem__", ("a", 1), 1),
        ("update", (), 2),
        ("pop", ("a",), 3),
    ]
    p.join(30)


@pytest.mark.parametrize(
    ("factory", "change", "op"),
    [
        (lambda m: m.Namespace(), lambda ns: setattr(ns, "x", 1), "__setattr__"),
        (lambda m: m.Value("i", 0), lambda v: setattr(v, "value", 5), "set"),
        (lambda m: m.Array("i", [0, 0]), lambda a: a.__setitem__(1, 7), "__setitem__"),
        (lambda m: m.set(), lambda s: s.add(3), "add"),
        (lambda m: m.Event(), lambda e: e.set(), "set"),
    ],
)
def test_every_watchable_kind(m: procshare.SyncManager, factory, change, op) -> None:  # type: ignore[no-untyped-def]
    obj = factory(m)
    with obj.watch(timeout=10) as changes:
        change(obj)
        assert next(iter(changes)).op == op


def test_unwatchable_kinds_say_so(m: procshare.SyncManager) -> None:
    with pytest.raises(procshare.MethodNotExposed, match="cannot be watched"):
        m.Lock().watch()


def test_timeout_ends_iteration_and_get_raises(m: procshare.SyncManager) -> None:
    d = m.dict()
    with d.watch(timeout=0.2) as changes:
        assert list(changes) == []
        with pytest.raises(TimeoutError) as timed_out:
            changes.get(timeout=0.05)
    # one hierarchy: procshare's own errors are ProcshareErrors, and the builtin users catch
    assert isinstance(timed_out.value, procshare.WaitTimeout)
    assert isinstance(timed_out.value, procshare.ProcshareError)
    with pytest.raises(ValueError, match="closed") as closed:
        changes.get(timeout=0.05)
    assert isinstance(closed.value, procshare.WatchClosed)


def test_a_slow_watcher_is_told_it_missed_changes(m: procshare.SyncManager) -> None:
    lst = m.list()
    with lst.watch(maxsize=5) as changes:
        for i in range(100):
            lst.append(i)
        time.sleep(0.5)  # everything has arrived by now; only 5 were kept
        got, missed = [], 0
        while (change := changes.get_nowait()) is not None or not got:
            if change is None:
                change = changes.get(timeout=5)
            if change.op == "overflow":
                missed += change.missed
            else:
                got.append(change.args[0])
        assert got == list(range(5)) and missed == 95
        lst.append("after")
        assert changes.get(timeout=5).args == ("after",)


def test_unsubscribing_stops_delivery(m: procshare.SyncManager) -> None:
    d = m.dict()
    changes = d.watch()
    d["a"] = 1
    assert changes.get(timeout=5).op == "__setitem__"
    changes.close()
    d["b"] = 2
    time.sleep(0.2)
    assert changes.get_nowait() is None
    assert list(changes) == []
    [obj] = [o for o in m.stats()["objects"] if o["id"] == d._id]
    assert obj["watchers"] == 0


def test_a_dead_watcher_is_cleaned_up_on_the_server(m: procshare.SyncManager) -> None:
    d = m.dict()
    ready = FORK.Event()
    p = FORK.Process(target=children.watch_then_die, args=(d, ready))
    p.start()
    assert ready.wait(30)
    [obj] = [o for o in m.stats()["objects"] if o["id"] == d._id]
    assert obj["watchers"] == 1
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [obj] = [o for o in m.stats()["objects"] if o["id"] == d._id]
        if obj["watchers"] == 0:
            break
        time.sleep(0.05)
    assert obj["watchers"] == 0
    d["still"] = "works"


def test_wait_until_a_condition_on_the_data(m: procshare.SyncManager) -> None:
    lst = m.list()
    p = FORK.Process(target=children.append_numbers, args=(lst, 0, 20))
    threading.Timer(0.1, p.start).start()
    value = lst.wait_until(lambda v: len(v) >= 20, timeout=30)
    assert value == list(range(20))
    p.join(30)
    with pytest.raises(procshare.WaitTimeout):
        lst.wait_until(lambda v: len(v) > 100, timeout=0.2)
    d = m.dict(count=0)
    threading.Timer(0.1, lambda: d.update(count=3)).start()
    assert d.wait_until(lambda v: v["count"] == 3, timeout=10)["count"] == 3


def test_the_watch_ends_when_the_server_goes(m: procshare.SyncManager) -> None:
    other = procshare.Manager(ctx=FORK)
    d = other.dict()
    changes = d.watch()
    os.kill(other._process.pid, signal.SIGKILL)
    with pytest.raises(procshare.ConnectionLost):
        changes.get(timeout=10)
    other.shutdown()


# -- who reads the push connection: a consumer waiting in get() reads it itself ----------------


def _started(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    """A thread running ``target``, started, and the list its exception goes to (checked by
    the test: an exception left to the thread would be reported apart, as a warning)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # (reported by the test)
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failed


def test_a_consumer_waiting_reads_its_changes_itself(m: procshare.SyncManager) -> None:
    """A push wakes the thread that waits for it, not a daemon thread that wakes it in turn
    (where the connection is a pipe: a server on this machine)."""
    lst = m.list()
    with lst.watch() as changes:
        hub = changes._hub
        if not hub.channel.reads_itself:
            pytest.skip("the push connection is no pipe here")
        readers: list[str] = []
        sub_id, _ = hub.subscribe(
            lst._id, lambda _: readers.append(threading.current_thread().name), print
        )
        writer = FORK.Process(target=children.append_slowly, args=(lst, list(range(5)), 0.2, 0.02))
        writer.start()
        got = [changes.get(timeout=30).args[0] for _ in range(5)]
        writer.join(30)
        hub.unsubscribe(sub_id)
    assert got == list(range(5))
    assert readers == [threading.current_thread().name] * 5


def test_a_wake_byte_left_behind_does_not_make_the_push_thread_spin(
    m: procshare.SyncManager,
) -> None:
    """A consumer's wake byte may reach the daemon's pipe after the daemon stopped reading
    for another reason: the daemon's next poll must drain it, not return at once for ever."""
    lst = m.list()
    with lst.watch() as changes:
        hub = changes._hub
        if not hub.consumers_read:
            pytest.skip("the push connection is no pipe here")
        lst.append(1)
        assert changes.get(timeout=30).args == (1,)
        os.write(hub._wake_w, b"!")  # (as a consumer's, come late)
        deadline = time.monotonic() + 10
        while not hub._daemon_reads and time.monotonic() < deadline:
            time.sleep(0.005)  # (the daemon reads again once the linger passed)
        start = time.process_time()
        time.sleep(0.3)
        assert time.process_time() - start < 0.15  # (spinning: ~0.3 s of CPU)
        lst.append(2)
        assert changes.get(timeout=30).args == (2,)


class _Alarm(Exception):
    pass


def _raise_alarm(*_: Any) -> None:
    raise _Alarm


def test_a_get_interrupted_while_it_reads_loses_no_change(m: procshare.SyncManager) -> None:
    """A signal whose handler raises (Ctrl-C, an alarm) lands in the consumer's poll of the
    connection: the reader's role is given back, and the next changes all arrive."""
    lst = m.list()
    with lst.watch() as changes:
        old = signal.signal(signal.SIGALRM, _raise_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(_Alarm):
                changes.get(timeout=10)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        hub = changes._hub
        assert not getattr(hub, "_consumer_reads", False) and not getattr(hub, "_waiting", ())
        lst.append(1)
        lst.append(2)
        assert [changes.get(timeout=10).args[0] for _ in range(2)] == [1, 2]


def test_a_get_interrupted_while_it_hands_changes_on_ends_the_watch_loudly() -> None:
    """Interrupted between reading bytes and handing on every change in them, a reader may
    have lost some: the watch then raises ConnectionLost, never misses a change silently."""
    with procshare.Manager(ctx=FORK) as other:
        lst = other.list()
        with lst.watch() as changes:
            channel = changes._hub.channel
            if not changes._hub.consumers_read:
                pytest.skip("the push connection is no pipe here")
            handing_on = channel._dispatch_push

            def interrupted(*args: Any) -> None:
                channel._dispatch_push = handing_on  # (once)
                raise _Alarm

            channel._dispatch_push = interrupted
            threading.Timer(0.1, lst.append, (1,)).start()  # (made while we wait and read)
            with pytest.raises(_Alarm):
                changes.get(timeout=10)
            lst.append(2)
            with pytest.raises(procshare.ConnectionLost):
                changes.get(timeout=10)


def test_threads_consuming_watches_of_one_process_each_get_theirs(
    m: procshare.SyncManager,
) -> None:
    """Whichever consumer reads hands every change to its own watch, in order."""
    lists = [m.list() for _ in range(3)]
    watches = [lst.watch(timeout=30) for lst in lists]
    got: list[list[int]] = [[] for _ in lists]

    def consume(k: int) -> None:
        for change in watches[k]:
            got[k].append(change.args[0])
            if len(got[k]) == 60:
                return

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    writers = [
        FORK.Process(target=children.append_slowly, args=(lst, list(range(60)), 0.05, 0.001))
        for lst in lists
    ]
    for p in writers:
        p.start()
    for p in writers:
        p.join(30)
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for w in watches:
        w.close()
    assert got == [list(range(60))] * 3


def test_a_cache_stays_current_while_a_consumer_waits_and_after(
    m: procshare.SyncManager,
) -> None:
    """A cache's feed shares the push connection: its changes are read while a consumer
    waits on another object (by that consumer) and once it stopped (by the daemon, at once)."""
    d = m.dict(k=-1)
    d.cache()
    lst = m.list()
    with lst.watch() as changes:
        waiting, failed = _started(lambda: changes.get(timeout=30))
        writer = FORK.Process(target=children.set_items_slowly, args=(d, "k", 20, 0.002))
        writer.start()
        writer.join(30)
        assert d.wait_until(lambda v: v["k"] == 19, timeout=10)["k"] == 19
        deadline = time.monotonic() + 10
        while d["k"] != 19 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert d["k"] == 19  # (read from the replica)
        lst.append("done")
        waiting.join(30)
        assert not failed
        # nobody waits now: the daemon reads the feed without lingering
        writer = FORK.Process(target=children.set_items_slowly, args=(d, "k", 5, 0.0))
        writer.start()
        writer.join(30)
        deadline = time.monotonic() + 10
        while d["k"] != 4 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert d["k"] == 4


def test_closing_a_watch_wakes_its_consumer(m: procshare.SyncManager) -> None:
    lst = m.list()
    changes = lst.watch()
    ended: list[BaseException] = []

    def consume() -> None:
        try:
            changes.get()
        except BaseException as exc:  # (what it raised is the point)
            ended.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.05)  # (blocked in get, most likely reading the connection)
    changes.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], procshare.WatchClosed)


def test_a_watch_made_while_a_consumer_reads_gets_its_answer(m: procshare.SyncManager) -> None:
    first, second = m.list(), m.list()
    with first.watch(timeout=30) as one:
        consumer, failed = _started(lambda: one.get(timeout=30))
        time.sleep(0.05)
        with second.watch(timeout=30) as two:  # its answer is read by the consumer
            second.append("x")
            assert two.get(timeout=10).args == ("x",)
        first.append("y")
        consumer.join(30)
        assert not consumer.is_alive() and not failed


def test_a_forked_child_does_not_take_its_parents_changes(
    m: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from procshare._client import _push

    monkeypatch.setattr(_push, "LINGER", 5.0)  # (the daemon stays off the connection)
    lst = m.list()
    with lst.watch() as changes:
        lst.append(-1)
        assert changes.get(timeout=30).args == (-1,)  # (nobody reads the connection now)
        out = FORK.SimpleQueue()
        child = FORK.Process(target=_get_in_child, args=(changes, out))
        child.start()
        writer = FORK.Process(
            target=children.append_slowly, args=(lst, list(range(20)), 0.05, 0.005)
        )
        writer.start()
        got = [changes.get(timeout=30).args[0] for _ in range(20)]
        writer.join(30)
        child.join(30)
        with changes._hub._cond:  # (the daemon reads again from now on)
            changes._hub._linger_until = 0.0
            changes._hub._cond.notify_all()
    assert got == list(range(20))
    assert out.get() == "nothing"


def _get_in_child(changes: Watch, out: Any) -> None:
    try:
        changes.get(timeout=0.5)
    except TimeoutError:
        out.put("nothing")
    else:
        out.put("took one")


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def read(self) -> int:
        return self.n


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter, watch=["bump"])


def test_registered_classes_can_opt_in() -> None:
    with CounterManager(ctx=FORK) as cm:
        counter = cm.Counter()
        with counter.watch(timeout=10) as changes:
            counter.bump(5)
            counter.read()  # not a change
            counter.bump()
            first, second = next(iter(changes)), next(iter(changes))
        assert (first.op, first.args, first.result) == ("bump", (5,), 5)
        assert (second.op, second.result) == ("bump", 6)
        assert counter.wait_until(lambda c: c.n == 6, timeout=5).n == 6
