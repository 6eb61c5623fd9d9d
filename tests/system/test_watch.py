"""watch() and wait_until(): pushed changes, across processes, in order, none missed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

import procshare
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
