"""Whole-object reads (``d.copy()``, ``d.items()``, ``lst.copy()``, ...) fetched again only after
the object changed.

Every whole read asks the server for the object's version with the value. A proxy that read a
large object twice at the same version (a reader polling something that stays put) keeps that
value, and from then on asks ``#SINCE(method, version)``: the server answers ``None`` while the
object is still at that version (one small round trip instead of encoding, sending and decoding
every item again), or the new ``(result, version)``, and the proxy stops holding until it sees
the object stay put again. An object that changes before every read is never held: its reads
cost what plain reads cost, with no copy and no memory kept.

Each read still returns a new container, as a plain read does. The items inside are shared
between the copies a proxy hands out, so a held value is reused only when everything in it is
immutable (numbers, strings, bytes, ``None``, and tuples or frozensets of them): a change made
to one copy can never show in another. That check costs about as much as decoding, so it runs
once per held value, on its first reuse. A proxy whose value held anything else goes back to
plain reads for good.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OFF", "Held", "after_read", "fresh", "held_for", "is_frozen"]

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
    ``version``; ``value`` is that result when the proxy holds it, else ``None``.

    ``frozen``: whether the value's items were found immutable (``None``: not checked yet).
    """

    __slots__ = ("frozen", "method", "value", "version")

    def __init__(self, method: str, version: int, value: Any = None) -> None:
        self.method = method
        self.version = version
        self.value = value
        self.frozen: bool | None = None


#: Marks a proxy whose held value had mutable items: it reads plainly from then on.
OFF: Final = Held("", -1)


def held_for(held: Held | None, method: str) -> Held | None:
    """``held``, if it holds a value of ``method``'s result."""
    if held is not None and held.value is not None and held.method == method:
        return held
    return None


def after_read(held: Held | None, method: str, version: int, value: Any) -> tuple[Held, Any]:
    """What to remember, and what to return, after the server sent ``value`` at ``version``.

    ``held`` is what the proxy knew before the read. The value is kept (and the caller given a
    copy of it) when the read before saw the same version: the object stays put.
    """
    if (
        held is not None
        and held.method == method
        and held.version == version
        and worth_holding(value)
    ):
        return Held(method, version, value), fresh(value)
    return Held(method, version), value


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
