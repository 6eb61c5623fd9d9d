"""Cached reads: local replicas kept current by the server, with the rules the README states."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procshare
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def test_a_cached_proxy_answers_locally_and_stays_current(m: procshare.SyncManager) -> None:
    d = m.dict(a=1).cache()
    assert d.cached and d["a"] == 1 and "a" in d and len(d) == 1 and d.get("zz") is None
    calls = m.stats()["counters"]["calls"]
    for _ in range(100):
        assert d["a"] == 1
    assert m.stats()["counters"]["calls"] == calls  # no round trip for those reads
    p = FORK.Process(target=children.set_item, args=(d, "a", 2))
    p.start()
    p.join(30)
    assert d.wait_until(lambda v: v["a"] == 2, timeout=5)  # the change event arrives
    deadline = time.monotonic() + 5
    while d["a"] != 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert d["a"] == 2


def test_every_cacheable_kind(m: procshare.SyncManager) -> None:
    lst = m.list([3, 1, 2]).cache()
    lst.sort()
    assert lst[:] == [1, 2, 3] and lst.index(2) == 1 and lst.count(3) == 1 and len(lst) == 3
    s = m.set({1, 2}).cache()
    popped = s.pop()  # which one depends on hashing: the replica follows the server's choice
    assert popped not in s and len(s) == 1 and s.copy() == {3 - popped}
    ns = m.Namespace(x=1).cache()
    ns.y = 2
    assert (ns.x, ns.y) == (1, 2)
    v = m.Value("i", 1).cache()
    v.value += 1
    assert v.value == 2
    a = m.Array("i", [1, 2]).cache()
    a[0] = 9
    assert a[0] == 9 and a.tolist() == [9, 2] and len(a) == 2
    with pytest.raises(TypeError, match="cannot be cached"):
        m.Lock().cache()


def test_cached_reads_are_copies(m: procshare.SyncManager) -> None:
    d = m.dict(l=[1, 2]).cache()
    got = d["l"]
    got.append(3)
    assert d["l"] == [1, 2]
    items = d.items()
    items[0][1].append(99)
    assert d.copy() == {"l": [1, 2]}


def test_writers_always_read_their_own_writes(m: procshare.SyncManager) -> None:
    d = m.dict()
    out = FORK.Queue()
    procs = [
        FORK.Process(target=children.cached_writer, args=(d, f"k{w}", 200, out)) for w in range(4)
    ]
    for p in procs:
        p.start()
    stale = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert stale == [0, 0, 0, 0]
    assert {d[f"k{w}"] for w in range(4)} == {199}


def test_reads_never_go_back_in_time(m: procshare.SyncManager) -> None:
    d = m.dict(n=-1)
    cached = m.dict().cache()  # unrelated, just to show many replicas coexist
    reader = procshare.managers.DictProxy(d._token, incref=True, manager=m).cache()
    p = FORK.Process(target=children.write_numbers, args=(d, "n", 500))
    p.start()
    seen = []
    while p.is_alive() or (seen and seen[-1] != 499):
        seen.append(reader["n"])
        if len(seen) > 200_000:
            break
    p.join(30)
    assert seen == sorted(seen), "a cached read went backwards"
    assert reader.wait_until(lambda v: v["n"] == 499, timeout=5)["n"] == 499
    assert len(cached) == 0


def test_manager_wide_caching() -> None:
    with procshare.Manager(ctx=FORK, cache=True) as cm:
        d, lock = cm.dict(x=1), cm.Lock()
        assert d.cached and d["x"] == 1
        assert not hasattr(lock, "cached") or not lock.cached


def test_a_cached_proxy_sent_to_a_child_asks_the_server_there(m: procshare.SyncManager) -> None:
    d = m.dict(a=0).cache()
    p = FORK.Process(target=children.set_item, args=(d, "a", 5))  # writes through its own copy
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert d.wait_until(lambda v: v["a"] == 5, timeout=5)["a"] == 5


keys = st.sampled_from(["a", "b"])
steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["A", "B", "S"]), st.just("set"), keys, st.integers(0, 9)),
        st.tuples(st.sampled_from(["A", "B"]), st.just("get"), keys, st.none()),
        st.tuples(st.just("-"), st.just("pause"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_interleavings_keep_the_rules(m: procshare.SyncManager, steps: list[Any]) -> None:
    """Two cached proxies (A, B) and an uncached one (S) of one dict, in any interleaving:
    a proxy never reads a value older than its own last write, nor older than what it read
    before, and every value it reads was written at some point."""
    shared = m.dict()
    proxies = {
        "A": procshare.managers.DictProxy(shared._token, incref=True, manager=m).cache(),
        "B": procshare.managers.DictProxy(shared._token, incref=True, manager=m).cache(),
        "S": shared,
    }
    history: dict[str, list[Any]] = {"a": [None], "b": [None]}  # values in write order
    floor = {(p, k): 0 for p in "AB" for k in "ab"}  # index of the oldest value p may read
    for who, op, key, value in steps:
        if op == "pause":
            time.sleep(0.002)
        elif op == "set":
            proxies[who][key] = value
            history[key].append((who, value, len(history[key])))
            if who in "AB":
                floor[(who, key)] = len(history[key]) - 1
        else:
            got = proxies[who].get(key)
            candidates = [
                i for i, h in enumerate(history[key]) if (h[1] if h is not None else None) == got
            ]
            assert candidates, f"{who} read {got!r}, never written to {key!r}"
            assert max(candidates) >= floor[(who, key)], f"{who} read a stale {key!r}"
            floor[(who, key)] = max(
                floor[(who, key)], min(c for c in candidates if c >= floor[(who, key)])
            )


def test_writes_with_keyword_arguments_are_read_back_at_once(m: procshare.SyncManager) -> None:
    for _ in range(50):  # the push of the change may come later than the next read
        lst = m.list([3, 1, 2]).cache()
        lst.sort(reverse=True)
        assert lst[:] == [3, 2, 1]
        d = m.dict().cache()
        d.update(a=1)
        assert d["a"] == 1
