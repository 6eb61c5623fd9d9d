"""procshare for asyncio: the same shared objects, awaitable, from an event loop.

::

    import procshare, procshare.aio

    with procshare.Manager() as m:
        d = m.dict()

        async def main():
            async with await procshare.aio.connect(m.address, m._authkey) as client:
                shared = client.proxy(d)                 # the same object, awaitable
                await shared.setitem("k", 1)
                lock = await client.Lock()
                async with lock:                        # waits on the server, not the loop
                    ...
                async for change in shared.watch(timeout=1):
                    print(change.op, change.args)

One connection per client (per event loop), on the protocol the sync client uses. Every call
is a coroutine; blocking operations (``acquire``, ``get``, ``wait``) are parked on the server
and never block the loop. Owner tags are per task: an RLock is reentrant within one task.
The factories are the SyncManager's, with its parameters, and give typed proxies
(``AsyncDictProxy[K, V]``, ``AsyncAcquirer``, ``AsyncQueue[T]``, ...; ``_client._aproxies``).
Pipelines (``async with client.pipeline() as p``, ``proxy.pipeline()``) send many calls as
one round trip, ``d = await proxy.cache()`` answers pure reads from a local replica kept current
by the server's change events, and ``connect("tls://host:port", ..., tls=context)`` speaks
TLS, as for the sync proxies. ``connect("redis://...")`` gives the same proxies over objects
kept in Redis (docs/redis.md).
"""

from __future__ import annotations

import builtins
import contextvars
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast, overload

from ._address import is_redis_url, parse_address
from ._client._achannel import AsyncChannel, AsyncProxy, AsyncWatch
from ._client._aproxies import (
    AsyncAcquirer,
    AsyncArrayProxy,
    AsyncBarrier,
    AsyncCondition,
    AsyncDictProxy,
    AsyncEvent,
    AsyncListProxy,
    AsyncNamespace,
    AsyncQueue,
    AsyncSetProxy,
    AsyncValueProxy,
    async_proxy_type,
)
from ._client._backend import AsyncBackend
from ._client._pipeline import AsyncPipeline, Pending
from ._client._push import Change
from ._errors import ProcshareError
from ._protocol import Create

__all__ = [
    "AsyncAcquirer",
    "AsyncArrayProxy",
    "AsyncBarrier",
    "AsyncClient",
    "AsyncCondition",
    "AsyncDictProxy",
    "AsyncEvent",
    "AsyncListProxy",
    "AsyncNamespace",
    "AsyncPipeline",
    "AsyncProxy",
    "AsyncQueue",
    "AsyncSetProxy",
    "AsyncValueProxy",
    "AsyncWatch",
    "Change",
    "Pending",
    "connect",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class AsyncClient:
    """A connection to a procshare server from asyncio, and a factory of async proxies."""

    def __init__(self, channel: AsyncBackend) -> None:
        self._channel = channel

    @property
    def address(self) -> Any:
        """The server's address."""
        return self._channel.address

    def proxy(self, proxy: Any) -> Any:
        """The async twin of a sync proxy (same object, its own reference): an
        ``AsyncDictProxy`` for a ``DictProxy``, an ``AsyncAcquirer`` for a Lock's, ..."""
        cls = async_proxy_type(type(proxy), proxy._token)
        return cls(self._channel, proxy._token, type(proxy), proxy._exposed_)

    async def create(self, typeid: str, /, *args: Any, **kwargs: Any) -> Any:
        """Create a shared object of a registered ``typeid`` (``"dict"``, ``"Lock"``, ...)."""
        name = _NAMING.get()
        if name is None:
            result = await self._channel.request(Create(0, typeid, args, kwargs or None, 0))
        else:
            _NAMING.set(None)  # (this call only)
            result = await self._channel.control("named", name, typeid, args, kwargs or None)
        if not isinstance(result, AsyncProxy):
            raise ProcshareError(f"the server answered creation with {type(result).__name__}")
        return result

    # The SyncManager factories, awaitable, typed as the sync ones are.
    @overload
    async def dict(self) -> AsyncDictProxy[Any, Any]: ...
    @overload
    async def dict(self, mapping: Mapping[K, V], /) -> AsyncDictProxy[K, V]: ...
    @overload
    async def dict(self, iterable: Iterable[tuple[K, V]], /) -> AsyncDictProxy[K, V]: ...
    @overload
    async def dict(self, **kwargs: V) -> AsyncDictProxy[str, V]: ...
    async def dict(self, *args: Any, **kwargs: Any) -> AsyncDictProxy[Any, Any]:
        return cast("AsyncDictProxy[Any, Any]", await self.create("dict", *args, **kwargs))

    @overload
    async def list(self) -> AsyncListProxy[Any]: ...
    @overload
    async def list(self, iterable: Iterable[T], /) -> AsyncListProxy[T]: ...
    async def list(self, *args: Any) -> AsyncListProxy[Any]:
        return cast("AsyncListProxy[Any]", await self.create("list", *args))

    @overload
    async def set(self) -> AsyncSetProxy[Any]: ...
    @overload
    async def set(self, iterable: Iterable[T], /) -> AsyncSetProxy[T]: ...
    async def set(self, *args: Any) -> AsyncSetProxy[Any]:
        return cast("AsyncSetProxy[Any]", await self.create("set", *args))

    async def Namespace(self, **kwargs: Any) -> AsyncNamespace:  # noqa: N802
        return cast(AsyncNamespace, await self.create("Namespace", **kwargs))

    async def Value(self, typecode: Any, value: T, lock: bool = True) -> AsyncValueProxy[T]:  # noqa: N802
        """A shared value (``lock`` is accepted for the stdlib's signature: every operation
        is atomic on the server)."""
        return cast("AsyncValueProxy[T]", await self.create("Value", typecode, value))

    async def Array(  # noqa: N802
        self, typecode: str, sequence: Iterable[T], lock: bool = True
    ) -> AsyncArrayProxy[T]:
        return cast("AsyncArrayProxy[T]", await self.create("Array", typecode, list(sequence)))

    async def Lock(self) -> AsyncAcquirer:  # noqa: N802
        return cast(AsyncAcquirer, await self.create("Lock"))

    async def RLock(self) -> AsyncAcquirer:  # noqa: N802
        return cast(AsyncAcquirer, await self.create("RLock"))

    async def Semaphore(self, value: int = 1) -> AsyncAcquirer:  # noqa: N802
        return cast(AsyncAcquirer, await self.create("Semaphore", value))

    async def BoundedSemaphore(self, value: int = 1) -> AsyncAcquirer:  # noqa: N802
        return cast(AsyncAcquirer, await self.create("BoundedSemaphore", value))

    async def Condition(self, lock: Any = None) -> AsyncCondition:  # noqa: N802
        return cast(AsyncCondition, await self.create("Condition", lock))

    async def Event(self) -> AsyncEvent:  # noqa: N802
        return cast(AsyncEvent, await self.create("Event"))

    async def Barrier(  # noqa: N802
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
    ) -> AsyncBarrier:
        """A barrier; ``action`` (picklable) runs on the server when the parties are in."""
        return cast(AsyncBarrier, await self.create("Barrier", parties, action, timeout))

    async def Queue(self, maxsize: int = 0, *, redeliver: bool = True) -> AsyncQueue[Any]:  # noqa: N802
        return cast("AsyncQueue[Any]", await self._queue("Queue", maxsize, redeliver))

    async def JoinableQueue(  # noqa: N802
        self, maxsize: int = 0, *, redeliver: bool = True
    ) -> AsyncQueue[Any]:
        return cast("AsyncQueue[Any]", await self._queue("JoinableQueue", maxsize, redeliver))

    async def _queue(self, typeid: str, maxsize: int, redeliver: bool) -> Any:
        if redeliver:
            return await self.create(typeid, maxsize)
        return await self.create(typeid, maxsize, redeliver=False)

    def pipeline(self, batch_size: int = 10_000) -> AsyncPipeline:
        """Queue calls to this server's objects and send them together: ``async with
        client.pipeline() as p: p(d)[k] = v; n = p(lst).len()`` (see ``Pipeline``)."""
        return AsyncPipeline(batch_size=batch_size)

    def named(self, name: str) -> AsyncNamed:
        """The objects of this name, got or created: ``await client.named("jobs").Queue()``
        (as ``SyncManager.named``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a name is a non-empty str, not {name!r}")
        return AsyncNamed(self, name)

    async def names(self) -> builtins.dict[str, str]:
        """The server's named objects: ``{name: typeid}``."""
        return await self._channel.control("names")  # type: ignore[no-any-return]

    async def delete(self, name: str) -> None:
        """Forget a name (``KeyError`` if there is none)."""
        await self._channel.control("delete", name)

    async def stats(self) -> builtins.dict[str, Any]:
        """The server's snapshot (objects, holders, waiters, sessions)."""
        return await self._channel.control("stats")  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


#: the name ``AsyncNamed`` gives the object its factory creates (read by ``create``)
_NAMING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "procshare_aio_naming", default=None
)


class AsyncNamed:
    """``client.named(name)``: the client's factories, getting or creating that name's object."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self._client = client
        self._name = name

    def __getattr__(self, factory: str) -> Callable[..., Awaitable[AsyncProxy]]:
        make = getattr(self._client, factory, None)
        if factory.startswith("_") or factory in _NOT_FACTORIES or make is None:
            raise AttributeError(f"no shared type {factory!r}")
        name = self._name

        async def get_or_create(*args: Any, **kwargs: Any) -> AsyncProxy:
            token = _NAMING.set(name)
            try:
                return await make(*args, **kwargs)  # type: ignore[no-any-return]
            finally:
                _NAMING.reset(token)

        return get_or_create


_NOT_FACTORIES = frozenset(
    {"address", "proxy", "pipeline", "named", "names", "delete", "stats", "close"}
)


async def connect(
    address: Any,
    authkey: bytes | None = None,
    *,
    serializer: str = "pickle",
    tls: Any = None,
    timeout: float = 10.0,
) -> AsyncClient:
    """Connect to the procshare server at ``address`` from the running event loop.

    Args:
        address: a manager's ``address`` (unix path or ``(host, port)``) or a URL
            (``unix://``, ``tcp://``, ``tls://``; ``redis://``/``rediss://``: the objects of
            that Redis namespace, each call run on a worker thread: ``_redis._async``).
        authkey: the server's authkey (default: this process's, as for managers).
        serializer: ``"pickle"``, ``"msgpack"`` or ``"xmlrpclib"``.
        tls: a client ``ssl.SSLContext``; a ``tls://`` URL without one checks the server's
            certificate against the system's CAs, or ``$PROCSHARE_TLS_CA`` (as
            ``procshare.connect``).
        timeout: seconds for connecting and the handshake.

    Raises:
        ConnectionLost: nobody answers there (or not in TLS, where asked for).
        AuthenticationError: wrong authkey, or an untrusted TLS certificate.
    """
    if tls is None and isinstance(address, str) and address.startswith("tls://"):
        from ._connect import default_tls_context

        tls = default_tls_context()
    canonical = parse_address(address)
    if canonical is None:
        raise ValueError("connect() needs the address of a running server")
    if authkey is None:
        import multiprocessing

        authkey = bytes(multiprocessing.current_process().authkey)
    if is_redis_url(canonical):
        from ._redis._async import AsyncRedisChannel

        return AsyncClient(await AsyncRedisChannel.open(canonical, bytes(authkey), serializer))
    channel = await AsyncChannel.open(canonical, bytes(authkey), serializer, timeout, tls)
    return AsyncClient(channel)
