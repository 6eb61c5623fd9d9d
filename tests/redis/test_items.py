"""Dicts and lists on Redis, item by item (``_redis._items``): a Redis hash and a Redis list,
one entry changed per call, with the same answers as a dict and a list."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procshare
from procshare._redis._items import decode_key, decode_value, encode_key, encode_value

FORK = multiprocessing.get_context("fork")

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
KEYS = SCALARS | st.tuples(SCALARS, SCALARS)
VALUES = SCALARS | st.lists(st.integers(), max_size=3)


def _entry_keys(channel: Any, obj_id: int) -> tuple[str, str, str]:
    base = f"{channel._prefix}{obj_id}:"
    return base + "e", base + "o", base + "l"


@given(KEYS)
def test_a_keys_encoding_reads_back_as_an_equal_key(key: Any) -> None:
    assert decode_key(encode_key(key)) == key
    assert hash(decode_key(encode_key(key))) == hash(key)


@given(KEYS, KEYS)
def test_two_keys_share_a_field_exactly_when_a_dict_finds_them_equal(a: Any, b: Any) -> None:
    assert (encode_key(a) == encode_key(b)) == (a == b)


@given(VALUES)
def test_a_values_encoding_reads_back_as_the_value(value: Any) -> None:
    import pickle

    stored = encode_value(value, pickle.dumps)
    assert decode_value(stored, pickle.loads) == value
    assert type(decode_value(stored, pickle.loads)) is type(value)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("getitem"), KEYS),
        st.tuples(st.just("pop"), KEYS),
        st.tuples(st.just("del"), KEYS),
        st.tuples(st.just("setdefault"), KEYS, VALUES),
        st.tuples(st.just("increment"), KEYS, st.integers(-(2**64), 2**64) | st.floats(-9, 9)),
        st.tuples(st.just("update"), st.dictionaries(KEYS, VALUES, max_size=3)),
        st.tuples(st.just("popitem")),
        st.tuples(st.just("contains"), KEYS),
    ),
    max_size=25,
)


def _apply_dict(d: Any, op: tuple[Any, ...]) -> Any:
    name, *args = op
    try:
        if name == "set":
            d[args[0]] = args[1]
            return None
        if name == "get":
            return d.get(args[0], "default")
        if name == "getitem":
            return d[args[0]]
        if name == "pop":
            return d.pop(args[0], "default")
        if name == "del":
            del d[args[0]]
            return None
        if name == "setdefault":
            return d.setdefault(args[0], args[1])
        if name == "increment":
            if isinstance(d, dict):
                d[args[0]] = d.get(args[0], 0) + args[1]
                return d[args[0]]
            return d.increment(args[0], args[1])
        if name == "update":
            d.update(args[0])
            return None
        if name == "popitem":
            return d.popitem()
        return args[0] in d
    except Exception as exc:
        return ("raised", type(exc).__name__)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(KEYS, VALUES, max_size=4), _OPS)
def test_a_dict_answers_every_call_as_a_dict_does(rm: Any, first: Any, ops: Any) -> None:
    d, mine = rm.dict(first), dict(first)
    for op in ops:
        theirs = _apply_dict(d, op)
        ours = _apply_dict(mine, op)
        if ours == ("raised", "TypeError") and op[0] == "increment":
            continue  # (an increment of a str, say: both refuse, the messages say why)
        assert theirs == ours, op
        assert list(d.items()) == list(mine.items()), op  # (same order, too)
    assert len(d) == len(mine) and d.copy() == mine


_LIST_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), VALUES),
        st.tuples(st.just("extend"), st.lists(VALUES, max_size=3)),
        st.tuples(st.just("getitem"), st.integers(-6, 6)),
        st.tuples(st.just("setitem"), st.integers(-6, 6), VALUES),
        st.tuples(st.just("pop"), st.sampled_from([(), (0,), (-1,), (1,), (-2,)])),
        st.tuples(st.just("insert"), st.integers(-6, 6), VALUES),
        st.tuples(st.just("remove"), VALUES),
        st.tuples(st.just("slice"), st.integers(-6, 6), st.integers(-6, 6)),
        st.tuples(st.just("len")),
        st.tuples(st.just("reverse")),
    ),
    max_size=25,
)


def _apply_list(lst: Any, op: tuple[Any, ...]) -> Any:
    name, *args = op
    try:
        if name == "append":
            return lst.append(args[0])
        if name == "extend":
            return lst.extend(args[0])
        if name == "getitem":
            return lst[args[0]]
        if name == "setitem":
            lst[args[0]] = args[1]
            return None
        if name == "pop":
            return lst.pop(*args[0])
        if name == "insert":
            return lst.insert(args[0], args[1])
        if name == "remove":
            return lst.remove(args[0])
        if name == "slice":
            return lst[args[0] : args[1]]
        if name == "len":
            return len(lst)
        return lst.reverse()
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(VALUES, max_size=4), _LIST_OPS)
def test_a_list_answers_every_call_as_a_list_does(rm: Any, first: Any, ops: Any) -> None:
    lst, mine = rm.list(first), list(first)
    for op in ops:
        assert _apply_list(lst, op) == _apply_list(mine, op), op
        assert lst[:] == mine, op


def test_a_dict_is_a_hash_and_a_list_a_list_changed_one_entry_at_a_time(rm: Any, raw: Any) -> None:
    d, lst = rm.dict(), rm.list()
    e, o, _ = _entry_keys(d._channel(), d._id)
    _, _, items = _entry_keys(lst._channel(), lst._id)
    for i in range(300):
        d[f"k{i}"] = i
        lst.append(i)
    d["name"] = "Ada"
    assert raw.hlen(e) == 301 and raw.zcard(o) == 301 and raw.llen(items) == 300
    assert raw.hget(e, "k7") == b"7"  # (a plain int: its digits, so Redis can count on it)
    assert raw.hincrby(e, "k7", 5) == 12 and d["k7"] == 12
    assert raw.hget(e, "name").startswith(b"~")
    assert raw.lindex(items, -1) == b"299" and lst[-1] == 299 and lst[-301:2] == [0, 1]
    assert not raw.exists(d._channel()._prefix + f"{d._id}:d")  # (never one whole value)
    del d["k0"]
    d["k0"] = "back"  # (deleted and set again: last, as in a dict)
    assert list(d)[-1] == "k0" and list(d)[:2] == ["k1", "k2"]
    assert d.increment("hits") == 1 and d.increment("hits", 2**40) == 2**40 + 1
    assert d.increment("hits", 2**63) == 2**63 + 2**40 + 1  # (past 64 bits: as Python adds)
    assert d.increment("f", 0.5) == 0.5 and isinstance(d["f"], float)


def test_keys_a_dict_finds_equal_are_one_key_and_odd_keys_are_refused(rm: Any) -> None:
    d = rm.dict()
    d[1] = "one"
    d[True] = "true"
    d[1.0] = "float"
    assert len(d) == 1 and d[1] == "float" and list(d) == [1] and type(next(iter(d))) is int
    d[(1, "a")] = "t"
    assert d[(1.0, "a")] == "t" and (True, "a") in d
    d[None], d[b"x"], d["\x00odd"], d[2.5], d[float("inf")] = 1, 2, 3, 4, 5
    assert sorted(map(repr, d.keys())) == sorted(
        map(repr, [1, (1, "a"), None, b"x", "\x00odd", 2.5, float("inf")])
    )
    with pytest.raises(TypeError, match="not a dict key on Redis"):
        d[frozenset({1})] = 1
    with pytest.raises(TypeError, match="NaN"):
        d[float("nan")] = 1
    with pytest.raises(TypeError, match="unhashable"):
        d[[1]] = 1
    with pytest.raises(TypeError, match="not a dict key on Redis"):
        rm.dict({frozenset(): 1})
    assert frozenset() not in d and d.get(frozenset(), "no") == "no"
    with pytest.raises(KeyError):
        d[frozenset()]
    with pytest.raises(TypeError, match="unhashable"):
        [1] in d  # noqa: B015


def test_an_error_is_never_raised_from_a_stale_copy(rm: Any) -> None:
    """A process's last copy of a list is behind another's change: a call that fails on that
    copy is checked against the current list before it raises."""
    lst = rm.list([1])
    assert lst[:] == [1]  # (this process now holds a copy)
    ctx = FORK
    p = ctx.Process(target=lst.append, args=(5,))
    p.start()
    p.join(30)
    lst.remove(5)  # (not in the copy; in the list)
    assert lst[:] == [1]
    with pytest.raises(ValueError):
        lst.remove(5)


def _worker(d: Any, lst: Any, n: int, me: int) -> None:
    for i in range(n):
        d.increment("count")
        d[f"p{me}"] = i
        lst.append((me, i))
        if i % 25 == 0:
            d.update([(f"pairs{me}", i)])  # (pairs: made on the whole dict)
            lst.sort()  # (made on the whole list)


def test_processes_change_entries_and_wholes_together_and_lose_nothing(rm: Any) -> None:
    d, lst = rm.dict(), rm.list()
    n = 100
    procs = [FORK.Process(target=_worker, args=(d, lst, n, me)) for me in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert d["count"] == 4 * n
    assert all(d[f"p{me}"] == n - 1 for me in range(4))
    assert sorted(lst[:]) == sorted((me, i) for me in range(4) for i in range(n))


def test_a_proxy_in_a_dict_or_list_is_kept_then_let_go(rm: Any) -> None:
    d, lst = rm.dict(), rm.list()
    inner = rm.Value("i", 3)
    d["v"] = inner
    lst.append(inner)
    assert d["v"].value == 3 and lst[0].value == 3
    d["v"] = 0  # (the dict holds it no more; the list still does)
    lst.pop()
    assert d["v"] == 0 and len(lst) == 0
    channel = d._channel()
    base = channel._prefix
    assert not channel._client.exists(f"{base}{d._id}:c", f"{base}{lst._id}:c")


@pytest.mark.parametrize("how", ["dict", "list"])
def test_the_same_calls_on_both_backends(rm: Any, how: str) -> None:
    with procshare.Manager(ctx=FORK) as local:
        if how == "dict":
            results = []
            for m in (local, rm):
                d = m.dict(a=1)
                results.append((d | {"b": 2}, str(d), list(reversed(d)), d.copy(), len(d)))
            assert results[0] == results[1]
        else:
            results = []
            for m in (local, rm):
                lst = m.list([3, 1, 2])
                lst += [5]
                lst *= 2
                results.append((lst[:], lst * 2, str(lst), lst.index(5), lst.count(1), 3 in lst))
            assert results[0] == results[1]
