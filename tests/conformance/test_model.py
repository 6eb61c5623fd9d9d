"""Property tests: dict and list proxies behave exactly like a plain dict and list.

Hypothesis draws sequences of operations (including ones that raise); each is applied to the
proxy and to a local model, and results, exceptions and final contents must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procshare

keys = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]))
values = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)
)

dict_ops = st.one_of(
    st.tuples(st.just("__setitem__"), keys, values),
    st.tuples(st.just("__getitem__"), keys),
    st.tuples(st.just("__delitem__"), keys),
    st.tuples(st.just("__contains__"), keys),
    st.tuples(st.just("get"), keys, values),
    st.tuples(st.just("pop"), keys),
    st.tuples(st.just("pop"), keys, values),
    st.tuples(st.just("setdefault"), keys, values),
    st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=3)),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("__len__")),
    st.tuples(st.just("keys")),
    st.tuples(st.just("items")),
    st.tuples(st.just("copy")),
)

indices = st.integers(-6, 6)
list_ops = st.one_of(
    st.tuples(st.just("append"), values),
    st.tuples(st.just("extend"), st.lists(values, max_size=3)),
    st.tuples(st.just("insert"), indices, values),
    st.tuples(st.just("pop")),
    st.tuples(st.just("pop"), indices),
    st.tuples(st.just("remove"), values),
    st.tuples(st.just("index"), values),
    st.tuples(st.just("count"), values),
    st.tuples(st.just("__getitem__"), indices),
    st.tuples(st.just("__getitem__"), st.builds(slice, st.none() | indices, st.none() | indices)),
    st.tuples(st.just("__setitem__"), indices, values),
    st.tuples(st.just("__delitem__"), indices),
    st.tuples(st.just("__contains__"), values),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("__len__")),
    st.tuples(st.just("copy")),
)


@pytest.fixture(scope="module")
def shared() -> Iterator[procshare.SyncManager]:
    with procshare.Manager() as m:
        yield m


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        result = fn(*args)
    except Exception as exc:
        return ("raised", type(exc))
    if isinstance(result, type({}.keys())):
        result = list(result)
    if isinstance(result, type({}.items())):
        result = list(result)
    return ("returned", result)


def apply_both(proxy: Any, model: Any, ops: list[tuple[Any, ...]]) -> None:
    """Apply each ``(method, *args)`` to the proxy and the plain model: same outcome each time."""
    for name, *args in ops:
        expected = outcome(getattr(model, name), *args)
        got = outcome(getattr(proxy, name), *args)
        assert got == expected, (name, args)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(initial=st.dictionaries(keys, values, max_size=4), ops=st.lists(dict_ops, max_size=25))
def test_dict_proxy_agrees_with_dict(
    shared: procshare.SyncManager, initial: dict[Any, Any], ops: list[tuple[Any, ...]]
) -> None:
    proxy = shared.dict(initial)
    model = dict(initial)
    apply_both(proxy, model, ops)
    assert proxy.copy() == model
    assert list(proxy) == list(model)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(initial=st.lists(values, max_size=5), ops=st.lists(list_ops, max_size=25))
def test_list_proxy_agrees_with_list(
    shared: procshare.SyncManager, initial: list[Any], ops: list[tuple[Any, ...]]
) -> None:
    proxy = shared.list(initial)
    model = list(initial)
    apply_both(proxy, model, ops)
    assert proxy[:] == model == list(proxy)
