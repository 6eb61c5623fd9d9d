"""The typed asyncio proxies: one class per built-in kind, each method awaitable.

What a call does (leased reads, whole-object reads that send only what changed, watch,
``wait_until``) lives once, in :class:`AsyncProxy` and the sans-IO steps it shares with the sync
proxies (``_leases``, ``_snapshots``, ``_cache.replay``). These classes only declare each
kind's methods with their types, as the sync proxies of ``_proxies`` do for the stdlib's
signatures: ``await (await client.dict({"a": 1})).getitem("a")`` is an ``int`` to mypy.

``ASYNC_PROXIES`` gives the class for each kind of ``_kinds.KINDS``; a test checks that every
method of every kind is offered (``tests/system/test_aio.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Generic, TypeVar, cast

from .._leases import LEASING_LOCKS
from .._protocol import LeaseAcquire
from .._token import Token
from ._achannel import AsyncProxy, kind_of, task_owner
from ._leases import Read

__all__ = [
    "ASYNC_PROXIES",
    "AsyncAcquirer",
    "AsyncArrayProxy",
    "AsyncBarrier",
    "AsyncCondition",
    "AsyncDictProxy",
    "AsyncEvent",
    "AsyncListProxy",
    "AsyncNamespace",
    "AsyncQueue",
    "AsyncSetProxy",
    "AsyncValueProxy",
    "async_proxy_type",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
_D = TypeVar("_D")


class _Container(AsyncProxy):
    """What every container offers: its size and membership."""

    async def len(self) -> int:
        return cast(int, await self.call("__len__"))

    async def contains(self, item: Any) -> bool:
        return cast(bool, await self.call("__contains__", item))


class AsyncDictProxy(_Container, Generic[K, V]):
    """A shared dict (``client.dict()``)."""

    async def getitem(self, key: K) -> V:
        return cast(V, await self.call("__getitem__", key))

    async def setitem(self, key: K, value: V) -> None:
        await self.call("__setitem__", key, value)

    async def delitem(self, key: K) -> None:
        await self.call("__delitem__", key)

    async def get(self, key: K, default: _D | None = None) -> V | _D | None:
        return cast("V | _D | None", await self.call("get", key, default))

    async def setdefault(self, key: K, default: V) -> V:
        return cast(V, await self.call("setdefault", key, default))

    async def pop(self, key: K, *default: V) -> V:
        return cast(V, await self.call("pop", key, *default))

    async def popitem(self) -> tuple[K, V]:
        return cast("tuple[K, V]", await self.call("popitem"))

    async def update(self, other: Mapping[K, V] | Iterable[tuple[K, V]] = (), **kw: V) -> None:
        await self.call("update", other, **kw)

    async def clear(self) -> None:
        await self.call("clear")

    async def keys(self) -> list[K]:
        return cast("list[K]", await self._read_whole("keys"))

    async def values(self) -> list[V]:
        return cast("list[V]", await self._read_whole("values"))

    async def items(self) -> list[tuple[K, V]]:
        return cast("list[tuple[K, V]]", await self._read_whole("items"))

    async def copy(self) -> dict[K, V]:
        return cast("dict[K, V]", await self._read_whole("copy"))

    async def increment(self, key: K, by: Any = 1, default: Any = 0) -> Any:
        """Add ``by`` to ``d[key]`` (``default`` if missing), atomically; the new value."""
        return await self.call("increment", key, by, default)

    async def compare_and_set(self, key: K, expected: Any, new: V) -> bool:
        """Set ``d[key] = new`` if it equals ``expected`` (atomically); whether it was set."""
        return cast(bool, await self.call("compare_and_set", key, expected, new))


class AsyncListProxy(_Container, Generic[T]):
    """A shared list (``client.list()``)."""

    async def getitem(self, index: int) -> T:
        return cast(T, await self.call("__getitem__", index))

    async def setitem(self, index: int, value: T) -> None:
        await self.call("__setitem__", index, value)

    async def delitem(self, index: int | slice) -> None:
        await self.call("__delitem__", index)

    async def append(self, item: T) -> None:
        await self.call("append", item)

    async def extend(self, items: Iterable[T]) -> None:
        await self.call("extend", items)

    async def insert(self, index: int, item: T) -> None:
        await self.call("insert", index, item)

    async def pop(self, index: int = -1) -> T:
        return cast(T, await self.call("pop", index))

    async def remove(self, item: T) -> None:
        await self.call("remove", item)

    async def index(self, item: T, *bounds: int) -> int:
        return cast(int, await self.call("index", item, *bounds))

    async def count(self, item: T) -> int:
        return cast(int, await self.call("count", item))

    async def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        await self.call("sort", key=key, reverse=reverse)

    async def reverse(self) -> None:
        await self.call("reverse")

    async def clear(self) -> None:
        await self.call("clear")

    async def copy(self) -> list[T]:
        return cast("list[T]", await self._read_whole("copy"))


class AsyncSetProxy(_Container, Generic[T]):
    """A shared set (``client.set()``)."""

    async def add(self, item: T) -> None:
        await self.call("add", item)

    async def discard(self, item: T) -> None:
        await self.call("discard", item)

    async def remove(self, item: T) -> None:
        await self.call("remove", item)

    async def pop(self) -> T:
        return cast(T, await self.call("pop"))

    async def clear(self) -> None:
        await self.call("clear")

    async def update(self, *others: Iterable[T]) -> None:
        await self.call("update", *others)

    async def difference_update(self, *others: Iterable[Any]) -> None:
        await self.call("difference_update", *others)

    async def intersection_update(self, *others: Iterable[Any]) -> None:
        await self.call("intersection_update", *others)

    async def symmetric_difference_update(self, other: Iterable[T]) -> None:
        await self.call("symmetric_difference_update", other)

    async def union(self, *others: Iterable[T]) -> set[T]:
        return cast("set[T]", await self.call("union", *others))

    async def intersection(self, *others: Iterable[Any]) -> set[T]:
        return cast("set[T]", await self.call("intersection", *others))

    async def difference(self, *others: Iterable[Any]) -> set[T]:
        return cast("set[T]", await self.call("difference", *others))

    async def symmetric_difference(self, other: Iterable[T]) -> set[T]:
        return cast("set[T]", await self.call("symmetric_difference", other))

    async def issubset(self, other: Iterable[Any]) -> bool:
        return cast(bool, await self.call("issubset", other))

    async def issuperset(self, other: Iterable[Any]) -> bool:
        return cast(bool, await self.call("issuperset", other))

    async def isdisjoint(self, other: Iterable[Any]) -> bool:
        return cast(bool, await self.call("isdisjoint", other))

    async def copy(self) -> set[T]:
        return cast("set[T]", await self._read_whole("copy"))


class AsyncValueProxy(AsyncProxy, Generic[T]):
    """A shared value (``client.Value()``): ``await v.get()``, ``await v.set(x)``."""

    async def get(self) -> T:
        return cast(T, await self.call("get"))

    async def set(self, value: T) -> None:
        await self.call("set", value)

    async def increment(self, by: Any = 1) -> T:
        """Add ``by`` atomically; the new value."""
        return cast(T, await self.call("increment", by))

    async def compare_and_set(self, expected: Any, new: T) -> bool:
        """Set ``new`` if the value equals ``expected`` (atomically); whether it was set."""
        return cast(bool, await self.call("compare_and_set", expected, new))

    async def swap(self, new: T) -> T:
        """Set ``new``; the value it replaced."""
        return cast(T, await self.call("swap", new))


class AsyncArrayProxy(AsyncProxy, Generic[T]):
    """A shared typed array (``client.Array()``)."""

    async def len(self) -> int:
        return cast(int, await self.call("__len__"))

    async def getitem(self, index: int) -> T:
        return cast(T, await self.call("__getitem__", index))

    async def setitem(self, index: int, value: T) -> None:
        await self.call("__setitem__", index, value)

    async def tolist(self) -> list[T]:
        return cast("list[T]", await self._read_whole("tolist"))


class AsyncNamespace(AsyncProxy):
    """A shared namespace (``client.Namespace()``): ``await ns.getattr("x")``."""

    async def getattr(self, name: str) -> Any:
        return await self.call("__getattribute__", name)

    async def setattr(self, name: str, value: Any) -> None:
        await self.call("__setattr__", name, value)

    async def delattr(self, name: str) -> None:
        await self.call("__delattr__", name)


class AsyncAcquirer(AsyncProxy):
    """A Lock, RLock, Semaphore or BoundedSemaphore: ``async with lock: ...``; its holder's
    death releases it.

    As for the sync proxies, a Lock's or RLock's grant brings the quick reads its loop made
    while it last held it (``_client._leases``): ``async with lock: x = await v.get()`` makes
    one round trip, not two.
    """

    #: the reads to ask for with the next grant, or None once the server declined
    _lease_reads: tuple[Read, ...] | None = ()

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        leases = self._channel.leases
        reads = self._lease_reads
        if leases is None or reads is None or self._token.typeid not in LEASING_LOCKS:
            return cast(bool, await self.call("acquire", blocking, timeout))
        reply = None
        if reads:
            wait = -1 if timeout is None else timeout
            msg = LeaseAcquire(0, self._id, blocking, wait, reads, False, task_owner())
            reply = await self._channel.request(msg)
            if reply is None:  # declined: acquire plainly, now and from now on
                self._lease_reads = None
                return cast(bool, await self.call("acquire", blocking, timeout))
            if reply is False:
                return False
        elif not await self.call("acquire", blocking, timeout):
            return False
        leases.granted(self._id, reads, reply)
        return True

    async def release(self) -> None:
        leases = self._channel.leases
        if leases is not None and self._lease_reads is not None:
            learned = leases.released(self._id)
            if learned is not None:
                self._lease_reads = learned
        await self.call("release")

    async def locked(self) -> bool:
        return cast(bool, await self.call("locked"))

    async def get_value(self) -> int:
        """A semaphore's free slots."""
        return cast(int, await self.call("get_value"))

    async def __aenter__(self) -> bool:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncCondition(AsyncAcquirer):
    """A condition variable (``client.Condition()``)."""

    async def wait(self, timeout: float | None = None) -> bool:
        return cast(bool, await self.call("wait", timeout))

    async def notify(self, n: int = 1) -> None:
        await self.call("notify", n)

    async def notify_all(self) -> None:
        await self.call("notify_all")


class AsyncEvent(AsyncProxy):
    """An event flag (``client.Event()``)."""

    async def is_set(self) -> bool:
        return cast(bool, await self.call("is_set"))

    async def set(self) -> None:
        await self.call("set")

    async def clear(self) -> None:
        await self.call("clear")

    async def wait(self, timeout: float | None = None) -> bool:
        return cast(bool, await self.call("wait", timeout))


class AsyncBarrier(AsyncProxy):
    """A barrier (``client.Barrier()``) that breaks when a waiting party dies."""

    async def wait(self, timeout: float | None = None) -> int:
        return cast(int, await self.call("wait", timeout))

    async def abort(self) -> None:
        await self.call("abort")

    async def reset(self) -> None:
        await self.call("reset")

    async def parties(self) -> int:
        return cast(int, await self.call("__getattribute__", "parties"))

    async def n_waiting(self) -> int:
        return cast(int, await self.call("__getattribute__", "n_waiting"))

    async def broken(self) -> bool:
        return cast(bool, await self.call("__getattribute__", "broken"))


class AsyncQueue(AsyncProxy, Generic[T]):
    """A FIFO queue (``client.Queue()``, ``client.JoinableQueue()``); ``get`` waits on the
    server, never blocking the loop."""

    async def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        await self.call("put", item, block, timeout)

    async def put_nowait(self, item: T) -> None:
        await self.call("put_nowait", item)

    async def get(self, block: bool = True, timeout: float | None = None) -> T:
        return cast(T, await self.call("get", block, timeout))

    async def get_nowait(self) -> T:
        return cast(T, await self.call("get_nowait"))

    async def qsize(self) -> int:
        return cast(int, await self.call("qsize"))

    async def empty(self) -> bool:
        return cast(bool, await self.call("empty"))

    async def full(self) -> bool:
        return cast(bool, await self.call("full"))

    async def task_done(self) -> None:
        await self.call("task_done")

    async def join(self) -> None:
        await self.call("join")


#: The async proxy class of each built-in kind (others: the untyped ``AsyncProxy``).
ASYNC_PROXIES: Final[dict[str, type[AsyncProxy]]] = {
    "dict": AsyncDictProxy,
    "list": AsyncListProxy,
    "set": AsyncSetProxy,
    "Namespace": AsyncNamespace,
    "Value": AsyncValueProxy,
    "Array": AsyncArrayProxy,
    "Lock": AsyncAcquirer,
    "RLock": AsyncAcquirer,
    "Semaphore": AsyncAcquirer,
    "BoundedSemaphore": AsyncAcquirer,
    "Condition": AsyncCondition,
    "Event": AsyncEvent,
    "Barrier": AsyncBarrier,
    "Queue": AsyncQueue,
    "JoinableQueue": AsyncQueue,
}


def async_proxy_type(proxytype: Any, token: Token) -> type[AsyncProxy]:
    """The async proxy class for a proxy of ``proxytype`` to ``token``: its kind's, else the
    untyped ``AsyncProxy`` (a custom type)."""
    return ASYNC_PROXIES.get(kind_of(proxytype, token) or "", AsyncProxy)
