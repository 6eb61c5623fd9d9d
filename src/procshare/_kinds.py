"""The table of kinds: every built-in shared type, described once.

A *kind* is a type of shared object the server implements natively (dict, list, Lock, Queue,
...). Its entry lists its methods and, for each, what the rest of procshare needs to know:

* ``mutates``: changes the object (so it is published to watchers and invalidates caches);
* ``partial``: a mutator that may change the object part-way and then raise (``update`` with a
  bad item, ``sort`` of incomparable items): a failed call still counts as a change;
* ``blocks``: may park the caller until another operation satisfies it;
* ``owner``: its meaning depends on who calls (lock ownership), so the call carries an owner tag;
* ``cacheable``: a pure read whose result depends only on the object and the arguments;
* ``returns``: the typeid of a shared object the method returns (a proxy, not a copy);
* ``posted``: a caller may send it without waiting for its answer, where it cannot fail and
  returns nothing (a dict's item set with a hashable key, a list's append, a Condition's
  notify by the lock's holder: ``Post``). Not where a process typically waits for it (a
  lock's release, a queue's put): a post is applied only once its sender sleeps or its time
  slice ends, which would delay whoever waits.

Server dispatch (``_server/_objects.py``), the client proxies (``_client/_proxies.py``), watch
and the inspection tools read this table; ``tests/test_kinds.py`` checks that they agree.

This module imports nothing of procshare's but ``_errors``: it is pure data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = ["KINDS", "REPLAYABLE_KINDS", "REPLAYABLE_READS", "Kind", "Method"]


class Method(NamedTuple):
    """One method of a kind; see the module docstring for the flags."""

    name: str
    mutates: bool = False
    partial: bool = False
    blocks: bool = False
    owner: bool = False
    cacheable: bool = False
    returns: str | None = None
    posted: bool = False


class Kind(NamedTuple):
    """A built-in shared type.

    Attributes:
        name: the kind's name, which is also its default typeid (``"dict"``, ``"Lock"``, ...).
        methods: the exposed methods by name.
        watchable: whether ``watch()`` is offered for it.
    """

    name: str
    methods: Mapping[str, Method]
    watchable: bool = False

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, {len(self.methods)} methods)"

    @property
    def exposed(self) -> tuple[str, ...]:
        """Method names, sorted: what ``register(exposed=...)`` would list."""
        return tuple(sorted(self.methods))

    @property
    def mutators(self) -> frozenset[str]:
        """Names of the methods that change the object."""
        return frozenset(m.name for m in self.methods.values() if m.mutates)

    @property
    def partial_mutators(self) -> frozenset[str]:
        """Names of the mutators that may change the object and then raise."""
        return frozenset(m.name for m in self.methods.values() if m.partial)

    @property
    def postable(self) -> frozenset[str]:
        """Names of the methods a caller may post (``Method.posted``)."""
        return frozenset(m.name for m in self.methods.values() if m.posted)

    @property
    def returning(self) -> Mapping[str, str]:
        """Methods whose result is a new shared object, and that object's kind."""
        return {m.name: m.returns for m in self.methods.values() if m.returns is not None}


def _kind(
    name: str,
    *,
    reads: Iterable[str] = (),
    pure: Iterable[str] = (),
    writes: Iterable[str] = (),
    partial: Iterable[str] = (),
    blocking: Iterable[str] = (),
    owned: Iterable[str] = (),
    returns: Mapping[str, str] | None = None,
    posted: Iterable[str] = (),
    watchable: bool = False,
) -> Kind:
    """Build a kind from name lists.

    ``pure`` are cacheable reads, ``reads`` other reads (their result may change on its own or
    is too large to cache), ``writes`` mutators (``partial`` those of them that may fail
    part-way), ``blocking`` may park, ``owned`` carry an owner,
    ``returns`` maps methods whose result is itself a shared object to that object's kind,
    ``posted`` may be posted (writes that return nothing).
    A name may appear in several lists (a blocking, owner-scoped mutator, say).
    """
    pure_set, write_set, partial_set = set(pure), set(writes), set(partial)
    if not partial_set <= write_set:
        raise ValueError(f"{name}: partial methods must be writes: {partial_set - write_set}")
    posted_set = set(posted)
    if not posted_set <= write_set:
        raise ValueError(f"{name}: posted methods must be writes: {posted_set - write_set}")
    block_set, owned_set = set(blocking), set(owned)
    returning = dict(returns or {})
    names = set(reads) | pure_set | write_set | block_set | owned_set | set(returning)
    methods = {
        n: Method(
            n,
            mutates=n in write_set,
            partial=n in partial_set,
            blocks=n in block_set,
            owner=n in owned_set,
            cacheable=n in pure_set,
            returns=returning.get(n),
            posted=n in posted_set,
        )
        for n in sorted(names)
    }
    return Kind(name, MappingProxyType(methods), watchable)


_DICT_READS = ("__contains__", "__getitem__", "__len__", "get", "keys", "values", "items", "copy")

DICT: Final = _kind(
    "dict",  # a shared dict
    pure=_DICT_READS,
    reads=("__reversed__", "__or__", "__ror__", "__repr__", "__str__"),
    # iterating is live, as in the standard library: a server-side iterator
    returns={"__iter__": "LiveIterator"},
    writes=(
        "__setitem__",
        "__delitem__",
        "__ior__",
        "clear",
        "pop",
        "popitem",
        "setdefault",
        "update",
        # atomic read-modify-write, where users would otherwise take a lock
        "increment",
        "compare_and_set",
    ),
    partial=("update", "__ior__"),
    posted=("__setitem__",),
    watchable=True,
)

LIST: Final = _kind(
    "list",  # a shared list
    pure=("__contains__", "__getitem__", "__len__", "count", "index", "copy"),
    # no __iter__, as in the standard library: iteration goes through __getitem__ and sees
    # concurrent writes (``lst[:]`` is the one-round-trip snapshot)
    reads=("__reversed__", "__add__", "__mul__", "__rmul__", "__repr__", "__str__"),
    writes=(
        "__setitem__",
        "__delitem__",
        "__iadd__",
        "__imul__",
        "append",
        "extend",
        "insert",
        "pop",
        "remove",
        "reverse",
        "sort",
        "clear",
    ),
    partial=("extend", "__iadd__", "sort"),
    posted=("append",),
    watchable=True,
)

SET: Final = _kind(
    "set",  # a shared set
    pure=("__contains__", "__len__", "copy", "issubset", "issuperset", "isdisjoint"),
    reads=("union", "intersection", "difference", "symmetric_difference", "__repr__", "__str__"),
    returns={"__iter__": "LiveIterator"},
    writes=(
        "add",
        "discard",
        "remove",
        "pop",
        "clear",
        "update",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    ),
    partial=("update", "difference_update", "intersection_update", "symmetric_difference_update"),
    watchable=True,
)

NAMESPACE: Final = _kind(
    "Namespace",  # a shared attribute namespace
    pure=("__getattribute__",),
    reads=("__repr__", "__str__", "_asdict"),
    writes=("__setattr__", "__delattr__"),
    posted=("__setattr__",),
    watchable=True,
)

VALUE: Final = _kind(
    "Value",  # a shared single value
    pure=("get",),
    reads=("__repr__", "__str__"),
    writes=("set", "increment", "compare_and_set", "swap"),
    posted=("set",),
    watchable=True,
)

ARRAY: Final = _kind(
    "Array",  # a shared typed array
    pure=("__len__", "__getitem__", "tolist"),
    reads=("__repr__", "__str__"),
    writes=("__setitem__",),
    watchable=True,
)

LOCK: Final = _kind(
    "Lock",  # a lock, released when its holder dies
    reads=("locked", "__repr__", "__str__"),
    writes=("acquire", "release"),
    blocking=("acquire",),
    owned=("acquire", "release"),
)

RLOCK: Final = _kind(
    "RLock",  # a reentrant lock, released when its holder dies
    reads=("locked", "_is_owned", "__repr__", "__str__"),
    writes=("acquire", "release"),
    blocking=("acquire",),
    owned=("acquire", "release", "_is_owned"),
)

SEMAPHORE: Final = _kind(
    "Semaphore",  # a semaphore whose slots return when their holder dies
    reads=("get_value", "__repr__", "__str__"),
    writes=("acquire", "release"),
    blocking=("acquire",),
    owned=("acquire", "release"),
)

BOUNDED_SEMAPHORE: Final = _kind(
    "BoundedSemaphore",  # a bounded semaphore whose slots return when their holder dies
    reads=("get_value", "__repr__", "__str__"),
    writes=("acquire", "release"),
    blocking=("acquire",),
    owned=("acquire", "release"),
)

CONDITION: Final = _kind(
    "Condition",  # a condition variable over a shared lock
    reads=("__repr__", "__str__"),
    writes=("acquire", "release", "wait", "notify", "notify_all"),
    blocking=("acquire", "wait"),
    owned=("acquire", "release", "wait", "notify", "notify_all"),
    posted=("notify", "notify_all"),
)

EVENT: Final = _kind(
    "Event",  # an event flag
    reads=("is_set", "__repr__", "__str__"),
    writes=("set", "clear"),
    blocking=("wait",),
    watchable=True,
)

BARRIER: Final = _kind(
    "Barrier",  # a barrier that breaks when a waiting party dies
    reads=("__getattribute__", "__repr__", "__str__"),
    writes=("wait", "abort", "reset"),
    blocking=("wait",),
)


# an iterator over a shared dict or set, advanced on the server (live, as in the stdlib)
LIVE_ITERATOR: Final = _kind(
    "LiveIterator",
    writes=("__next__",),
    reads=("__repr__", "__str__"),
)


def _queue(name: str) -> Kind:
    return _kind(
        name,
        reads=("qsize", "empty", "full", "__repr__", "__str__"),
        writes=("put", "put_nowait", "get", "get_nowait", "task_done"),
        blocking=("put", "get", "join"),
        posted=("put",),  # (unbounded, while no getter is parked: ``_leases.waiting_of``)
    )


QUEUE: Final = _queue("Queue")  # a FIFO queue
# a FIFO queue whose unfinished items return when their consumer dies
JOINABLE_QUEUE: Final = _queue("JoinableQueue")

#: Every built-in kind, by name.
KINDS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        k.name: k
        for k in (
            DICT,
            LIST,
            SET,
            NAMESPACE,
            VALUE,
            ARRAY,
            LOCK,
            RLOCK,
            SEMAPHORE,
            BOUNDED_SEMAPHORE,
            CONDITION,
            EVENT,
            BARRIER,
            QUEUE,
            JOINABLE_QUEUE,
            LIVE_ITERATOR,
        )
    }
)


#: Kinds whose whole value is a plain container that a reader holding an older copy can bring
#: up to date by replaying the changes since (server and clients agree on it: ``ReadSince``).
REPLAYABLE_KINDS: Final = frozenset({"dict", "list", "set"})
#: Whole-object reads of those kinds that the server may answer with such changes.
REPLAYABLE_READS: Final = frozenset({"copy", "#GETVALUE"})
