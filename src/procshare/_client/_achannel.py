"""The asyncio client: one connection per event loop, on the same sans-IO protocol.

An ``asyncio.Protocol`` feeds received bytes to :class:`~procshare._protocol.ClientProtocol`
and turns its events into resolved futures (replies) and subscription callbacks (pushes); calls
encode with the same protocol object. Nothing here blocks the event loop: a blocking operation
(``await lock.acquire()``, ``await queue.get()``) is parked on the server and its future
resolves when the server answers.

Ownership: the owner tag of a call is the calling asyncio task, so an RLock is reentrant per
task and two tasks are two owners, as two threads are for the sync client.

References: proxies that arrive in replies on this connection become :class:`AsyncProxy`
objects owning the reference the server counted for this connection; an async proxy made from
anything else takes one. Releases are queued and sent with the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from .._address import Address, describe
from .._context import incoming
from .._errors import (
    AuthenticationError,
    ConnectionLost,
    ProtocolError,
    WaitTimeout,
    WatchClosed,
    connection_lost,
)
from .._kinds import KINDS, REPLAYABLE_KINDS
from .._protocol import (
    NEED_DATA,
    Cancel,
    ClientProtocol,
    ConnectionClosed,
    Control,
    Failure,
    Goodbye,
    LeasedRead,
    Push,
    ReadSince,
    Ready,
    Release,
    Result,
    Retain,
    Unwatch,
    Watch,
)
from .._token import Token
from ._backend import AsyncBackend
from ._cache import ReplicaState, replay
from ._leases import DECLINED, MISS, UNLEASED, LeaseBook, book_for
from ._pipeline import AsyncPipeline
from ._push import Change, ChangeBuffer, change_from
from ._snapshots import OFF, PLAIN, WHOLE_READ_KINDS, Held, plan, settle

__all__ = [
    "AsyncChannel",
    "AsyncProxy",
    "AsyncWatch",
    "async_proxy_from",
    "kind_of",
    "task_owner",
]


def task_owner() -> int:
    task = asyncio.current_task()
    return id(task) if task is not None else 0


class _Protocol(asyncio.Protocol):
    def __init__(self, channel: AsyncChannel) -> None:
        self.channel = channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before any data: the greeting may be handled before open() resumes.
        self.channel._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.channel._feed(data)

    def eof_received(self) -> bool | None:
        self.channel._feed(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        channel = self.channel
        if not channel._gone.done():
            channel._gone.set_result(None)
        channel._lost(exc)


class AsyncChannel:
    """An authenticated connection to a server, for one event loop."""

    def __init__(self, address: Address, authkey: bytes, serializer: str) -> None:
        self.address = address
        self.authkey = bytes(authkey)
        self._proto = ClientProtocol(
            self.authkey, serializer=serializer, info={"pid": os.getpid(), "name": "asyncio"}
        )
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._ready: asyncio.Future[None] = self._loop.create_future()
        #: done once the transport has let its socket go (``close`` waits for it)
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: answers that came for a caller being cancelled (see ``call``)
        self._orphans: dict[int, Any] = {}
        self._handlers: dict[int, Callable[[Any], None]] = {}
        self._notes: deque[tuple[bool, int]] = deque()
        self._next_id = 0
        self._broken: BaseException | None = None
        self.server_info: dict[str, Any] = {}
        #: values read before, answered again while unchanged (``.._leases``): unix sockets
        self.leases: LeaseBook | None = None

    @classmethod
    async def open(
        cls,
        address: Address,
        authkey: bytes,
        serializer: str = "pickle",
        timeout: float = 10.0,
        tls: Any = None,
    ) -> AsyncChannel:
        """Connect and authenticate; ``tls``: a client ``ssl.SSLContext`` (TCP only), the
        server's certificate checked.

        Raises:
            ConnectionLost: nobody answers at ``address``, or not in TLS where asked to.
            AuthenticationError: the server does not accept the authkey, or its TLS
                certificate is not trusted.
        """
        channel = cls(address, authkey, serializer)
        loop = channel._loop
        try:
            if isinstance(address, str):
                if tls is not None:
                    raise ValueError("TLS is for TCP servers: a unix socket needs none")
                transport, _ = await asyncio.wait_for(
                    loop.create_unix_connection(lambda: _Protocol(channel), address), timeout
                )
            else:
                host = str(address[0])
                secure = {} if tls is None else {"ssl": tls, "server_hostname": host}
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(channel), *address, **secure),
                    timeout,
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, asyncio.TimeoutError) as exc:
            if tls is not None:
                await asyncio.sleep(0)  # (asyncio closes the failed handshake's socket next)
                _raise_tls_failure(exc, address)
            raise connection_lost(
                f"cannot connect to the procshare server at {describe(address)}",
                exc if isinstance(exc, OSError) else TimeoutError("timed out"),
            ) from exc
        try:
            await asyncio.wait_for(asyncio.shield(channel._ready), timeout)
        except asyncio.TimeoutError:
            channel._ready.cancel()  # (nobody will look at how it ends)
            transport.close()
            await asyncio.sleep(0)  # (the transport closes its socket next)
            raise ConnectionLost(f"no handshake from {describe(address)}") from None
        except BaseException:
            channel._ready.cancel()
            transport.close()
            raise
        sock = transport.get_extra_info("socket")
        channel.leases = book_for(
            sock.fileno() if sock is not None and sock.family == socket.AF_UNIX else -1,
            channel.server_info,
            lambda: channel._broken is not None,
        )
        return channel

    # -- incoming ---------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        proto = self._proto
        proto.receive_data(data)
        incoming.channel = self
        try:
            while True:
                try:
                    event = proto.next_event()
                except (AuthenticationError, ProtocolError) as exc:
                    self._fail(exc)
                    return
                out = proto.data_to_send()
                if out and self._transport is not None:
                    self._transport.write(out)
                if event is NEED_DATA:
                    return
                kind = type(event)
                if kind is Result or kind is Failure:
                    future = self._pending.pop(event.req_id, None)
                    if future is None:
                        pass
                    elif future.cancelled():
                        self._orphan(event)  # its caller is being cancelled: see ``call``
                    elif kind is Result:
                        future.set_result(event.value)
                    else:
                        future.set_exception(event.error)
                elif kind is Push:
                    handler = self._handlers.get(event.sub_id)
                    if handler is not None:
                        handler(event.payload)
                elif kind is Ready:
                    self.server_info = event.info
                    if not self._ready.done():
                        self._ready.set_result(None)
                elif kind is ConnectionClosed:
                    self._fail(
                        ConnectionLost(
                            f"the procshare server at {describe(self.address)} went away"
                        )
                    )
                    return
        finally:
            incoming.channel = None

    def _lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"the connection to {describe(self.address)} was lost: {exc}"))

    def _fail(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
        if not self._ready.done():
            self._ready.set_exception(error)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(str(error)))
        for handler in list(self._handlers.values()):
            handler(error)
        self._handlers.clear()
        # (once only: a TLS transport closed twice forgets its connection, and cannot be
        # aborted after)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- outgoing -----------------------------------------------------------------------------

    def _take_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        return self._next_id

    def _send(self, rid: int, frame: bytes) -> asyncio.Future[Any]:
        if self._broken is not None:
            raise ConnectionLost(str(self._broken))
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionLost(f"the connection to {describe(self.address)} is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        transport.write(self._pending_notes() + frame)
        return future

    async def call(
        self,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        versioned: bool = False,
    ) -> Any:
        """Call ``method`` on object ``obj_id``; its result, or its exception raised.

        A caller cancelled while it waits (``asyncio.wait_for`` timing out, say) withdraws
        its request (``Cancel``) and waits for its final answer before the cancellation
        goes on, as the sync client does for a signal: a lock is never granted to, nor a
        queue item handed to, a request nobody waits for; a Condition wait ends holding its
        lock again, as ``threading``'s does. Cancelled again meanwhile, it stops waiting.
        """
        rid = self._take_id()
        frame = self._proto.encode_call(rid, obj_id, method, args, kwargs, task_owner(), versioned)
        return await self._answer(rid, self._send(rid, frame))

    async def _answer(self, rid: int, future: asyncio.Future[Any]) -> Any:
        """Await request ``rid``'s answer; cancelled, withdraw it first (see ``call``)."""
        try:
            return await future
        except asyncio.CancelledError:
            if self._broken is None and self._transport is not None:
                self._transport.write(self._proto.send(Cancel(rid)))
                final = self._orphans.pop(rid, None)
                if final is None:
                    again: asyncio.Future[Any] = self._loop.create_future()
                    self._pending[rid] = again
                    with contextlib.suppress(Exception):
                        await again
            raise

    def _orphan(self, event: Any) -> None:
        """Keep the answer of a request whose caller is being cancelled (a few at most)."""
        orphans = self._orphans
        if len(orphans) >= 64:
            orphans.pop(next(iter(orphans)))
        orphans[event.req_id] = event

    async def request(self, msg: Any) -> Any:
        """Send a request message (its ``req_id`` is replaced) and return its result; one
        that may wait (a ``LeaseAcquire``) is withdrawn if its caller is cancelled, as a
        call is."""
        rid = self._take_id()
        return await self._answer(rid, self._send(rid, self._proto.send(msg._replace(req_id=rid))))

    async def request_many(self, msgs: list[Any]) -> list[Any]:
        """Send several requests at once, then wait for all; their results, in order (the
        first failure raised after all of them came)."""
        futures = []
        for msg in msgs:
            rid = self._take_id()
            futures.append(self._send(rid, self._proto.send(msg._replace(req_id=rid))))
        return list(await asyncio.gather(*futures))

    async def control(self, command: str, *args: Any) -> Any:
        return await self.request(Control(0, command, args))

    async def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        """Watch ``obj_id``; ``handler`` gets each event payload (or the error that ended it)."""
        rid = self._take_id()
        self._handlers[rid] = handler
        try:
            return rid, await self._send(rid, self._proto.send(Watch(rid, obj_id, options)))
        except BaseException:
            self._handlers.pop(rid, None)
            raise

    async def unsubscribe(self, sub_id: int) -> None:
        if self._handlers.pop(sub_id, None) is not None and self._broken is None:
            await self.request(Unwatch(0, sub_id))

    def unsubscribe_soon(self, sub_id: int) -> None:
        """``unsubscribe`` from a finalizer (any thread): its events are dropped from now on,
        and the server is told with the loop's next turn."""
        if self._handlers.pop(sub_id, None) is None or self._broken is not None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell

            def tell() -> None:
                transport = self._transport
                if self._broken is None and transport is not None and not transport.is_closing():
                    rid = self._take_id()  # (its answer, if any, is dropped)
                    transport.write(self._proto.send(Unwatch(rid, sub_id)))

            self._loop.call_soon_threadsafe(tell)

    # -- references ---------------------------------------------------------------------------

    def retain(self, obj_id: int) -> None:
        self._notes.append((True, obj_id))

    def release(self, obj_id: int) -> None:
        """Queue a release (safe from a finalizer on any thread)."""
        self._notes.append((False, obj_id))
        if self._broken is None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to flush
                self._loop.call_soon_threadsafe(self._flush_notes)

    def _flush_notes(self) -> None:
        if self._notes and self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._pending_notes())

    def _pending_notes(self) -> bytes:
        if not self._notes:
            return b""
        retain: list[int] = []
        release: list[int] = []
        while self._notes:
            keep, obj_id = self._notes.popleft()
            (retain if keep else release).append(obj_id)
        out = b""
        if retain:
            out += self._proto.send(Retain(tuple(retain)))
        if release:
            out += self._proto.send(Release(tuple(release)))
        return out

    def rebuild_proxy(
        self, func: Any, token: Token, serializer: str, kwds: dict[str, Any], owned: bool
    ) -> AsyncProxy:
        """A proxy arriving on this connection (see ``RebuildProxy``) becomes an async one."""
        return async_proxy_from(self, func, token, kwds, owned)

    async def close(self) -> None:
        """Close the connection on purpose (pending releases first, then ``Goodbye``: what
        the server handed to this client is its own, not given back to others as a killed
        client's would be), and wait until the transport has let its socket go."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._broken is None:
                transport.write(self._pending_notes() + self._proto.send(Goodbye()))
            transport.close()
        self._fail(ConnectionLost("the connection was closed"))
        if transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), 0.25)
        except asyncio.TimeoutError:
            # (TLS waits for the server's own goodbye, which ours does not say: everything
            # was sent already, so let it go at once)
            transport.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), 1.0)


def async_proxy_from(
    channel: AsyncBackend, func: Any, token: Token, kwds: dict[str, Any], owned: bool
) -> AsyncProxy:
    """The async proxy of ``channel`` for a proxy rebuilt from a reply (``RebuildProxy``'s
    ``func``, ``token``, ``kwds``): it owns the reference counted for the channel if
    ``owned``, else it takes one."""
    from ._aproxies import async_proxy_type

    token.address = channel.address
    return async_proxy_type(func, token)(channel, token, func, kwds.get("exposed"), owned=owned)


def _raise_tls_failure(exc: BaseException, address: Address) -> None:
    """Say what a failed TLS connection means (``ssl`` is imported only where TLS is used)."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        raise AuthenticationError(
            f"the TLS certificate of {describe(address)} is not trusted: {exc.verify_message}"
        ) from None
    if isinstance(exc, (ssl.SSLError, ConnectionResetError)):
        raise ConnectionLost(
            f"TLS handshake with {describe(address)} failed ({exc}): is it a TLS server? "
            "(tcp:// for one without TLS)"
        ) from None


def kind_of(proxytype: Any, token: Token) -> str | None:
    """The built-in kind a proxy of ``proxytype`` for ``token`` speaks to, or ``None``."""
    kind: str | None = getattr(proxytype, "_kind_", None)
    if kind is None and token.typeid in KINDS:
        kind = token.typeid
    return kind


class AsyncProxy:
    """A shared object seen from asyncio: every method is awaitable.

    ``await proxy.append(1)``, ``await proxy.keys()``, ``await proxy.call("__setitem__", k, v)``;
    the dunder operations have named forms (``getitem``, ``setitem``, ``delitem``, ``contains``,
    ``len``) and ``await proxy[key]`` works too. Locks: ``async with lock: ...``.
    """

    def __init__(
        self,
        channel: AsyncBackend,
        token: Token,
        proxytype: Any = None,
        exposed: Any = None,
        *,
        owned: bool = False,
    ) -> None:
        self._channel: AsyncBackend = channel
        self._token = token
        self._id = token.id
        self._proxytype = proxytype
        self._exposed = tuple(exposed) if exposed else tuple(getattr(proxytype, "_exposed_", ()))
        self._kind = kind_of(proxytype, token)
        self._pid = os.getpid()
        self._held: Held | None = None
        self._leasing = True  # off once the server declined (not the kind it looks like)
        #: the local replica that answers pure reads (``cache()``), or None
        self._replica: AsyncReplica | None = None
        if not owned:
            channel.retain(token.id)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the referent; await its result.

        A quick pure read made again is answered by a lease while the object is unchanged
        (``procshare._leases``), as for the sync proxies; it still lets the loop's other
        tasks run first, as a round trip would (a task polling a flag that another task of
        the loop sets must not starve it).
        """
        channel = self._channel
        replica = self._replica
        if replica is not None:
            if method in replica.writes:  # every write, so that its writer reads it back
                result, version = await channel.call(
                    self._id, method, args, kwargs or None, versioned=True
                )
                replica.after_write(method, args, kwargs or None, result, version)
                return result
            if not kwargs and method in replica.reads:
                value = await replica.read(method, args)
                await asyncio.sleep(0)  # (as a round trip, it lets the loop's others run)
                return value
        leases = channel.leases
        if (
            leases is not None
            and not kwargs
            and self._leasing
            and leases.leasable(self._kind, method, args)
        ):
            value = leases.read(self._id, method, args)
            if value is MISS:
                reply = await channel.request(LeasedRead(0, self._id, method, args, task_owner()))
                value = leases.took((self._id, method, args), reply)
                if value is not DECLINED:
                    return value
                self._leasing = False
            elif value is not UNLEASED:
                await asyncio.sleep(0)
                return value
        return await channel.call(self._id, method, args, kwargs or None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return partial(self.call, name)

    async def getitem(self, key: Any) -> Any:
        return await self.call("__getitem__", key)

    def __getitem__(self, key: Any) -> Any:
        return self.call("__getitem__", key)

    async def setitem(self, key: Any, value: Any) -> None:
        await self.call("__setitem__", key, value)

    async def delitem(self, key: Any) -> None:
        await self.call("__delitem__", key)

    async def contains(self, key: Any) -> bool:
        return await self.call("__contains__", key)  # type: ignore[no-any-return]

    async def len(self) -> int:
        return await self.call("__len__")  # type: ignore[no-any-return]

    async def getvalue(self) -> Any:
        """A copy of the referent (``_getvalue()`` of the sync proxies)."""
        if self._kind in REPLAYABLE_KINDS:
            return await self._read_whole("#GETVALUE")
        return await self.call("#GETVALUE")

    # Whole-object reads: a large result is kept and only what changed is sent again, as for
    # the sync proxies (see ``_snapshots``).
    async def copy(self) -> Any:
        return await self._read_whole("copy")

    async def keys(self) -> Any:
        return await self._read_whole("keys")

    async def values(self) -> Any:
        return await self._read_whole("values")

    async def items(self) -> Any:
        return await self._read_whole("items")

    async def tolist(self) -> Any:
        return await self._read_whole("tolist")

    async def _read_whole(self, method: str) -> Any:
        held = self._held
        if held is OFF or self._kind not in WHOLE_READ_KINDS or self._replica is not None:
            return await self.call(method)
        read, same, known = plan(held, method, self._kind)
        reply = await self._channel.request(ReadSince(0, self._id, read, known, task_owner()))
        self._held, value = settle(held, same, read, self._kind, known, reply, method)
        return await self.call(method) if value is PLAIN else value

    async def repr(self) -> str:
        return await self.call("__repr__")  # type: ignore[no-any-return]

    async def __aenter__(self) -> Any:
        return await self.call("acquire")

    async def __aexit__(self, *exc: Any) -> None:
        await self.call("release")

    async def cache(self, enabled: bool = True) -> Any:
        """Serve this proxy's pure reads from a local replica kept current by the server's
        change events (see the sync ``cache()``: a writer reads its own writes, others'
        writes show as their events arrive); returns the proxy: ``d = await
        (await client.dict()).cache()``. ``await cache(False)`` asks the server again.

        Raises:
            TypeError: this kind of object cannot be cached.
        """
        if enabled:
            if self._replica is None:
                if self._kind is None:
                    raise TypeError(f"{type(self).__name__} proxies cannot be cached")
                replica = AsyncReplica(self._channel, self._id, self._kind)
                await replica.start()
                self._replica = replica
        elif self._replica is not None:
            replica, self._replica = self._replica, None
            await replica.close()
        return self

    @property
    def cached(self) -> bool:
        """Whether reads are served from a local replica."""
        return self._replica is not None

    def pipeline(self, batch_size: int = 10_000) -> AsyncPipeline:
        """Queue calls to this object and send them together: ``async with
        proxy.pipeline() as pd: pd[k] = v`` (see the sync ``pipeline()``)."""
        return AsyncPipeline(batch_size=batch_size, proxy=self)

    def watch(
        self, timeout: float | None = None, *, maxsize: int = 10_000, snapshot: bool = False
    ) -> AsyncWatch:
        """``async for change in proxy.watch(): ...`` (see the sync ``watch()``)."""
        return AsyncWatch(self, timeout=timeout, maxsize=maxsize, snapshot=snapshot)

    async def wait_until(
        self, predicate: Callable[[Any], Any], timeout: float | None = None
    ) -> Any:
        """Wait (without blocking the loop) until ``predicate(value)`` holds; return the value.

        Raises:
            TimeoutError: it did not hold within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.watch(snapshot=True) as watch:
            value = watch.value
            while not predicate(value):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"the condition did not hold within {timeout} s")
                changes = [await watch.get(remaining)]
                while (more := watch.get_nowait()) is not None:
                    changes.append(more)
                if self._kind is None or not all(replay(self._kind, value, c) for c in changes):
                    value = await self.getvalue()
            return value

    def __reduce__(self) -> tuple[Any, ...]:
        from ._proxies import AutoProxy, RebuildProxy

        func = self._proxytype or AutoProxy
        return (RebuildProxy, (func, self._token, "pickle", {"exposed": self._exposed}))

    def __repr__(self) -> str:
        return f"<AsyncProxy of {self._token.typeid!r} object {self._id}>"

    def __del__(self) -> None:
        try:
            if self._pid == os.getpid():
                if self._replica is not None:
                    self._replica.close_soon()
                self._channel.release(self._id)
        except Exception:  # noqa: BLE001,S110 - finalizers run at odd times
            pass


class AsyncReplica(ReplicaState):
    """The local copy behind a cached asyncio proxy (see ``_cache``), fed on its event loop:
    one thread, no lock."""

    def __init__(self, channel: AsyncBackend, obj_id: int, kind: str) -> None:
        super().__init__(kind)
        self._channel = channel
        self._id = obj_id
        self._sub_id: int | None = None

    async def start(self) -> None:
        """Subscribe with a snapshot: the value and its version, taken together."""
        self._sub_id, answer = await self._channel.subscribe(
            self._id, {"snapshot": True}, self._on_event
        )
        self._install(answer["value"], answer["version"])

    def _on_event(self, payload: Any) -> None:
        if isinstance(payload, BaseException):  # (the connection ended)
            self.valid = False
            self._closed = True
            return
        self._on_change(change_from(payload))

    async def read(self, method: str, args: tuple[Any, ...]) -> Any:
        """Answer ``method(*args)`` locally (after fetching a fresh copy if it was dropped)."""
        if not self.valid:
            if self._closed:
                raise ConnectionLost("the connection that fed the cache was lost")
            value, version = await self._channel.call(self._id, "#GETVALUE", (), None, True)
            self._install(value, version)
        return self._read(method, args)

    async def close(self) -> None:
        self._closed = True
        self.valid = False
        sub_id, self._sub_id = self._sub_id, None
        if sub_id is not None:
            with contextlib.suppress(ConnectionLost):
                await self._channel.unsubscribe(sub_id)

    def close_soon(self) -> None:
        """``close`` from a finalizer."""
        self._closed = True
        sub_id, self._sub_id = self._sub_id, None
        if sub_id is not None:
            self._channel.unsubscribe_soon(sub_id)


class AsyncWatch:
    """The changes of one shared object, for ``async for`` (see the sync ``Watch``)."""

    def __init__(
        self,
        proxy: AsyncProxy,
        *,
        timeout: float | None = None,
        maxsize: int = 10_000,
        snapshot: bool = False,
    ) -> None:
        self._changes = ChangeBuffer(maxsize)
        self.proxy = proxy
        self.timeout = timeout
        self.maxsize = maxsize
        self._snapshot = snapshot
        self._wakeup: asyncio.Event = asyncio.Event()
        self._error: BaseException | None = None
        self._sub_id: int | None = None
        self._closed = False
        self.version = -1
        self.value: Any = None

    async def start(self) -> AsyncWatch:
        """Subscribe (done by ``async with`` and by the first ``async for`` step)."""
        if self._sub_id is None:
            self._sub_id, answer = await self.proxy._channel.subscribe(
                self.proxy._id, {"snapshot": self._snapshot}, self._on_event
            )
            self.version = answer["version"]
            self.value = answer.get("value")
        return self

    def _on_event(self, payload: Any) -> None:
        if isinstance(payload, BaseException):
            self._error = payload
        else:
            self._changes.add(change_from(payload))
        self._wakeup.set()

    def get_nowait(self) -> Change | None:
        """The next change if one is waiting (an ``"overflow"`` included), else ``None``."""
        return self._changes.take()

    async def get(self, timeout: float | None = None) -> Change:
        """The next change, waiting up to ``timeout`` seconds (``TimeoutError`` after that)."""
        await self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            change = self.get_nowait()
            if change is not None:
                return change
            if self._error is not None:
                raise ConnectionLost(str(self._error)) from self._error
            if self._closed:
                raise WatchClosed("the watch is closed")
            self._wakeup.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"no change within {timeout} s")
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                raise WaitTimeout(f"no change within {timeout} s") from None

    def __aiter__(self) -> AsyncIterator[Change]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Change]:
        while not self._closed:
            try:
                change = await self.get(self.timeout)
            except TimeoutError:
                return
            yield change
            if change.op == "dispose":
                return

    async def close(self) -> None:
        """Unsubscribe (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._sub_id is not None:
            with contextlib.suppress(ConnectionLost):
                await self.proxy._channel.unsubscribe(self._sub_id)

    async def __aenter__(self) -> AsyncWatch:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
