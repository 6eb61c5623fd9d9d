"""Cached reads: a local replica of a shared object, kept current by its change events.

``proxy.cache()`` (or ``Manager(cache=True)``) makes a proxy answer its pure reads (the kind
table's *cacheable* methods: ``d[k]``, ``len``, ``in``, ``get``, ``keys``, ``items``, ``copy``,
``v.value``, ...) from a local replica instead of a round trip. The rules:

* **Fresh as the feed.** The replica subscribes with a snapshot (value and version taken
  atomically on the server), then applies every change the server publishes, in version order.
  Another process's write is seen here as soon as its change event arrives (tens of
  microseconds): until then a read may return the value from just before it.
* **A writer reads its own writes.** A write through a cached proxy brings back the object's
  version with its result. If nothing else changed the object in between, the write is applied
  to the replica at once; otherwise the replica is dropped and the next read fetches a fresh
  one. Either way the next read sees the write.
* **Any doubt drops the replica.** A gap in versions, an overflow of the feed, a change that
  cannot be replayed: the replica is discarded and rebuilt on the next read (changes that
  arrive meanwhile are kept and applied on top of the new snapshot).
* **Reads return copies**, as uncached reads do: immutable values (numbers, strings, bytes,
  tuples of those) are returned as they are, anything else is copied first.

Replaying a change is exact for the built-in containers (same method, same arguments, same
starting state); where the outcome depends on hashing (``set.pop``), the change carries its
result and the replica uses that instead.
"""

from __future__ import annotations

import array
import contextlib
import operator
import pickle
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

from .._errors import ConnectionLost
from .._kinds import KINDS, REPLAYABLE_KINDS
from ._channel import current_pid
from ._frozen import ATOMS, change_is_frozen, is_frozen, is_plain
from ._push import Change, change_from, hub_for

__all__ = ["Replica", "ReplicaState", "replay"]

_PENDING_LIMIT: Final = 10_000  # changes kept while the replica is being rebuilt


def _private_copy(value: Any) -> Any:
    """A copy the caller may change without touching the replica (what a round trip gives)."""
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def _values_plain(kind: str, value: Any) -> bool:
    """Whether every element of a container replica is immutable (copies may be shallow)."""
    return kind == "Array" or (kind in REPLAYABLE_KINDS and is_frozen(value))


def _namespace_attr(ns: Any, name: str) -> Any:
    if not isinstance(name, str) or name.startswith("__"):
        raise AttributeError(f"attribute {name!r} of a shared Namespace is not accessible")
    return getattr(ns, name)


# Local evaluation of each kind's cacheable reads, mirroring the server's handlers: containers
# that the server returns as new lists are new lists here too.
_READS: Final[dict[str, dict[str, Callable[..., Any]]]] = {
    "dict": {
        "__getitem__": dict.__getitem__,
        "__contains__": dict.__contains__,
        "__len__": dict.__len__,
        "get": dict.get,
        "keys": list,
        "values": lambda d: list(d.values()),
        "items": lambda d: list(d.items()),
        "copy": dict.copy,
    },
    "list": {
        "__getitem__": list.__getitem__,
        "__contains__": list.__contains__,
        "__len__": list.__len__,
        "count": list.count,
        "index": list.index,
        "copy": list.copy,
    },
    "set": {
        "__contains__": set.__contains__,
        "__len__": set.__len__,
        "copy": set.copy,
        "issubset": set.issubset,
        "issuperset": set.issuperset,
        "isdisjoint": set.isdisjoint,
    },
    "Namespace": {"__getattribute__": _namespace_attr},
    "Value": {"get": lambda value: value.get()},
    "Array": {
        "__len__": len,
        "__getitem__": operator.getitem,
        "tolist": array.array.tolist,
    },
}

# Reads whose result is a container made fresh from the replica (shallow is enough when every
# element is immutable).
_FRESH_CONTAINERS: Final = frozenset({"keys", "values", "items", "copy", "tolist"})


def replay(kind: str, local: Any, change: Change) -> bool:
    """Apply ``change`` to ``local``, a copy of a shared ``kind`` object; False if it can't be."""
    op = change.op
    if op in ("overflow", "dispose") or kind not in _READS:
        return False
    try:
        if kind == "set" and op == "pop":
            local.discard(change.result)  # which element pop() takes depends on hashing
        elif kind == "dict" and op == "popitem":
            del local[change.result[0]]
        elif op == "increment":  # the result is the new value
            if kind == "dict":
                local[change.args[0]] = change.result
            else:
                local.set(change.result)
        elif op == "compare_and_set":
            if change.result and kind == "dict":
                local[change.args[0]] = change.args[2]
            elif change.result:
                local.set(change.args[1])
        else:
            getattr(local, op)(*change.args, **(change.kwargs or {}))
    except Exception:  # noqa: BLE001 - a change that cannot be replayed drops the replica
        return False
    return True


class ReplicaState:
    """A replica's value and the rules that keep it exact (see the module docstring), with no
    thread and no I/O: the sync :class:`Replica` (fed on the push thread, under a lock) and the
    asyncio ``AsyncReplica`` (fed on the event loop) drive it."""

    def __init__(self, kind: str) -> None:
        if kind not in _READS:
            raise TypeError(f"shared {kind!r} objects cannot be cached")
        self.kind = kind
        self.reads: frozenset[str] = frozenset(_READS[kind])
        self.writes: frozenset[str] = KINDS[kind].mutators
        self._funcs = _READS[kind]
        self.valid = False
        self.value: Any = None
        self.version = -1
        self.plain = False
        self._pending: list[Change] = []
        self._closed = False

    def _get_item(self, key: Any) -> Any:
        value = self.value[key]
        return value if type(value) in ATOMS or is_plain(value) else _private_copy(value)

    def _read(self, method: str, args: tuple[Any, ...]) -> Any:
        result = self._funcs[method](self.value, *args)
        if is_plain(result) or (self.plain and method in _FRESH_CONTAINERS):
            return result
        return _private_copy(result)

    def _install(self, value: Any, version: int) -> None:
        """Adopt a snapshot taken at ``version``; replay newer pending changes."""
        self.value, self.version = value, version
        self.plain = _values_plain(self.kind, value)
        pending = sorted((c for c in self._pending if c.version > version), key=lambda c: c.version)
        self._pending.clear()
        self.valid = True
        for change in pending:
            if not self._advance(change):
                return

    def after_write(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        result: Any,
        version: int,
    ) -> None:
        """Account for this proxy's own write, which the server applied as ``version``."""
        if not self.valid or version <= self.version:
            return  # rebuilt on the next read, or the feed already applied it
        self._advance(Change(method, args, kwargs, version, result))

    def _on_change(self, change: Change) -> None:
        if self._closed:
            return
        if not self.valid:
            if len(self._pending) < _PENDING_LIMIT:
                self._pending.append(change)
            return
        if change.version <= self.version:
            return
        self._advance(change)

    def _advance(self, change: Change) -> bool:
        """Apply the next change; on any doubt drop the replica."""
        if change.version != self.version + 1 or not replay(self.kind, self.value, change):
            self.valid = False
            self._pending.clear()
            return False
        self.version = change.version
        if self.plain and not change_is_frozen(
            change.op, change.args, change.kwargs, change.result
        ):
            self.plain = False
        return True


class Replica(ReplicaState):
    """The local copy behind a cached proxy. Thread-safe; the feed runs on the push thread."""

    def __init__(self, proxy: Any, kind: str) -> None:
        super().__init__(kind)
        self.pid = current_pid()
        self._proxy = weakref.ref(proxy)  # the proxy owns the replica, not the other way
        self.lock = threading.Lock()
        self._hub = hub_for(proxy._token.address, proxy._authkey, proxy._serializer)
        self._sub_id, answer = self._hub.subscribe(
            proxy._id, self._on_event, self._on_broken, snapshot=True, feed=True
        )
        with self.lock:
            self._install(answer["value"], answer["version"])

    # -- reads ----------------------------------------------------------------------------------

    def get_item(self, key: Any) -> Any:
        """``replica[key]``: the hottest cached read, without the generic dispatch."""
        if not self.valid:
            self.refresh()
        with self.lock:
            return self._get_item(key)

    def read(self, method: str, args: tuple[Any, ...]) -> Any:
        """Answer ``method(*args)`` from the replica (rebuilding it first if it was dropped)."""
        if not self.valid:
            self.refresh()
        with self.lock:
            return self._read(method, args)

    def refresh(self) -> None:
        """Fetch a fresh snapshot, then apply the changes that arrived meanwhile."""
        proxy = self._proxy()
        if proxy is None:
            raise ConnectionLost("the cached proxy is gone")
        value, version = proxy._callmethod_versioned("#GETVALUE")
        with self.lock:
            self._install(value, version)

    def invalidate(self) -> None:
        """Drop the replica: the next read fetches a fresh one."""
        with self.lock:
            self.valid = False

    # -- writes through this proxy ------------------------------------------------------------

    def after_write(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        result: Any,
        version: int,
    ) -> None:
        with self.lock:  # (the push thread feeds it too)
            super().after_write(method, args, kwargs, result, version)

    # -- the feed (push thread) ---------------------------------------------------------------

    def _on_event(self, payload: Any) -> None:
        change = change_from(payload)
        with self.lock:
            self._on_change(change)

    def _on_broken(self, error: BaseException) -> None:
        with self.lock:
            self.valid = False
            self._closed = True

    def close(self) -> None:
        """Stop following the object (the proxy answers from the server again)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.valid = False
        if self.pid == current_pid():
            with contextlib.suppress(ConnectionLost):
                self._hub.unsubscribe(self._sub_id, feed=True)

    def __del__(self) -> None:
        try:
            if not self._closed and self.pid == current_pid():
                self._hub._on_broken.pop(self._sub_id, None)
                self._hub.channel.unsubscribe_soon(self._sub_id)
        except Exception:  # noqa: BLE001,S110 - finalizers run at odd times
            pass
