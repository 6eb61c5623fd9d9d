"""``procshare.aio`` on Redis: the ``AsyncBackend`` over this process's ``RedisChannel``.

Each call runs the sync channel's own code (its scripts, waits and session) on a worker
thread and resolves a future on the event loop, so the loop never blocks and the objects
behave exactly as for the sync proxies: one implementation of forty scripts' callers, not
two. The threads come from a pool that grows while every thread waits (a waiter must never
keep a waker from running: ``_Workers``) and shrinks when they idle.

**Cancellation** is exact, as procshare's own server makes it with ``Cancel``:

* a caller cancelled while its call waits (an acquire, a get, a Condition or Barrier wait,
  a join, a put on a full queue) wakes the waiting thread at once (a push to
  ``c:<token>``, beside its wake-up token: ``RedisChannel._wait_token``), which withdraws
  from the waiters (a wake-up that raced is passed on) and ends with ``Abandoned``;
* a call that won anyway (granted before it saw the cancellation) is undone before the
  cancellation goes on: a lock or permit is released, a queue item goes back to the head of
  its queue (``RedisChannel.give_back``); a Condition wait ends holding its lock again, as
  ``threading``'s does (``_shielded``);
* a call that does not wait (a release, a notify, a put) is made even if its caller was
  cancelled before its thread began, as a request already sent to procshare's server is.

So a lock is never granted to, nor an item handed to, a caller that no longer waits.

Owners are tasks (``task_owner``): an RLock is reentrant per task, as on procshare's server.
Proxies in results are async ones of this channel (``rebuild_proxy``); references are the
sync channel's (one session per process, whatever mix of sync and async proxies it holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._client._achannel import AsyncProxy, async_proxy_from, task_owner
from .._client._proxies import BaseProxy
from .._context import incoming
from .._errors import ConnectionLost
from .._token import Token
from ._channel import Caller, RedisChannel, get_redis_channel

if TYPE_CHECKING:
    from .._address import Address
    from .._client._leases import LeaseBook

__all__ = ["AsyncRedisChannel"]

#: seconds a worker thread waits for work before it ends
IDLE_WORKER: Final = 10.0

#: the methods whose ``True`` is a grant (released again if its caller was cancelled)
_GRANTS: Final = frozenset({"acquire", "__enter__"})


def _give_back_all(ch: RedisChannel, taken: list[tuple[int, bytes, bytes]]) -> None:
    for obj_id, tag, stored in taken:
        ch.give_back(obj_id, tag, stored)


class _Workers:
    """Threads that run blocking calls: one idle thread takes each call, else a new one.

    Unbounded on purpose: a fixed pool whose threads all wait (on locks, on queues) would
    keep back the call that wakes them. ``idle`` is the number of threads waiting for work
    minus the calls queued for them, never negative."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            claimed = self._idle > 0
            if claimed:
                self._idle -= 1
        if claimed:
            self._calls.put(work)
        else:
            threading.Thread(target=self._serve, args=(work,), name=self._name, daemon=True).start()

    def _serve(self, work: Callable[[], None]) -> None:
        while True:
            work()
            with self._lock:
                self._idle += 1
            try:
                work = self._calls.get(timeout=IDLE_WORKER)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # (nobody counts on this thread: it ends)
                        self._idle -= 1
                        return
                work = self._calls.get()  # (a call was promised to the waiting threads)


class AsyncRedisChannel:
    """An ``AsyncBackend`` over this process's channel to a Redis namespace."""

    def __init__(self, channel: RedisChannel) -> None:
        self._ch = channel
        self.address: Address = channel.address
        self.authkey = channel.authkey
        self.server_info: dict[str, Any] = channel.server_info
        self.leases: LeaseBook | None = None  # (Redis has no leased reads)
        self._loop = asyncio.get_running_loop()
        self._workers = _Workers("procshare-aio-redis")
        self._closed = False

    @classmethod
    async def open(cls, address: str, authkey: bytes, serializer: str) -> AsyncRedisChannel:
        """This process's channel to ``address`` (opened on a worker thread), for this loop."""
        loop = asyncio.get_running_loop()
        channel = await loop.run_in_executor(
            None, get_redis_channel, address, bytes(authkey), serializer
        )
        return cls(channel)

    # -- running on a worker --------------------------------------------------------------------

    async def _run(
        self,
        work: Callable[[], Any],
        undo: Callable[[Any, Caller], Callable[[], Any] | None] | None = None,
    ) -> Any:
        """``work()`` on a worker thread; its result (a proxy made an async one).

        Cancelled, the work is abandoned (see the module docstring) and its end awaited; if it
        won all the same, ``undo(result, caller)`` says what gives that back, which is done
        before the cancellation goes on. Cancelled again meanwhile, it stops waiting: the
        work, and the giving back, still finish on their threads."""
        if self._closed:
            raise ConnectionLost("the asyncio client was closed")
        ch = self._ch
        loop = self._loop
        caller = Caller()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

        def run() -> None:
            ch._calling.caller = caller
            incoming.channel = self
            try:
                # (even if its caller was cancelled before it began: a call that does not
                # wait is made, as one sent to procshare's server is; a wait stops at once)
                result = work()
                if isinstance(result, BaseProxy):
                    result = self._adopt(result)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                outcome: tuple[bool, Any] = (False, exc)
            else:
                outcome = (True, result)
            finally:
                ch._calling.caller = None
                incoming.channel = None
            with contextlib.suppress(RuntimeError):  # (the loop is closed: nobody waits)
                loop.call_soon_threadsafe(settle, *outcome)

        self._workers.submit(run)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            caller.cancelled = True
            self._wake(caller)
            ended = self._when_ended(done, caller, undo)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(ended)
            raise

    def _when_ended(
        self,
        done: asyncio.Future[Any],
        caller: Caller,
        undo: Callable[[Any, Caller], Callable[[], Any] | None] | None,
    ) -> asyncio.Future[None]:
        """Done once an abandoned call ended, and what it won anyway was given back."""
        loop = self._loop
        ended: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            if not ended.done():
                ended.set_result(None)

        def after(future: asyncio.Future[Any]) -> None:
            won = future.exception() is None
            give_back = undo(future.result(), caller) if won and undo is not None else None
            if give_back is None:
                finish()
                return

            def run() -> None:
                with contextlib.suppress(Exception):
                    give_back()
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(finish)

            self._workers.submit(run)

        done.add_done_callback(after)
        return ended

    def _wake(self, caller: Caller) -> None:
        """Wake the thread of a cancelled call if it waits (else it sees ``cancelled`` before
        it waits: ``RedisChannel._wait_token``)."""
        token = caller.token
        if token is None:
            return
        ch = self._ch
        key = f"{ch._prefix}c:{token}"

        def push() -> None:
            with contextlib.suppress(Exception):
                pipe = ch._client.pipeline(transaction=False)
                pipe.rpush(key, 1)
                pipe.pexpire(key, 10_000)
                pipe.execute()

        self._workers.submit(push)

    def _adopt(self, proxy: BaseProxy) -> AsyncProxy:
        """The async proxy owning the reference a sync one was made with (a creation's)."""
        owned = bool(proxy._ref_pid)
        proxy._ref_pid = 0  # (its reference is the async proxy's now: it releases nothing)
        return self.rebuild_proxy(
            type(proxy), proxy._token, "pickle", {"exposed": proxy._exposed_}, owned
        )

    # -- the AsyncBackend operations --------------------------------------------------------------

    async def call(
        self,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        versioned: bool = False,
    ) -> Any:
        owner = task_owner()
        ch = self._ch

        def undo(result: Any, caller: Caller) -> Callable[[], Any] | None:
            if caller.taken:
                return lambda: _give_back_all(ch, caller.taken)
            if method in _GRANTS and result is True:
                return lambda: ch.call(obj_id, "release", (), None, owner)
            return None

        return await self._run(
            lambda: ch.call(obj_id, method, args, kwargs, owner, True, versioned), undo
        )

    async def request(self, msg: Any) -> Any:
        ch = self._ch
        return await self._run(lambda: ch.request(msg))

    async def request_many(self, msgs: list[Any]) -> list[Any]:
        ch = self._ch
        return await self._run(lambda: ch.request_many(msgs))  # type: ignore[no-any-return]

    async def control(self, command: str, *args: Any) -> Any:
        ch = self._ch
        return await self._run(lambda: ch.control(command, *args))

    async def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        """Watch ``obj_id`` through this process's watch hub (``_watch``); its events, and
        the error that ends it, are handed to ``handler`` on this loop."""
        from ._watch import redis_hub_for

        loop = self._loop

        def on_loop(payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # (the loop is closed: nobody listens)
                loop.call_soon_threadsafe(handler, payload)

        def subscribe() -> tuple[int, Any]:
            hub = redis_hub_for(str(self.address), self.authkey, self._ch._serializer.name)
            return hub.subscribe(obj_id, on_loop, on_loop, snapshot=bool(options.get("snapshot")))

        return await self._run(subscribe)  # type: ignore[no-any-return]

    async def unsubscribe(self, sub_id: int) -> None:
        from ._watch import redis_hub_for

        def unsubscribe() -> None:
            hub = redis_hub_for(str(self.address), self.authkey, self._ch._serializer.name)
            hub.unsubscribe(sub_id)

        await self._run(unsubscribe)

    def unsubscribe_soon(self, sub_id: int) -> None:
        from ._watch import redis_hub_for

        with contextlib.suppress(Exception):  # (from a finalizer: never raises)
            redis_hub_for(
                str(self.address), self.authkey, self._ch._serializer.name
            ).unsubscribe_soon(sub_id)

    def retain(self, obj_id: int) -> None:
        self._ch.refs.retain(obj_id)

    def release(self, obj_id: int) -> None:
        self._ch.refs.release(obj_id)  # (sent with the next call, or the heartbeat)

    def rebuild_proxy(
        self, func: Any, token: Token, serializer: str, kwds: dict[str, Any], owned: bool
    ) -> AsyncProxy:
        """A proxy read from Redis on this channel's worker becomes an async one."""
        return async_proxy_from(self, func, token, kwds, owned)

    async def close(self) -> None:
        """Stop this client: the references its proxies dropped are sent now (the process's
        channel stays, for its sync proxies and its other clients)."""
        if self._closed:
            return
        ch = self._ch
        await self._run(lambda: ch._flush_refs() if ch.refs else None)
        self._closed = True
