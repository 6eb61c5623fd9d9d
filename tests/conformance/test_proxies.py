"""Every shared type and its methods, used as the standard library's are, across processes.

Each test runs under fork and spawn (the ``ctx`` fixture): proxies travel to children both by
inheritance and by pickling.
"""

from __future__ import annotations

import array
import copy
import pickle
import queue
import threading
import time
from typing import Any

import pytest

import procshare
from procshare.managers import (
    AcquirerProxy,
    BaseProxy,
    DictProxy,
    ListProxy,
    Namespace,
    QueueProxy,
    ValueProxy,
)
from tests import _children as children
from tests._threads import run_threads


def test_dict_proxy_matches_dict(manager: procshare.SyncManager) -> None:
    d = manager.dict({"a": 1}, b=2)
    assert isinstance(d, DictProxy)
    d["c"] = 3
    assert d["a"] == 1 and len(d) == 3 and "b" in d and "z" not in d
    assert d.get("z", 9) == 9 and d.get("a") == 1
    assert sorted(d.keys()) == ["a", "b", "c"] and sorted(d.values()) == [1, 2, 3]
    assert sorted(d.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert sorted(d) == ["a", "b", "c"] and list(reversed(d)) == ["c", "b", "a"]
    assert d.setdefault("a", 100) == 1 and d.setdefault("n", 5) == 5
    assert d.pop("n") == 5 and d.pop("n", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("n")
    with pytest.raises(KeyError):
        _ = d["missing"]
    del d["c"]
    d.update({"x": 1}, y=2)
    assert d.copy() == {"a": 1, "b": 2, "x": 1, "y": 2} == dict(d) == d._getvalue()
    assert d | {"q": 0} == {"a": 1, "b": 2, "x": 1, "y": 2, "q": 0}
    d |= {"z": 26}
    assert d["z"] == 26
    assert d.popitem() == ("z", 26)
    assert str(d) == repr({"a": 1, "b": 2, "x": 1, "y": 2})
    assert repr(d).startswith("<DictProxy object, typeid 'dict' at")
    d.clear()
    assert len(d) == 0


def test_list_proxy_matches_list(manager: procshare.SyncManager) -> None:
    lst = manager.list([3, 1, 2])
    assert isinstance(lst, ListProxy)
    lst.append(4)
    lst.extend([5, 6])
    lst += [7]
    lst.insert(0, 0)
    assert lst[:] == [0, 3, 1, 2, 4, 5, 6, 7] and lst[-1] == 7 and len(lst) == 8
    lst[1] = 33
    del lst[1]
    assert lst.pop() == 7 and lst.pop(0) == 0
    lst.remove(4)
    assert lst.index(5) == 2 and lst.count(2) == 1 and 6 in lst
    lst.sort(reverse=True)
    assert list(lst) == [6, 5, 2, 1]
    lst.reverse()
    assert list(reversed(lst)) == [6, 5, 2, 1]
    assert lst + [9] == [1, 2, 5, 6, 9]  # noqa: RUF005 - testing the proxy's __add__ and lst * 2 == [1, 2, 5, 6] * 2 and 2 * lst == lst * 2
    lst *= 2
    assert len(lst) == 8
    with pytest.raises(IndexError):
        lst[100]
    with pytest.raises(ValueError):
        lst.remove(1000)
    assert str(lst) == "[1, 2, 5, 6, 1, 2, 5, 6]"
    lst.clear()
    assert lst.copy() == []


def test_set_proxy(manager: procshare.SyncManager) -> None:
    s = manager.set([1, 2])
    s.add(3)
    s.discard(1)
    assert 2 in s and len(s) == 2 and sorted(s) == [2, 3]
    s.update([4], {5})
    assert s.union({9}) == {2, 3, 4, 5, 9} and s.issubset(range(10))
    with pytest.raises(KeyError):
        s.remove(100)


def test_namespace_value_and_array(manager: procshare.SyncManager) -> None:
    ns = manager.Namespace(x=1)
    ns.y = "two"
    assert ns.x == 1 and ns.y == "two"
    del ns.x
    with pytest.raises(AttributeError):
        _ = ns.x
    assert str(ns) == "Namespace(y='two')"
    v = manager.Value("i", 7)
    assert isinstance(v, ValueProxy)
    v.value += 1
    v.set(v.get() * 2)
    assert v.value == 16 and str(v) == "Value('i', 16)"
    arr = manager.Array("d", [1.0, 2.0])
    arr[0] = 5.5
    assert len(arr) == 2 and arr[0] == 5.5 and list(arr) == [5.5, 2.0]
    assert arr[:] == array.array("d", [5.5, 2.0]) and str(arr) == "array('d', [5.5, 2.0])"


def test_values_are_copies_as_in_the_stdlib(manager: procshare.SyncManager) -> None:
    d = manager.dict()
    d["l"] = [1]
    got = d["l"]
    got.append(2)  # changes the copy, not the shared value
    assert d["l"] == [1]
    assert copy.deepcopy(d) == {"l": [1]}


def test_nested_proxies_work_across_processes(manager: procshare.SyncManager, run: Any) -> None:
    d = manager.dict()
    d["inner"] = manager.list(["from parent"])
    d["ns"] = manager.Namespace()
    inner = d["inner"]
    assert isinstance(inner, ListProxy)
    run(children.use_nested, d)
    assert d["inner"][:] == ["from parent", "from child"] == inner[:]
    assert isinstance(d["ns"].child, int)
    outer = manager.list([manager.dict(k=1)])
    assert outer[0]["k"] == 1


def test_a_nested_object_outlives_its_first_proxy(manager: procshare.SyncManager) -> None:
    d = manager.dict()
    d["inner"] = manager.list([1, 2])  # the only proxy is dropped right away
    import gc
    import time

    gc.collect()
    time.sleep(1.0)  # longer than the release delay
    assert d["inner"][:] == [1, 2]


def test_children_write_and_parent_reads(manager: procshare.SyncManager, run: Any) -> None:
    d = manager.dict()
    lst = manager.list()
    for i in range(3):
        run(children.set_item, d, i, i * 10)
    run(children.append_many, lst, list(range(5)))
    assert dict(d) == {0: 0, 1: 10, 2: 20}
    assert lst[:] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_locked_counter_is_exact(manager: procshare.SyncManager, ctx: Any, kind: str) -> None:
    # (300 turns each: enough for the lock to be kept by its releaser and handed over fairly)
    v, lock = manager.Value("i", 0), getattr(manager, kind)()
    procs = [ctx.Process(target=children.locked_increments, args=(v, lock, 300)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert v.value == 1200


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_acquirers(manager: procshare.SyncManager, kind: str) -> None:
    lock = getattr(manager, kind)()
    assert isinstance(lock, AcquirerProxy)
    assert lock.acquire() is True
    if kind == "RLock":
        assert lock.acquire(False) is True  # reentrant
        lock.release()
    else:
        assert lock.acquire(False) is False
        assert lock.acquire(True, 0.05) is False
    lock.release()
    with lock:
        pass
    if kind in ("Lock", "RLock"):
        with pytest.raises(RuntimeError):
            lock.release()


def test_rlock_is_owned_per_thread(manager: procshare.SyncManager) -> None:
    rlock = manager.RLock()
    rlock.acquire()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(rlock.acquire(timeout=0.05)))
    t.start()
    t.join()
    assert result == [False]
    rlock.release()


def test_threads_share_one_connection_without_blocking_each_other(
    manager: procshare.SyncManager,
) -> None:
    lock = manager.Lock()
    d = manager.dict()
    lock.acquire()
    got: list[bool] = []
    blocked = threading.Thread(target=lambda: got.append(lock.acquire(timeout=10)))
    blocked.start()
    for i in range(50):  # another thread's calls go through while one waits on the server
        d[i] = i
    assert len(d) == 50 and blocked.is_alive()
    lock.release()
    blocked.join(10)
    assert got == [True]


def test_many_threads_hammering_one_connection_lose_nothing(
    manager: procshare.SyncManager,
) -> None:
    d, q = manager.dict(), manager.Queue()

    def work(t: int) -> None:
        for i in range(150):
            if i % 25 == 0:  # pipelines (several frames at once) mixed with plain calls
                with manager.pipeline() as p:
                    for j in range(5):
                        p(d).increment(("p", t, j))
            elif i % 3 == 0:
                q.put((t, i))
                q.get(timeout=10)
            else:
                d[(t, i)] = i
                assert d[(t, i)] == i

    run_threads(work, [(t,) for t in range(8)])
    plain = sum(1 for i in range(150) if i % 25 and i % 3)
    assert len(d) == 8 * (plain + 5)
    assert all(d[("p", t, j)] == 6 for t in range(8) for j in range(5))


def test_condition_across_processes(manager: procshare.SyncManager, ctx: Any) -> None:
    cond = manager.Condition()
    flag = manager.Value("b", False)
    out = manager.list()
    p = ctx.Process(target=children.condition_waiter, args=(cond, flag, out))
    p.start()
    import time

    time.sleep(0.3)
    with cond:
        flag.value = True
        cond.notify_all()
    p.join(30)
    assert p.exitcode == 0 and out[:] == [True]


def test_condition_over_a_shared_lock(manager: procshare.SyncManager) -> None:
    lock = manager.Lock()
    cond = manager.Condition(lock)
    with cond:
        assert lock.locked()
        assert cond.wait(0.01) is False
    assert not lock.locked()


def test_event_across_processes(manager: procshare.SyncManager, ctx: Any) -> None:
    ev = manager.Event()
    out = manager.list()
    p = ctx.Process(target=children.wait_event_then_record, args=(ev, out))
    p.start()
    assert not ev.is_set()
    ev.set()
    p.join(30)
    assert out[:] == [True] and ev.is_set() and ev.wait(0) is True
    ev.clear()
    assert ev.wait(0.01) is False


def test_barrier_across_processes(manager: procshare.SyncManager, ctx: Any) -> None:
    barrier = manager.Barrier(3)
    out = manager.list()
    procs = [ctx.Process(target=children.barrier_wait, args=(barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    idx = barrier.wait(30)
    for p in procs:
        p.join(30)
    assert sorted([*out[:], idx]) == [0, 1, 2]
    assert barrier.parties == 3 and barrier.n_waiting == 0 and barrier.broken is False
    barrier.abort()
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()


def test_queue_across_processes(manager: procshare.SyncManager, ctx: Any) -> None:
    q = manager.Queue()
    assert isinstance(q, QueueProxy)
    out = manager.list()
    consumer = ctx.Process(target=children.get_n, args=(q, 20, out))
    consumer.start()
    children.put_all(q, list(range(20)))
    consumer.join(30)
    assert out[:] == list(range(20))
    assert q.empty() and q.qsize() == 0 and not q.full()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    bounded = manager.Queue(1)
    bounded.put_nowait(1)
    with pytest.raises(queue.Full):
        bounded.put(2, timeout=0.01)


def test_joinable_queue(manager: procshare.SyncManager) -> None:
    q = manager.JoinableQueue()
    q.put(1)
    assert q.get() == 1
    q.task_done()
    q.join()
    with pytest.raises(ValueError):
        q.task_done()


class Employee:
    """The seed's custom class, registered on a BaseManager subclass."""

    def __init__(self, name: str, salary: int) -> None:
        self.name = name
        self.salary = salary

    def increase(self) -> None:
        self.salary += 100

    def get_pay(self) -> str:
        return f"{self.name}:{self.salary}"

    def numbers(self) -> Any:
        return iter(range(3))


class EmployeeManager(procshare.BaseManager):
    pass


EmployeeManager.register("Employee", Employee, method_to_typeid={"numbers": "Iterator"})
EmployeeManager.register(
    "Iterator", proxytype=procshare.managers.IteratorProxy, create_method=False
)


def test_registered_class_with_autoproxy(ctx: Any) -> None:
    with EmployeeManager(ctx=ctx) as m:
        em = m.Employee("zhang", 1000)
        lock = procshare.get_context(ctx.get_start_method()).Lock()
        procs = [ctx.Process(target=children.call_custom, args=(em, lock, 5)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert em.get_pay() == "zhang:2500"
        assert list(em.numbers()) == [0, 1, 2]
        with pytest.raises(AttributeError):
            em._callmethod("__dict__")
        assert "Employee object" in str(em)


def test_pool_in_the_server(manager: procshare.SyncManager) -> None:
    with manager.Pool(2) as pool:
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
        result = pool.apply_async(pow, (2, 10))
        assert result.get(timeout=30) == 1024
        assert sorted(pool.imap_unordered(abs, [-4, 5])) == [4, 5]


def test_proxies_pickle_with_their_type(manager: procshare.SyncManager) -> None:
    d = manager.dict(a=1)
    clone = pickle.loads(pickle.dumps(d))
    assert type(clone) is DictProxy and clone["a"] == 1
    clone["b"] = 2
    assert d["b"] == 2


def test_proxy_keeps_its_manager_alive(ctx: Any) -> None:
    d = procshare.Manager(ctx=ctx).dict()  # the manager object itself is not kept
    import gc

    gc.collect()
    d["still"] = "here"
    assert d["still"] == "here"
    assert isinstance(d._manager, procshare.SyncManager)
    d._manager.shutdown()


def test_base_proxy_api(manager: procshare.SyncManager) -> None:
    d = manager.dict(x=1)
    assert isinstance(d, BaseProxy)
    assert d._callmethod("__getitem__", ("x",)) == 1
    assert d._getvalue() == {"x": 1}
    assert d._token.typeid == "dict"
    assert manager._number_of_objects() >= 1
    assert "refcount" in manager._debug_info()


def test_manager_module_namespace_is_the_stdlib_one() -> None:
    ns = Namespace(a=1, _hidden=2)
    assert repr(ns) == "Namespace(a=1)"


def test_snapshots_never_go_stale_across_processes(
    manager: procshare.SyncManager, run: Any
) -> None:
    d = manager.dict({i: i for i in range(5000)})
    assert len(d.copy()) == 5000
    run(children.set_item, d, "late", "write")
    assert d.copy()["late"] == "write"
    assert dict(d.items())["late"] == "write"


def test_snapshots_of_objects_holding_proxies_keep_references_right(
    manager: procshare.SyncManager,
) -> None:
    outer = manager.list([manager.list([i]) for i in range(300)])
    for _ in range(3):
        inners = outer.copy()  # each copy hands out 300 proxies: never from a stale snapshot
        assert [inner[0] for inner in inners[:3]] == [0, 1, 2]
        del inners
    import gc
    import time

    gc.collect()
    time.sleep(1.0)
    assert outer[299][:] == [299]


def _notify_and_count(cond: Any, hold: bool, how: str, n: int) -> Any:
    """Notify (holding the condition's lock or not); what came of it: the exception's type
    or None."""
    try:
        if hold:
            with cond:
                getattr(cond, how)(*((n,) if how == "notify" else ()))
        else:
            getattr(cond, how)(*((n,) if how == "notify" else ()))
    except Exception as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("how", ["notify", "notify_all"])
@pytest.mark.parametrize("hold", [True, False])
def test_notify_behaves_as_the_stdlibs(
    manager: procshare.SyncManager, stdlib_manager: Any, hold: bool, how: str
) -> None:
    """Held, a notify does not wait for the server's reply (it cannot fail): it must still
    come of what the stdlib's does, in order with what follows."""
    ours = _notify_and_count(manager.Condition(), hold, how, 2)
    theirs = _notify_and_count(stdlib_manager.Condition(), hold, how, 2)
    assert ours == theirs


def test_a_notify_made_holding_the_lock_wakes_the_waiter(
    manager: procshare.SyncManager, ctx: Any
) -> None:
    cond = manager.Condition()
    flag = manager.Value("b", False)
    out = manager.list()
    p = ctx.Process(target=children.condition_waiter, args=(cond, flag, out))
    p.start()
    deadline = time.monotonic() + 30
    while not _has_waiter(manager, cond):
        assert time.monotonic() < deadline, "the waiter never waited"
        time.sleep(0.005)
    with cond:
        flag.value = True
        cond.notify()  # (posted: no reply awaited)
        assert cond._holding  # the proxy knew it held the lock (so it posted the notify)
    p.join(30)
    assert p.exitcode == 0 and out[:] == [True]


def _has_waiter(manager: procshare.SyncManager, cond: Any) -> bool:
    for obj in manager.stats()["objects"]:
        if obj["id"] == cond._id:
            return bool(obj.get("state", {}).get("waiters"))
    return False
