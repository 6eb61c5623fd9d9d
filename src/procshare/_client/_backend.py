"""The backend seam: what the proxies need from wherever the shared objects live.

The sync proxies (``_proxies``), watches (``_push``), pipelines (``_pipeline``) and cached
reads (``_cache``) speak to a :class:`Backend`, one per process and server (``get_channel``,
which picks the implementation by the address's scheme): ``_channel.Channel``, a connection
to procshare's own server, or ``_redis._channel.RedisChannel``, the objects in Redis (keys
of one namespace, changes as Lua scripts, blocking calls as waits on token lists); mypy
checks that each is a ``Backend``.

``AsyncBackend`` is the same seam for the asyncio proxies (``_achannel.AsyncProxy``, the typed
ones of ``_aproxies``, their watches and pipelines): ``_achannel.AsyncChannel`` implements it
over the same protocol; a Redis backend's asyncio half (redis-py's ``redis.asyncio``) would.

The vocabulary is the protocol's: an object is an id with a typeid (``Token``), a call is
``(obj_id, method, args, kwargs, owner)``, creation and pipelines are ``Create`` and ``Batch``
messages (``_protocol``), and what a call raised is raised again here as itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._address import Address
    from ._channel import RefQueue
    from ._leases import LeaseBook
    from ._loans import LoanBook

__all__ = ["AsyncBackend", "Backend"]


class Backend(Protocol):
    """A process's connection to the home of shared objects (the operations a proxy uses)."""

    #: where the objects live, and the secret that opens it
    address: Address
    authkey: bytes
    #: the process that opened it, and the one that may use it (``-1`` once it may not: a
    #: forked child binds its own)
    pid: int
    usable_pid: int
    #: what the server said of itself at the handshake (its spin, its CPU, its version...)
    server_info: dict[str, Any]
    #: the leased reads of this connection, or ``None`` where leases are off
    leases: LeaseBook | None
    #: the locks lent to this connection (``.._loans``), or ``None`` where none can be
    loans: LoanBook | None
    #: reference notes waiting to be sent (this process's, for this address)
    refs: RefQueue

    @property
    def broken(self) -> bool:
        """Whether it can no longer be used (the server went away)."""
        ...

    def call(
        self,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        owner: int = 0,
        blocking: bool = False,
        versioned: bool = False,
        wait: float | None = None,
        posting: bool = False,
    ) -> Any:
        """Call ``method`` of object ``obj_id`` as ``owner`` (a thread's tag); its result,
        or raise its error. ``blocking``: it may wait on the server (an acquire, a get),
        ``wait`` at most that long; ``versioned``: ``(result, version)``; ``posting``: ask to
        post this method's next calls on the object (kept in ``registered``)."""

    #: whether calls may be posted at all, and (object id, method) -> whether they may be
    #: posted for that object (asked once with ``call(..., posting=True)``), or how many were
    #: made before asking
    can_post: bool
    registered: dict[tuple[int, str], bool | int]
    #: object id -> the lock its posts are bound to (``registered`` as ``BOUND``)
    bound: dict[int, int]

    def post(self, obj_id: int, method: str, args: tuple[Any, ...] = (), owner: int = 0) -> bool:
        """Send a registered call without waiting for its answer (a write that cannot fail
        and that nobody waits for: a dict item set, a list append); ``False`` (nothing sent)
        where it cannot be posted now: then make the call. A failure is raised by a later
        request."""

    def withdraw(self, obj_id: int) -> None:
        """Post to object ``obj_id`` no more (its ``registered`` entries are cleared; the
        server stops counting this process among its posters)."""

    def request(self, msg: Any, blocking: bool = False, wait: float | None = None) -> Any:
        """Send one request message (``Create``, ``Batch``, ``ReadSince``, ``LeasedRead``,
        ``LeaseAcquire``, ...); its result. ``blocking``/``wait`` as for ``call``."""

    def request_many(self, msgs: list[Any]) -> list[Any]:
        """Send several requests at once, then wait for all; their results, in order."""
        ...

    def control(self, command: str, *args: Any) -> Any:
        """A server-level command (``ping``, ``stats``, ``names``, ``delete``, ...)."""

    def release_soon(self, obj_id: int) -> None:
        """Drop one reference to ``obj_id`` (from a finalizer: never blocks)."""

    def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        """Watch ``obj_id``: ``handler(event)`` for each change, in order; returns
        ``(subscription id, what the server answered: the version, a snapshot)``."""
        ...

    def unsubscribe(self, sub_id: int) -> None:
        """End a subscription (events already on their way are dropped)."""

    def unsubscribe_soon(self, sub_id: int) -> None:
        """``unsubscribe`` from a finalizer: never blocks."""

    def read_forever(self, on_broken: Callable[[BaseException], None]) -> None:
        """Deliver pushed events until the connection ends (a watcher's thread)."""

    def close(self) -> None:
        """Close on purpose (what the process still holds is released)."""


class AsyncBackend(Protocol):
    """``Backend`` for one event loop: what an asyncio proxy uses, each call awaitable."""

    address: Address
    authkey: bytes
    server_info: dict[str, Any]
    #: the leased reads of this connection, or ``None`` where leases are off
    leases: LeaseBook | None

    async def call(
        self,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        versioned: bool = False,
    ) -> Any:
        """``Backend.call``, awaited (the owner is the calling task)."""

    async def request(self, msg: Any) -> Any:
        """One request message (``Create``, ``Batch``, ``ReadSince``, ``LeasedRead``, ...)."""

    async def request_many(self, msgs: list[Any]) -> list[Any]:
        """Several requests sent at once; their results, in order."""
        ...

    async def control(self, command: str, *args: Any) -> Any:
        """A server-level command."""

    async def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        """Watch ``obj_id``: ``handler`` gets each event on the loop (or the error that ended
        the subscription); returns ``(subscription id, the server's answer)``."""
        ...

    async def unsubscribe(self, sub_id: int) -> None:
        """End a subscription."""

    def unsubscribe_soon(self, sub_id: int) -> None:
        """``unsubscribe`` from a finalizer: never blocks, any thread."""

    def retain(self, obj_id: int) -> None:
        """Count one more reference of this connection to ``obj_id`` (sent with the next
        request)."""

    def release(self, obj_id: int) -> None:
        """Drop one reference (safe from a finalizer, on any thread)."""

    async def close(self) -> None:
        """Close on purpose."""
