"""The latest changes of one shared object, for readers holding an older copy of it.

A client that re-reads a large dict, list or set whole sends the version it holds (``ReadSince``);
when only a few small changes happened since, the server answers with those changes for the
client to replay, instead of the whole object. The log exists only for objects read that way,
and is bounded both in changes and in *weight* (about one unit per item or KiB the changes
keep alive), so it never holds on to much: a change heavier than the whole budget empties it,
and readers that far behind get the whole object again.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any, Final

__all__ = ["ChangeLog"]

_SIZED: Final = (dict, list, tuple, set, frozenset)
_BYTES: Final = (str, bytes, bytearray)


def _weigh(args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any) -> int:
    """About how many items (or KiB of text) a change keeps alive; at least 1."""
    weight = 1
    for value in (*args, *(kwargs.values() if kwargs else ()), result):
        if isinstance(value, _BYTES):
            weight += len(value) >> 10
        elif isinstance(value, _SIZED):
            weight += len(value)
    return weight


class ChangeLog:
    """The last changes applied to one object, oldest first; the newest made its current
    version (every change of the object must be recorded, or the log emptied)."""

    __slots__ = ("_changes", "_weight")

    MAX_CHANGES: Final = 64
    MAX_WEIGHT: Final = 8192

    def __init__(self) -> None:
        #: (weight, op, args, kwargs, result)
        self._changes: deque[tuple[int, str, tuple[Any, ...], Any, Any]] = deque()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._changes)

    def record(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any
    ) -> None:
        """Add the change that made the object's new version."""
        weight = _weigh(args, kwargs, result)
        changes = self._changes
        if weight > self.MAX_WEIGHT:
            changes.clear()  # sending the whole object is cheaper than replaying this
            self._weight = 0
            return
        changes.append((weight, op, args, kwargs, result))
        self._weight += weight
        while len(changes) > self.MAX_CHANGES or self._weight > self.MAX_WEIGHT:
            self._weight -= changes.popleft()[0]

    def last(self, count: int, budget: int) -> list[tuple[str, Any, Any, Any]] | None:
        """The last ``count`` changes as ``(op, args, kwargs, result)``, oldest first; ``None``
        if fewer are kept or they weigh more than ``budget``."""
        changes = self._changes
        if not 0 < count <= len(changes):
            return None
        recent = list(islice(changes, len(changes) - count, None))
        if sum(change[0] for change in recent) > budget:
            return None
        return [change[1:] for change in recent]
