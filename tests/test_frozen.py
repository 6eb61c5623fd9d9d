"""The immutability checks that decide whether copies handed out may share their items."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from procshare._client._frozen import change_is_frozen, is_frozen, is_plain


class Point:  # hashable (by identity) and mutable
    pass


class Text(str):  # a subclass may carry state
    pass


atoms = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary()
)
values = st.recursive(
    atoms | st.builds(Point) | st.builds(Text, st.text()),
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.frozensets(atoms, max_size=3),
        st.lists(inner, max_size=3),
        st.dictionaries(atoms, inner, max_size=3),
    ),
    max_leaves=8,
)


def reference(items: Any) -> bool:
    return all(is_plain(item) for item in items)


@given(st.lists(values, max_size=6))
def test_a_list_is_frozen_exactly_when_each_item_is_plain(items: list[Any]) -> None:
    assert is_frozen(items) == reference(items)
    assert is_frozen(set(filter(is_hashable, items))) == reference(filter(is_hashable, items))


@given(st.dictionaries(atoms | st.builds(Point), values, max_size=6))
def test_a_dict_is_frozen_when_its_keys_and_values_are(d: dict[Any, Any]) -> None:
    assert is_frozen(d) == (reference(d) and reference(d.values()))


def is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def test_deep_nesting_is_not_followed_for_ever() -> None:
    deep: Any = 1
    for _ in range(10):
        deep = (deep,)
    assert is_plain(deep)
    assert not is_frozen([deep])  # too deep to check cheaply: treated as mutable, never shared
    assert is_frozen([((1,),)])


def test_what_a_change_brings_in() -> None:
    assert change_is_frozen("__setitem__", ("k", 1), None, None)
    assert not change_is_frozen("__setitem__", ("k", [1]), None, None)
    assert change_is_frozen("update", ({"a": 1, "b": (2, 3)},), {"c": "x"}, None)
    assert not change_is_frozen("update", ({"a": [1]},), None, None)
    assert not change_is_frozen("update", ({},), {"c": {}}, None)
    assert change_is_frozen("extend", ([1, 2, "x"],), None, None)
    assert not change_is_frozen("extend", ([[1]],), None, None)
    assert not change_is_frozen("append", ([1],), None, None)  # the list itself goes in
    assert not change_is_frozen("increment", ("k", [1]), None, [1, 1])
