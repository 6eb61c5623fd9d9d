"""Whole-object reads (``d.copy()``, ``d.items()``, ``lst.copy()``, ...) fetched again only after
the object changed.

A proxy keeps the last large snapshot it read, with the object's version at that moment, and
asks the server ``#SINCE(method, version)``: the server answers ``None`` while the object is
still at that version (one small round trip instead of encoding, sending and decoding every
item again), or the new ``(result, version)``. Reading a large unchanged dict again costs a
round trip and a local shallow copy; a changed one costs what a plain read costs, plus a local
copy. A proxy whose object changes before every read stops holding values for a while.

Each read still returns a new container, as a plain read does. The items inside are shared
between the copies a proxy hands out, so a snapshot is reused only when everything in it is
immutable (numbers, strings, bytes, ``None``, and tuples or frozensets of them): a change made
to one copy can never show in another. That check costs about as much as decoding, so it runs
once per version, on the first read that would reuse the snapshot. A proxy whose snapshot held
anything else goes back to plain reads for good.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OFF", "Held", "after_fill", "fresh", "held_for", "is_frozen"]

#: Smaller results are as cheap to fetch again as to check: not held.
MIN_ITEMS: Final = 256
#: Larger results are not held: the proxy would keep a second table of that size alive.
MAX_ITEMS: Final = 1 << 20

_ATOMS: Final = frozenset({int, float, complex, str, bytes, bool, type(None)})
_NESTS: Final = frozenset({tuple, frozenset})
_ATOMS_OR_NESTS: Final = _ATOMS | _NESTS
_MAX_DEPTH: Final = 4  # tuples of tuples of ... deeper than this are not worth following
_CONTAINERS: Final = (dict, list, set, tuple, frozenset)


class Held:
    """What a proxy knows of its last whole-object read: ``method``'s result at the object's
    ``version`` (``value`` is ``None`` while the proxy reads plainly).

    ``frozen``: whether the value's items were found immutable (``None``: not checked yet).
    ``misses``: reads in a row that found the object changed since the read before.
    ``skip``: plain reads left before holding a value again.
    """

    __slots__ = ("frozen", "method", "misses", "skip", "value", "version")

    def __init__(self, method: str, version: int, value: Any, misses: int = 0) -> None:
        self.method = method
        self.version = version
        self.value = value
        self.frozen: bool | None = None
        self.misses = misses
        self.skip = 0


#: Marks a proxy whose snapshots held mutable items: it reads plainly from then on.
OFF: Final = Held("", -1, None)

#: An object found changed at every read this many times in a row is read plainly for a while
#: (holding a value costs a copy and keeps memory busy, for nothing if it always changes):
#: 4 reads, then 8, 16, ... up to MAX_SKIP, each pause followed by one read that holds again.
MISSES_BEFORE_PAUSE: Final = 2
MAX_SKIP: Final = 64


def held_for(held: Held | None, method: str) -> Held | None:
    """``held``, if it holds a value of ``method``'s result."""
    if held is not None and held.value is not None and held.method == method:
        return held
    return None


def after_fill(held: Held | None, method: str, version: int, value: Any) -> tuple[Held | None, Any]:
    """What to keep, and what to return, after the server sent a new ``value`` at ``version``.

    ``held`` is what the proxy knew before the read.
    """
    holding = held_for(held, method) is not None
    misses = 0 if held is None else held.misses + holding
    if holding and misses >= MISSES_BEFORE_PAUSE:
        paused = Held(method, version, None, misses)
        paused.skip = min(1 << misses, MAX_SKIP)
        return paused, value
    if worth_holding(value):
        return Held(method, version, value, misses), fresh(value)
    return None, value


def worth_holding(value: Any) -> bool:
    """Whether ``value`` is a container large enough to keep for the next read."""
    return type(value) in _CONTAINERS and MIN_ITEMS <= len(value) <= MAX_ITEMS


def fresh(value: Any) -> Any:
    """A new top-level container with the same items (immutable ones are returned as they are)."""
    return value.copy() if type(value) in (dict, list, set) else value


def is_frozen(value: Any) -> bool:
    """Whether every item of the container ``value`` (keys and values of a dict) is immutable."""
    if type(value) is dict:
        return _all_frozen(value.keys(), 0) and _all_frozen(value.values(), 0)
    return _all_frozen(value, 0)


def _all_frozen(items: Any, depth: int) -> bool:
    types = set(map(type, items))  # one pass in C: far cheaper than looking at each item here
    if types <= _ATOMS:
        return True
    if depth >= _MAX_DEPTH or not types <= _ATOMS_OR_NESTS:
        return False
    nested = [member for item in items if type(item) in _NESTS for member in item]
    return _all_frozen(nested, depth + 1)
