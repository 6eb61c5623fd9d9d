"""Whole-object reads (``d.copy()``, ``d.items()``, ``lst.copy()``, ...) fetched again only after
the object changed.

Every whole read is a ``ReadSince(method, version)`` request, ``version`` being that of the result
the proxy holds (-1: none). The server answers ``None`` while the object is still at that
version (one small round trip instead of encoding, sending and decoding every item again); for
``copy()`` of a dict, list or set (and ``_getvalue()``) it may answer with the few changes made
since, which the proxy replays on what it holds; otherwise it sends ``(result, version)``. For
objects of custom types it answers ``False``, and the proxy reads them plainly from then on.

Which results are held (never after a single read: a proxy read once keeps nothing alive): a
copy of a dict, list or set of 256 items or more, from the second read on (later reads are
answered with nothing or with changes). That copy answers ``copy()`` and ``_getvalue()``, and
for a dict ``items()`` (read as a copy: a dict is no more to send than its items) and, once a
copy was read, ``keys()`` and ``values()``; the list last made from it is kept until the next
change, so ``items()`` of an unchanged dict costs a list copy. ``keys()`` and ``values()`` of a
dict not otherwise read whole, and an Array's ``tolist()``, are held once two reads in a row
saw the same version (an object changed before every read is then never held: its reads cost
what plain reads cost, no copy, no memory kept).

Each read still returns a new container, as a plain read does. The items inside are shared
between the copies a proxy hands out, so a held value is reused only when everything in it is
immutable (numbers, strings, bytes, ``None``, and tuples or frozensets of them): a change made
to one copy can never show in another. That check costs about as much as decoding, so it runs
once per held value, on its first reuse. A proxy whose value held anything else goes back to
plain reads for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from .._kinds import REPLAYABLE_KINDS, REPLAYABLE_READS
from ._cache import replay
from ._channel import current_pid
from ._frozen import change_is_frozen, is_frozen
from ._push import Change

__all__ = ["MAX_ITEMS", "OFF", "PLAIN", "WHOLE_READ_KINDS", "Held", "plan", "settle"]

#: Smaller results are as cheap to fetch again as to check: not held.
MIN_ITEMS: Final = 256
#: Larger results are not held: the proxy would keep a second table of that size alive.
MAX_ITEMS: Final = 1 << 20

_CONTAINERS: Final = (dict, list, set, tuple, frozenset)
#: Kinds whose proxies read whole objects through ``ReadSince``.
WHOLE_READ_KINDS: Final = frozenset({"dict", "list", "set", "Array"})


class Held:
    """What a proxy knows of its last whole-object read: ``method``'s result at the object's
    ``version``; ``value`` is that result when the proxy holds it, else ``None``.

    ``frozen``: whether the value's items were found immutable (``None``: not checked yet).
    ``misses``: whole answers in a row that came while a value was held (the changes were too
    large to send); ``pause``: reads left before holding a value again.
    ``derived``: the last list made from the value for a read it answers (``items()``, ...), as
    ``(read, list)``, until the value changes.
    A held value is read and brought up to date under ``lock``: threads share the proxy.
    """

    __slots__ = (
        "derived",
        "frozen",
        "lock",
        "method",
        "misses",
        "pause",
        "pid",
        "value",
        "version",
    )

    def __init__(
        self, method: str, version: int, value: Any = None, misses: int = 0, pause: int = 0
    ) -> None:
        self.method = method
        self.version = version
        self.value = value
        self.misses = misses
        self.pause = pause
        self.frozen: bool | None = None
        self.derived: tuple[str, list[Any]] | None = None
        self.lock = threading.Lock()
        #: a child forked from this process starts afresh: it may have been forked while
        #: another thread held ``lock``, which would stay locked there for good
        self.pid = current_pid()


#: Marks a proxy that reads plainly from now on: what it held had mutable items, or its object
#: is of a custom type (registered with a built-in proxy type, such as ``DictProxy``).
OFF: Final = Held("", -1)


MISSES_BEFORE_PAUSE: Final = 2
MAX_PAUSE: Final = 64

#: What ``settle`` returns when the read must be made again, plainly.
PLAIN: Final = object()


def held_for(held: Held | None, method: str) -> Held | None:
    """``held``, if it holds a value of ``method``'s result for this process."""
    if (
        held is not None
        and held.value is not None
        and held.method == method
        and held.pid == current_pid()
    ):
        return held
    return None


def plan(held: Held | None, want: str, kind: str | None) -> tuple[str, Held | None, int]:
    """How to read ``want`` whole: the read to send (``ReadSince(read, known)``), the value held
    for it (``held_for``, or ``None``) and the version ``known`` of that value (-1: none)."""
    read = wire_read(kind, want, held)
    same = held_for(held, read)
    return read, same, (same.version if same is not None else -1)


def settle(
    held: Held | None,
    same: Held | None,
    method: str,
    kind: str | None,
    known: int,
    reply: Any,
    want: str,
) -> tuple[Held | None, Any]:
    """What to keep and what to return after the server answered ``ReadSince(method, known)``
    with ``reply``; the value is ``PLAIN`` when the caller must read plainly instead.

    ``held`` is what the proxy knew before the read, ``same`` the value it held for this
    method (``held_for``), at version ``known``. ``want`` is the read the caller made:
    ``method`` itself, or a copy that answers it (``plan``).
    """
    if reply is False:  # an object of a custom type (registered with a built-in proxy type)
        return OFF, PLAIN
    if same is not None and (reply is None or len(reply) == 3):
        # Unchanged since `known`, or these changes since: answered from what we hold.
        if reply is not None and not catch_up(same, kind or "", known, *reply[:2]):
            return None, PLAIN
        result = handout(same, want, kind)
        if result is not None:
            same.misses = 0
            return same, result
        # Its items may have been changed through an earlier copy: plain reads from now on.
        return (OFF if same.frozen is False else None), PLAIN
    value, version = reply
    return after_read(held, method, kind, version, value, want)


def after_read(
    held: Held | None,
    method: str,
    kind: str | None,
    version: int,
    value: Any,
    want: str,
) -> tuple[Held, Any]:
    """What to remember, and what to return, after the server sent ``value`` at ``version``.

    ``held`` is what the proxy knew before the read. The value is kept (and the caller given a
    copy of it) from the second read of the same method on: a proxy read once keeps nothing
    alive. Results that cannot be brought up to date with changes are kept only when the read
    before saw the same version (the object stays put). A proxy whose object keeps changing too
    much to be sent as changes (whole answers while it held a value, ``MISSES_BEFORE_PAUSE``
    times in a row) stops holding for 4 reads, then 8, 16, ... up to ``MAX_PAUSE``, trying once
    in between: holding costs a copy per read, for nothing then.
    """
    if held is None or held.method != method or not worth_holding(value):
        return Held(method, version), answer(want, method, kind, value)
    if not (method in REPLAYABLE_READS and kind in REPLAYABLE_KINDS):
        if held.version == version:
            return Held(method, version, value), fresh(value)
        return Held(method, version), value
    if held.pause:
        return Held(method, version, None, held.misses, held.pause - 1), answer(
            want, method, kind, value
        )
    misses = held.misses
    if held.value is not None:  # a whole answer although we held a value: too much changed
        misses += 1
        if misses >= MISSES_BEFORE_PAUSE:
            return Held(method, version, None, misses, min(1 << misses, MAX_PAUSE)), answer(
                want, method, kind, value
            )
    kept = Held(method, version, value, misses)
    return kept, _derive(kept, want, kind)


def catch_up(
    held: Held,
    kind: str,
    known: int,
    changes: Iterable[tuple[str, Any, Any, Any]],
    version: int,
) -> bool:
    """Bring ``held`` from version ``known`` to ``version`` by replaying ``changes`` on its
    value, in place (the copies handed out have their own tables). False if it cannot be: a
    change that does not replay (the value is then dropped), or another thread moved it on."""
    with held.lock:
        if held.value is None or held.version != known:
            return held.value is not None and held.version == version  # done by another thread
        frozen = held.frozen
        for op, args, kwargs, result in changes:
            if not replay(kind, held.value, Change(op, args, kwargs, version, result)):
                held.value = held.derived = None
                return False
            if frozen and not change_is_frozen(op, args, kwargs, result):
                frozen = None  # what came in may be mutable: look again before sharing
        held.version = version
        held.frozen = frozen
        held.derived = None
        return True


def handout(held: Held, want: str, kind: str | None) -> Any:
    """A new container with ``held``'s items for the caller (of ``want``'s result, when that is
    made from a held copy), or ``None`` if it cannot be given: dropped meanwhile, or holding
    mutable items (``held.frozen`` is then ``False``)."""
    with held.lock:
        value = held.value
        if value is None:
            return None
        if held.frozen is None:
            held.frozen = is_frozen(value)
        if not held.frozen:
            return None
        return _derive(held, want, kind)


def worth_holding(value: Any) -> bool:
    """Whether ``value`` is a container large enough to keep for the next read."""
    return type(value) in _CONTAINERS and MIN_ITEMS <= len(value) <= MAX_ITEMS


def fresh(value: Any) -> Any:
    """A new top-level container with the same items (immutable ones are returned as they are)."""
    return value.copy() if type(value) in (dict, list, set) else value


# -- reads answered from a held copy ----------------------------------------------------------


def _items(d: dict[Any, Any]) -> list[Any]:
    return list(d.items())


def _values(d: dict[Any, Any]) -> list[Any]:
    return list(d.values())


#: Reads a copy of the whole object answers, by kind, and how the copy makes each.
_FROM_COPY: Final[dict[tuple[str, str], Callable[[Any], Any]]] = {
    **{(kind, read): fresh for kind in REPLAYABLE_KINDS for read in ("copy", "#GETVALUE")},
    ("dict", "items"): _items,
    ("dict", "values"): _values,
    ("dict", "keys"): list,
}


def wire_read(kind: str | None, want: str, held: Held | None) -> str:
    """The read to send when the caller wants ``want``: ``"copy"`` for the reads a copy answers.

    ``keys()`` and ``values()`` are read as a copy only after a copy was read, and not while
    holding one is paused: alone, either is half a dict of numbers to send and decode.
    """
    if (kind, want) not in _FROM_COPY:
        return want
    if want in ("keys", "values") and (held is None or held.method != "copy" or held.pause):
        return want
    return "copy"


def answer(want: str, method: str, kind: str | None, value: Any) -> Any:
    """``want``'s result from ``value``, the result of ``method`` just read (not held)."""
    if want == method:
        return value
    make = _FROM_COPY[(kind or "", want)]
    return value if make is fresh else make(value)


def _derive(held: Held, want: str, kind: str | None) -> Any:
    """``want``'s result from the value ``held`` holds (``held.lock`` held or not yet shared):
    a fresh container of it for its own read or a copy's; otherwise a list made from the copy,
    the last one made for the same read being kept until the copy changes."""
    if want == held.method or (make := _FROM_COPY[(kind or "", want)]) is fresh:
        return fresh(held.value)
    derived = held.derived
    if derived is None or derived[0] != want:
        derived = held.derived = (want, make(held.value))
    return derived[1].copy()
