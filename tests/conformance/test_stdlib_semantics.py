"""Semantics checked by CPython's own manager tests (Lib/test/_test_multiprocessing.py).

procshare follows the standard library where it is defined; these mirror its manager tests.
"""

from __future__ import annotations

import collections.abc
import gc
import queue
import signal
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare.managers import BaseManager, BaseProxy, RemoteError


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(release_delay=0.2) as manager:
        yield manager


def test_dict_iteration_is_live(m: procshare.SyncManager) -> None:
    d = m.dict()
    indices = list(range(65, 70))
    for i in indices:
        d[i] = chr(i)
    it = iter(d)
    assert list(it) == indices
    assert list(it) == []  # exhausted
    it = iter(d)
    d.clear()
    with pytest.raises(RuntimeError):  # dictionary changed size during iteration
        next(it)


def test_list_iteration_sees_concurrent_writes(m: procshare.SyncManager) -> None:
    a = m.list(list(range(10)))
    it = iter(a)
    assert list(it) == list(range(10))
    assert list(it) == []
    it = iter(a)
    a[0] = 100
    assert next(it) == 100


def test_proxies_are_collection_abcs(m: procshare.SyncManager) -> None:
    d, lst = m.dict(), m.list()
    assert isinstance(d, collections.abc.MutableMapping)
    assert isinstance(lst, collections.abc.MutableSequence)
    for name in (
        "__contains__",
        "__delitem__",
        "__eq__",
        "__getitem__",
        "__iter__",
        "__len__",
        "__ne__",
        "__setitem__",
        "clear",
        "get",
        "items",
        "keys",
        "pop",
        "popitem",
        "setdefault",
        "update",
        "values",
    ):
        assert callable(getattr(d, name)), name
    for name in (
        "__contains__",
        "__delitem__",
        "__getitem__",
        "__iadd__",
        "__len__",
        "__reversed__",
        "__setitem__",
        "append",
        "clear",
        "count",
        "extend",
        "index",
        "insert",
        "pop",
        "remove",
        "reverse",
    ):
        assert callable(getattr(lst, name)), name


def test_dict_proxy_nested(m: procshare.SyncManager) -> None:
    pets = m.dict(ferrets=2, hamsters=4)
    supplies = m.dict(water=10, feed=3)
    d = m.dict(pets=pets, supplies=supplies)
    assert supplies["water"] == 10 and d["supplies"]["water"] == 10
    d["supplies"]["blankets"] = 5
    assert supplies["blankets"] == 5
    del pets
    del supplies
    gc.collect()
    time.sleep(0.4)  # past the release delay: still referenced from inside d
    assert d["pets"]["ferrets"] == 2
    pets, supplies = d["pets"], d["supplies"]
    d.clear()
    assert len(d) == 0 and supplies["water"] == 10 and pets["hamsters"] == 4
    lst = m.list([pets, supplies])
    lst[0]["marmots"] = 1
    assert pets["marmots"] == 1
    outer = m.list([[88, 99], lst])
    assert isinstance(outer[0], list)  # not a ListProxy
    assert outer[-1][-1]["feed"] == 3


def test_list_proxy_in_list(m: procshare.SyncManager) -> None:
    a = m.list([m.list(range(3)) for _ in range(3)])
    assert [inner[:] for inner in a] == [[0, 1, 2]] * 3
    a[0][-1] = 55
    assert a[0][:] == [0, 1, 55]
    assert a[1].pop() == 2 and len(a[1]) == 2
    b = m.list()
    b.append(b)  # a list that contains itself
    del b


def test_nested_queue(m: procshare.SyncManager) -> None:
    a = m.list()
    a.append(m.Queue())
    a[0].put(123)
    assert a[0].get() == 123
    b = m.dict()
    b[0] = m.Queue()
    b[0].put(456)
    assert b[0].get() == 456


def test_namespace(m: procshare.SyncManager) -> None:
    n = m.Namespace()
    n.name = "Bob"
    n.job = "Builder"
    n._hidden = "hidden"
    assert (n.name, n.job) == ("Bob", "Builder")
    del n.job
    assert str(n) == "Namespace(name='Bob')"
    assert hasattr(n, "name") and not hasattr(n, "job")


def test_a_failing_constructor_is_a_remote_error(m: procshare.SyncManager) -> None:
    with pytest.raises(RemoteError):
        m.Pool(-1)
    with pytest.raises(RemoteError, match="ValueError"):
        m.Semaphore(-1)


def test_referent_exceptions_leave_no_reference_cycle(m: procshare.SyncManager) -> None:
    q = m.Queue()
    enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            q.get_nowait()
        except queue.Empty as e:
            wr = weakref.ref(e)
        assert wr() is None
    finally:
        if enabled:
            gc.enable()


# -- a customized manager class (CPython's _TestMyManager) ---------------------------------------


class FooBar:
    def f(self) -> str:
        return "f()"

    def g(self) -> None:
        raise ValueError

    def _h(self) -> str:
        return "_h()"


def baz() -> Iterator[int]:
    yield from (i * i for i in range(10))


class IteratorProxy(BaseProxy):
    _exposed_ = ("__next__",)

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self) -> Any:
        return self._callmethod("__next__")


class MyManager(BaseManager):
    pass


MyManager.register("Foo", callable=FooBar)
MyManager.register("Bar", callable=FooBar, exposed=("f", "_h"))
MyManager.register("baz", callable=baz, proxytype=IteratorProxy)


def common(manager: Any) -> None:
    foo, bar, baz_ = manager.Foo(), manager.Bar(), manager.baz()
    assert [n for n in ("f", "g", "_h") if hasattr(foo, n)] == ["f", "g"]
    assert [n for n in ("f", "g", "_h") if hasattr(bar, n)] == ["f", "_h"]
    assert foo.f() == "f()"
    with pytest.raises(ValueError):
        foo.g()
    assert foo._callmethod("f") == "f()"
    with pytest.raises(RemoteError):
        foo._callmethod("_h")
    assert bar.f() == "f()" and bar._h() == "_h()"
    assert bar._callmethod("_h") == "_h()"
    assert list(baz_) == [i * i for i in range(10)]


def test_mymanager() -> None:
    manager = MyManager()
    manager.start()
    common(manager)
    manager.shutdown()
    assert manager._process.exitcode in (0, -signal.SIGTERM)


def test_mymanager_context_prestarted() -> None:
    manager = MyManager()
    manager.start()
    with manager:
        common(manager)
    assert manager._process.exitcode == 0


_queue: queue.Queue[Any] = queue.Queue()


def get_queue() -> queue.Queue[Any]:
    return _queue


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue", callable=get_queue)


def test_rapid_restart() -> None:
    manager = QueueManager(address=("127.0.0.1", 0), authkey=b"restart")
    srvr = manager.get_server()
    addr = srvr.address
    srvr.listener.close()
    manager.start()
    manager.get_queue().put("hello")
    manager.shutdown()
    manager = QueueManager(address=addr, authkey=b"restart")
    manager.start()  # the same address right away
    manager.shutdown()


def test_no_objects_leak() -> None:
    with procshare.Manager(release_delay=0.1) as manager:
        d = manager.dict(a=manager.list([1]))
        items = [manager.Value("i", i) for i in range(5)]
        for it in (iter(d), iter(manager.set([1]))):
            next(it)
        del d, items, it
        gc.collect()
        time.sleep(0.3)  # the dict is disposed of after the release delay, then its contents
        assert manager._number_of_objects() == 0, manager._debug_info()
