"""Pipelines (many calls, one round trip) and atomic server-side operations."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator

import pytest

import procshare
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def test_a_pipeline_returns_results_in_order_with_errors_per_call(
    m: procshare.SyncManager,
) -> None:
    d, lst, q = m.dict(), m.list(), m.Queue()
    with m.pipeline() as p:
        for i in range(5):
            p(d)[i] = i * i
        size = p(d).len()
        missing = p(d).getitem("nope")
        appended = p(lst).append("x")
        put = p(q).put_nowait(1)
        got = p(q).get()
        empty = p(q).get()  # would have to wait: fails, the rest goes on
        last = p(lst).pop()
    assert size.value == 5 and appended.value is None and put.value is None
    assert got.value == 1 and last.value == "x"
    with pytest.raises(KeyError):
        missing.value
    assert isinstance(missing.error, KeyError)
    with pytest.raises(procshare.ProcshareError, match="would have to wait"):
        empty.value
    assert p.results[0] is None and p.results[5] == 5 and isinstance(p.results[6], KeyError)
    assert dict(d) == {i: i * i for i in range(5)}


def test_a_pipeline_is_one_atomic_step(m: procshare.SyncManager) -> None:
    d = m.dict(balance=100)
    with d.watch(timeout=2) as changes:
        with d.pipeline() as pd:
            pd.increment("balance", -30)
            pd.increment("savings", 30)
        versions = [changes.get(timeout=5).version for _ in range(2)]
    assert versions == [1, 2]  # nothing from anybody else in between
    assert dict(d) == {"balance": 70, "savings": 30}


def test_pending_before_the_pipeline_ran(m: procshare.SyncManager) -> None:
    d = m.dict()
    p = m.pipeline()
    pending = p(d).len()
    assert not pending.done
    with pytest.raises(RuntimeError, match="not run yet"):
        pending.value
    assert len(p) == 1
    assert p.execute() == [0] and pending.done and pending.value == 0
    assert p.execute() == []  # nothing left to send


def test_a_failing_block_sends_nothing(m: procshare.SyncManager) -> None:
    d = m.dict()
    with pytest.raises(ZeroDivisionError), d.pipeline() as pd:
        pd["a"] = 1
        1 / 0
    assert len(d) == 0


def test_large_pipelines_go_in_several_batches(m: procshare.SyncManager) -> None:
    lst = m.list()
    with m.pipeline(batch_size=1000) as p:
        for i in range(4500):
            p(lst).append(i)
    assert lst[:] == list(range(4500))
    assert len(p.results) == 4500


def test_custom_methods_are_refused_in_a_pipeline() -> None:
    class Box:
        def get(self) -> int:
            return 1

    class BoxManager(procshare.managers.BaseManager):
        pass

    BoxManager.register("Box", Box)
    BoxManager.register("dict", dict, procshare.managers.DictProxy)
    with BoxManager(ctx=FORK) as bm:
        box, d = bm.Box(), bm.dict()
        with bm.pipeline() as p:
            refused = p(box).get()
            fine = p(d).len()
        assert fine.value == 0
        with pytest.raises(procshare.ProcshareError, match="user code"):
            refused.value


def test_pipelines_from_many_processes_lose_nothing(m: procshare.SyncManager) -> None:
    lst = m.list()
    procs = [FORK.Process(target=children.pipelined_appends, args=(lst, w, 500)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    items = lst[:]
    assert sorted(items) == sorted((w, i) for w in range(4) for i in range(500))
    for w in range(4):  # each pipeline's items stay in its order
        assert [i for ww, i in items if ww == w] == list(range(500))


def test_a_cached_proxy_reads_its_own_pipelined_writes(m: procshare.SyncManager) -> None:
    d = m.dict().cache()
    with d.pipeline() as pd:
        pd["k"] = "v"
    assert d["k"] == "v"


def test_atomic_increments_are_exact_under_contention(m: procshare.SyncManager) -> None:
    v, d = m.Value("i", 0), m.dict()
    procs = [FORK.Process(target=children.atomic_increments, args=(v, d, 300)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert v.value == 1200 and d["hits"] == 1200


def test_compare_and_set_loops_are_exact(m: procshare.SyncManager) -> None:
    v = m.Value("i", 0)
    procs = [FORK.Process(target=children.cas_increments, args=(v, 200)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert v.value == 800


def test_atomic_operation_semantics(m: procshare.SyncManager) -> None:
    d = m.dict(n=1)
    assert d.increment("n") == 2 and d.increment("n", 5) == 7
    assert d.increment("fresh", 2, default=10) == 12
    assert d.compare_and_set("n", 7, 0) is True and d["n"] == 0
    assert d.compare_and_set("n", 7, 1) is False and d["n"] == 0
    with pytest.raises(KeyError):
        d.compare_and_set("absent", None, 1)
    with pytest.raises(TypeError):
        m.dict(s="text").increment("s")
    v = m.Value("d", 1.5)
    assert v.increment(0.5) == 2.0 and v.swap(9.0) == 2.0 and v.value == 9.0
    assert v.compare_and_set(9.0, 1.0) and v.value == 1.0


def test_cached_replicas_follow_atomic_operations(m: procshare.SyncManager) -> None:
    d = m.dict(n=0).cache()
    v = m.Value("i", 0).cache()
    other = procshare.managers.DictProxy(d._token, incref=True, manager=m)
    other.increment("n", 3)
    assert d.wait_until(lambda x: x["n"] == 3, timeout=5)["n"] == 3
    assert d.increment("n") == 4 and d["n"] == 4  # own write, read back at once
    assert v.increment() == 1 and v.value == 1
    assert v.compare_and_set(1, 5) and v.value == 5


def test_queue_bulk_put_in_a_pipeline(m: procshare.SyncManager) -> None:
    q = m.Queue()
    with q.pipeline() as pq:
        for i in range(100):
            pq.put_nowait(i)
    assert [q.get_nowait() for _ in range(100)] == list(range(100))
    with pytest.raises(queue.Empty):
        q.get_nowait()
