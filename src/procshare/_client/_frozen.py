"""Which values are immutable all the way down, so that copies handed out may share them.

Replicas (``cache()``) and held whole-object reads (``_snapshots``) hand out shallow copies of
what they keep; that is only safe while every item is immutable: a change made through one
copy must never show in another. Exact types only: a subclass of ``int`` or ``str`` may carry
mutable state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

__all__ = ["ATOMS", "change_is_frozen", "is_frozen", "is_plain"]

#: Immutable types without parts.
ATOMS: Final = frozenset({int, float, complex, str, bytes, bool, type(None)})
_NESTS: Final = frozenset({tuple, frozenset})
_ATOMS_OR_NESTS: Final = ATOMS | _NESTS
_MAX_DEPTH: Final = 4  # tuples of tuples of ... deeper than this are not worth following

# Changes that put the *items* of their argument into the object (the others put the argument
# itself, or their result, which is checked as it is).
_SPREADING: Final = frozenset(
    {
        "update",
        "extend",
        "__iadd__",
        "__ior__",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)


def is_plain(value: Any) -> bool:
    """Whether one value is immutable all the way down (atoms, tuples and frozensets of them)."""
    kind = type(value)
    if kind in ATOMS:
        return True
    if kind is tuple or kind is frozenset:
        return all(is_plain(item) for item in value)
    return False


def is_frozen(container: Any) -> bool:
    """Whether every item of ``container`` (keys and values of a dict) is plain."""
    if type(container) is dict:
        return _all_plain(container.keys(), 0) and _all_plain(container.values(), 0)
    return _all_plain(container, 0)


def change_is_frozen(
    op: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any
) -> bool:
    """Whether all that a change may put into a container is plain."""
    added = [*(kwargs or {}).values(), result]  # keyword values go in as they are
    spreads = op in _SPREADING
    for value in args:
        kind = type(value)
        if spreads and kind is dict:
            added.extend(value.keys())
            added.extend(value.values())
        elif spreads and kind in (list, set, tuple, frozenset):
            added.extend(value)
        else:
            added.append(value)
    return _all_plain(added, 0)


def _all_plain(items: Iterable[Any], depth: int) -> bool:
    types = set(map(type, items))  # one pass in C: far cheaper than looking at each item here
    if types <= ATOMS:
        return True
    if depth >= _MAX_DEPTH or not types <= _ATOMS_OR_NESTS:
        return False
    nested = [member for item in items if type(item) in _NESTS for member in item]
    return _all_plain(nested, depth + 1)
