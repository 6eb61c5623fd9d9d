"""The containers on Redis: each one value, changed by compare-and-set.

A dict, list, set, Namespace, Value or Array is kept in Redis as one serialized value with a
version (``<id>:d``, ``<id>:v``). A call runs here, on a copy rebuilt from that value, with
the same handlers as on procshare's own server (``_server._objects.HANDLERS``): every method
behaves exactly as there. A change is written back only if the version is still the one it
was computed from (``write`` script); otherwise it is computed again from the newer value.
So each change is atomic, and a process that keeps the last value it saw makes a change in
one round trip and a read in one round trip that carries no data when nothing changed.

Stored are plain forms (``to_plain``), which every serializer can carry: a set as a list, a
Namespace as a dict of its attributes, a Value as ``[typecode, value]``, an Array as
``[typecode, items]``.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Any, Final

from .._server._objects import HANDLERS, Namespace, Value

__all__ = ["CONTAINERS", "from_plain", "handler_for", "initial_value", "to_plain"]

#: the kinds kept as one value
CONTAINERS: Final = frozenset({"dict", "list", "set", "Namespace", "Value", "Array"})


def to_plain(kind: str, referent: Any) -> Any:
    """The form of ``referent`` that is stored."""
    if kind == "set":
        return list(referent)
    if kind == "Namespace":
        return dict(vars(referent))
    if kind == "Value":
        return [referent._typecode, referent._value]
    if kind == "Array":
        return [referent.typecode, referent.tolist()]
    return referent


def from_plain(kind: str, plain: Any) -> Any:
    """The referent that ``plain`` (``to_plain``'s) stands for: a fresh copy."""
    if kind == "set":
        return set(plain)
    if kind == "Namespace":
        return Namespace(**plain)
    if kind == "Value":
        return Value(plain[0], plain[1])
    if kind == "Array":
        return array.array(plain[0], plain[1])
    return plain


def initial_value(kind: str, referent: Any) -> Any:
    """What a new container starts as (the referent the factory made from its arguments)."""
    return to_plain(kind, referent)


def _repr(referent: Any) -> str:
    return repr(referent)


def _getvalue(referent: Any) -> Any:
    return referent


def _iterate(referent: Any) -> Any:
    # (a snapshot's iterator: the copy is never changed after, so it cannot go stale mid-way)
    return iter(list(referent))


_FALLBACKS: Final[dict[str, Callable[..., Any]]] = {
    "#GETVALUE": _getvalue,
    "__repr__": _repr,
    "__str__": _repr,
}


def handler_for(kind: str, method: str) -> Callable[..., Any] | None:
    """The function that runs ``method`` on a ``kind`` referent, or ``None`` (not exposed)."""
    if method == "__iter__" and kind in ("dict", "set"):
        return _iterate
    handler = HANDLERS[kind].get(method)
    if handler is not None:
        return handler[0]
    return _FALLBACKS.get(method)
