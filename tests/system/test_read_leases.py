"""Reads answered locally while unchanged (``#READ`` leases), across real processes.

A quick pure read of a shared dict, list, set, Namespace, Value or Array comes back with a
lease, and the same read made again is answered without the server until the object changes.
These tests check that it is (the server counts no call), and above all that a leased read
never misses a change that finished before it began, whoever made it and however we learned
of it: here, each change is made by another process that then tells us through a pipe the
server never sees. Every mutating method of each kind is covered.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

import procshare
from tests import _children
from tests._threads import run_threads


def _calls(manager: Any) -> int:
    return int(manager._channel().control("stats")["counters"]["calls"])


def _leasing(proxy: Any) -> bool:
    return proxy._channel().leases is not None


Reads = Callable[[Any], tuple[Any, ...]]


def _item(d: Any, key: Any) -> Any:
    """``d[key]``, or ``None`` where it raises KeyError (a read that raises is made too)."""
    try:
        return d[key]
    except KeyError:
        return None


# kind: (make it, the reads, [(change made by the other process, what the reads give after)])
KINDS: dict[str, tuple[Callable[[Any], Any], Reads, list[tuple[tuple[str, tuple[Any, ...]], Any]]]]
KINDS = {
    "dict": (
        lambda m: m.dict(a=1, b=2),
        lambda d: (d.get("a"), len(d), "b" in d, d.get("b", 0), _item(d, "b")),
        [
            (("__setitem__", ("a", 5)), (5, 2, True, 2, 2)),
            (("update", ({"b": 7},)), (5, 2, True, 7, 7)),
            (("pop", ("a",)), (None, 1, True, 7, 7)),
            (("setdefault", ("a", 9)), (9, 2, True, 7, 7)),
            (("increment", ("a", 3)), (12, 2, True, 7, 7)),
            (("compare_and_set", ("a", 12, 4)), (4, 2, True, 7, 7)),
            (("__delitem__", ("b",)), (4, 1, False, 0, None)),
            (("__ior__", ({"b": 1},)), (4, 2, True, 1, 1)),
            (("__setitem__", ("b", (1, "t"))), (4, 2, True, (1, "t"), (1, "t"))),
            (("__setitem__", ("b", (1, "u"))), (4, 2, True, (1, "u"), (1, "u"))),
            (("popitem", ()), (4, 1, False, 0, None)),
            (("clear", ()), (None, 0, False, 0, None)),
        ],
    ),
    "list": (
        lambda m: m.list([1, 2]),
        lambda lst: (lst[0] if len(lst) else None, len(lst), 3 in lst),
        [
            (("append", (3,)), (1, 3, True)),
            (("__setitem__", (0, 9)), (9, 3, True)),
            (("insert", (0, 4)), (4, 4, True)),
            (("remove", (3,)), (4, 3, False)),
            (("reverse", ()), (2, 3, False)),
            (("sort", ()), (2, 3, False)),
            (("extend", ([3],)), (2, 4, True)),
            (("pop", (0,)), (4, 3, True)),
            (("__iadd__", ([5],)), (4, 4, True)),
            (("__imul__", (2,)), (4, 8, True)),
            (("__delitem__", (0,)), (9, 7, True)),
            (("clear", ()), (None, 0, False)),
        ],
    ),
    "set": (
        lambda m: m.set(),
        lambda s: (1 in s, len(s)),
        [
            (("add", (1,)), (True, 1)),
            (("update", ([2, 3],)), (True, 3)),
            (("discard", (1,)), (False, 2)),
            (("symmetric_difference_update", ([1, 2],)), (True, 2)),
            (("difference_update", ([1],)), (False, 1)),
            (("intersection_update", ([3, 1],)), (False, 1)),
            (("add", (1,)), (True, 2)),
            (("remove", (1,)), (False, 1)),
            (("pop", ()), (False, 0)),
            (("update", ([1],)), (True, 1)),
            (("clear", ()), (False, 0)),
        ],
    ),
    "Namespace": (
        lambda m: m.Namespace(x=1),
        lambda ns: (getattr(ns, "x", None),),
        [
            (("__setattr__", ("x", 2)), (2,)),
            (("__delattr__", ("x",)), (None,)),
            (("__setattr__", ("x", "back")), ("back",)),
        ],
    ),
    "Value": (
        lambda m: m.Value("i", 1),
        lambda v: (v.value,),
        [
            (("set", (2,)), (2,)),
            (("increment", (5,)), (7,)),
            (("swap", (3,)), (3,)),
            (("compare_and_set", (3, 4)), (4,)),
            (("compare_and_set", (3, 5)), (4,)),  # fails: unchanged, still right
        ],
    ),
    "Event": (
        lambda m: m.Event(),
        lambda e: (e.is_set(),),
        [
            (("set", ()), (True,)),
            (("set", ()), (True,)),
            (("clear", ()), (False,)),
            (("wait", (0.0,)), (False,)),
            (("set", ()), (True,)),
        ],
    ),
    "Array": (
        lambda m: m.Array("i", [1, 2, 3]),
        lambda a: (a[0], a[-1], len(a)),
        [
            (("__setitem__", (0, 7)), (7, 3, 3)),
            (("__setitem__", (-1, 8)), (7, 8, 3)),
        ],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_change_told_through_a_pipe_is_seen_by_the_next_read(
    manager: Any, ctx: Any, kind: str
) -> None:
    """Linearizability: the other process's change returns, then it tells us through a pipe;
    our next read, though a lease answered the one before, must see the change."""
    make, reads, steps = KINDS[kind]
    obj = make(manager)
    ours, theirs = procshare.Pipe()
    child = ctx.Process(
        target=_children.change_on_cue, args=(obj, [call for call, _ in steps], theirs)
    )
    child.start()
    try:
        before = reads(obj)
        for call, expected in steps:
            assert reads(obj) == before  # (answered by leases from the second time on)
            ours.send("go")
            assert ours.recv() == "done"
            after = reads(obj)
            assert after == expected, f"after {call}: {after} != {expected}"
            before = after
    finally:
        child.join(60)
    assert child.exitcode == 0


@pytest.mark.parametrize("kind", list(KINDS))
def test_reads_made_again_make_no_server_call(manager: Any, kind: str) -> None:
    make, reads, _ = KINDS[kind]
    obj = make(manager)
    if not _leasing(obj):
        pytest.skip("leases are off on this platform")
    first = reads(obj)
    assert reads(obj) == first  # (leased from the second time on)
    before = _calls(manager)
    for _ in range(5):
        assert reads(obj) == first
    assert _calls(manager) == before


def test_own_writes_are_read_back(manager: Any) -> None:
    d, v = manager.dict(k=0), manager.Value("i", 0)
    for i in range(1, 50):
        assert d["k"] == i - 1 and d["k"] == i - 1 and v.value == i - 1
        d["k"] = i
        v.value += 1
        assert d["k"] == i and v.value == i


def test_threads_sharing_a_connection_read_each_others_writes(manager: Any) -> None:
    v, d = manager.Value("i", 0), manager.dict()

    def work(n: int) -> None:
        for i in range(200):
            v.increment()
            seen = v.value
            d[n] = i
            assert d[n] == i and v.value >= seen

    run_threads(work, [(n,) for n in range(3)])
    assert v.value == 600 and d.copy() == {0: 199, 1: 199, 2: 199}


def test_mutable_values_are_never_answered_locally(manager: Any) -> None:
    d = manager.dict(items=[1], frozen=(1, 2))
    got = d["items"]
    got.append(2)  # our copy: the shared one is unchanged
    assert d["items"] == [1] and d.get("items") == [1]
    assert d["frozen"] == (1, 2)
    d["items"] += [3]
    assert d["items"] == [1, 3]


def test_a_read_that_raises_is_not_leased(manager: Any, run: Any) -> None:
    d = manager.dict()
    for _ in range(3):
        with pytest.raises(KeyError):
            d["k"]
    run(_children.set_item, d, "k", 1)
    assert d["k"] == 1


def test_reads_that_compare_equal_across_types_are_not_mixed_up(manager: Any) -> None:
    d = manager.dict({1: "int"})
    assert d.get(1, 0) == "int" and d.get(2, 0) == 0 and d.get(2, 0) == 0
    assert d.get(2, False) is False and d.get(2, 0.0) == 0.0
    assert type(d.get(2, 0.0)) is float and d.get(2) is None
    assert 1 in d and True in d  # (a bool key is not leased: it goes to the server)


def test_a_key_changed_after_each_read_is_leased_again_once_it_stays(manager: Any) -> None:
    """A read whose lease keeps ending unused is made plainly for a while: it must come back
    to being answered locally once the writes stop."""
    v = manager.Value("i", 0)
    for _ in range(40):
        v.increment()  # (a round trip: a plain write may be posted, which ends leasing)
    for _ in range(40):  # (the plain reads still owed, then one read with a lease)
        assert v.value == 40
    if _leasing(v):
        before = _calls(manager)
        for _ in range(10):
            assert v.value == 40
        assert _calls(manager) == before


def test_reads_after_the_server_was_killed_raise_and_never_hang(ctx: Any) -> None:
    """A dead server's page stays mapped with its last epochs: a lease must not answer then."""
    m = procshare.Manager(ctx=ctx)
    d = m.dict(k=1)
    assert d["k"] == 1 and d["k"] == 1  # leased
    out = ctx.SimpleQueue()
    child = ctx.Process(target=_children.read_forever, args=(d, "k", out))
    child.start()
    assert out.get() == "reading"
    os.kill(m._process.pid, signal.SIGKILL)
    m._process.join(10)
    child.join(60)
    assert out.get() == "ConnectionLost"
    started = time.monotonic()
    with pytest.raises(procshare.ConnectionLost):
        d["k"]
    assert time.monotonic() - started < 10
    m.shutdown()


def test_tcp_connections_read_plainly_and_stay_correct(run: Any) -> None:
    with procshare.Manager(address=("127.0.0.1", 0)) as m:
        d = m.dict(k=0)
        assert d._channel().leases is None
        assert d["k"] == 0
        run(_children.set_item, d, "k", 1)
        assert d["k"] == 1


class _CustomDictManager(procshare.managers.BaseManager):
    pass


class _UserDict(dict):  # type: ignore[type-arg]
    """A class of the user's, not one of the server's kinds, shown through a DictProxy."""


_CustomDictManager.register("dict", _UserDict, procshare.managers.DictProxy)


def test_a_custom_type_behind_a_builtin_proxy_is_read_plainly(run: Any) -> None:
    with _CustomDictManager() as m:
        d = m.dict()
        d["k"] = 1
        assert d["k"] == 1 and d["k"] == 1
        if _leasing(d):
            assert d._leasing is False  # declined once, never asked again
        run(_children.set_item, d, "k", 2)
        assert d["k"] == 2


def test_reading_more_keys_than_a_process_keeps_leased_goes_on_leasing(manager: Any) -> None:
    """The leases a process keeps are bounded (``MAX_LEASES``): past it, it starts afresh."""
    from procshare._leases import MAX_LEASES

    n = MAX_LEASES + 10
    d = manager.dict({i: i for i in range(n)})
    assert all(d[i] == i for i in range(n))
    assert all(d[i] == i for i in range(n))  # (leased from the second time on)
    assert d[0] == 0 and d[0] == 0 and d[n - 1] == n - 1
    if _leasing(d):
        before = _calls(manager)
        assert d[0] == 0 and d[n - 1] == n - 1
        assert _calls(manager) == before


def test_leases_can_be_turned_off(run: Any) -> None:
    with procshare.Manager(leases=False) as m:
        d, lock = m.dict(k=0), m.Lock()
        assert d._channel().leases is None
        before = _calls(m)
        for _ in range(3):
            assert d["k"] == 0
            with lock:
                assert d["k"] == 0
        assert _calls(m) - before == 6 + 6  # every read, acquire and release reached it
        run(_children.set_item, d, "k", 1)
        assert d["k"] == 1


def test_a_change_ends_the_leases_on_that_object_only(manager: Any, run: Any) -> None:
    flag, counter, lock = manager.dict(mode="run"), manager.Value("i", 0), manager.Lock()
    for _ in range(2):
        assert flag["mode"] == "run" and counter.value == 0
    if not _leasing(flag):
        pytest.skip("leases are off on this platform")
    run(_children.set_value, counter, 5)  # another object changes; so does the lock
    with lock:
        pass
    before = _calls(manager)
    assert flag["mode"] == "run"  # still leased
    assert _calls(manager) == before
    assert counter.value == 5  # read afresh
