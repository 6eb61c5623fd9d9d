"""The typed messages of the procshare protocol and their opcodes.

Messages are immutable ``NamedTuple`` classes rather than frozen dataclasses: they are built and
taken apart on every call, and a named tuple costs a quarter of what a frozen dataclass does to
construct (measured: 0.25 us against 1 us) while being just as immutable and typed.

Every request carries a ``req_id`` chosen by the client; the reply carries the same id, so many
requests can be in flight on one connection (pipelining) and blocking requests can be answered
out of order. ``Retain``, ``Release``, ``Cancel``, ``Goodbye`` and ``Post`` get no reply.

Owner tags: operations whose meaning depends on *who* calls (acquire/release of an RLock,
Condition.wait) carry an ``owner`` tag chosen by the client (its thread, or its asyncio task).
The server scopes ownership to (connection, owner), so two threads sharing one connection are
still two owners, as with ``threading``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

__all__ = [
    "Batch",
    "Call",
    "Cancel",
    "ClientMessage",
    "Control",
    "Create",
    "Drain",
    "Failure",
    "Goodbye",
    "LeaseAcquire",
    "LeasedRead",
    "Op",
    "Post",
    "Push",
    "ReadSince",
    "Release",
    "Result",
    "Retain",
    "ServerMessage",
    "Unwatch",
    "Watch",
]


class Op(IntEnum):
    """Opcodes. Handshake opcodes carry JSON; all others carry serializer payloads."""

    # handshake
    HELLO = 1  # server -> client: protocol version, nonce, serializers
    LOGIN = 2  # client -> server: chosen serializer, nonce, HMAC proof
    WELCOME = 3  # server -> client: HMAC proof of the server, session id
    DENIED = 4  # server -> client: why the login failed; the server then closes
    # requests
    CALL = 16
    CREATE = 17
    CONTROL = 18
    BATCH = 19
    RETAIN = 20
    RELEASE = 21
    WATCH = 22
    UNWATCH = 23
    CANCEL = 24
    GOODBYE = 25
    SINCE = 26
    LEASE = 27
    READ = 28
    POST = 29
    DRAIN = 30
    # replies and pushes
    RESULT = 32
    FAILURE = 33
    PUSH = 34


class Call(NamedTuple):
    """Call ``method`` on shared object ``obj_id`` with ``args`` and ``kwargs``."""

    req_id: int
    obj_id: int
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    owner: int = 0
    #: reply with ``(result, version)``: the object's version right after this call (caches)
    versioned: bool = False
    #: reply with ``(result, registered)``: whether the caller may send this method's next
    #: calls on this object as ``Post`` messages (an unbounded queue's ``put``)
    posting: bool = False


class Post(NamedTuple):
    """A call nobody waits for the answer of (a lock's release by its holder, a put on an
    unbounded queue where the caller registered to post). No reply: a failure comes as a
    ``Failure`` with request id 0, which the client raises at its next request.

    ``stamp`` is the client's ``CLOCK_MONOTONIC`` time taken just before it was written (one
    clock for every process of a machine: only clients on the server's machine post). The
    server applies the posts of others that were written before a request reaches an object
    they posted to, and never ones stamped after a post (see ``_server/_core``).
    """

    obj_id: int
    method: str
    args: tuple[Any, ...]
    owner: int
    stamp: float


class Drain(NamedTuple):
    """Apply what this client wrote to its post pipe first: the posts made before this frame
    (a client on the server's machine writes its posts into a pipe of their own, which the
    server reads in batches: ``_server/_post_pipes``). Sent ahead of the client's next frame
    on its request pipe after it posted. No reply."""


class Create(NamedTuple):
    """Create a shared object of registered type ``typeid``; the reply is its proxy."""

    req_id: int
    typeid: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    owner: int = 0


class Control(NamedTuple):
    """A server-level command (``ping``, ``shutdown``, ``stats``, ...), not aimed at an object."""

    req_id: int
    command: str
    args: tuple[Any, ...] = ()


class Batch(NamedTuple):
    """Several calls applied in order as one step; the reply is ``(values, {index: error})``.

    Each call is ``(obj_id, method, args, kwargs, owner)``: plain tuples, not ``Call``
    messages, because a pipeline carries thousands of them.
    """

    req_id: int
    calls: tuple[tuple[int, str, tuple[Any, ...], dict[str, Any] | None, int], ...]


class Retain(NamedTuple):
    """This connection now holds one more reference to each of ``obj_ids``. No reply."""

    obj_ids: tuple[int, ...]


class Release(NamedTuple):
    """This connection drops one reference to each of ``obj_ids``. No reply."""

    obj_ids: tuple[int, ...]


class Watch(NamedTuple):
    """Subscribe to the changes of ``obj_id``; the reply is ``{"version": v}`` (and the value,
    with ``options["snapshot"]``), taken atomically with the subscription. Change events then
    arrive as ``Push`` messages whose ``sub_id`` is this request's id."""

    req_id: int
    obj_id: int
    options: dict[str, Any]


class Unwatch(NamedTuple):
    """End subscription ``sub_id`` (the ``req_id`` of its ``Watch``)."""

    req_id: int
    sub_id: int


class Cancel(NamedTuple):
    """The caller abandons its request ``target`` (a signal interrupted the wait for it). A
    request still parked is withdrawn: its final answer is then a ``CallWithdrawn`` failure
    (a Condition wait re-acquires its lock instead, as ``threading``'s does). One already
    answered is taken back where the server can: a queue item goes back to the front, a
    lock's grant is released. No reply (the target's own answer says how it ended)."""

    target: int


class Goodbye(NamedTuple):
    """The client is closing this connection on purpose: its process exits or is done with the
    server. What it was handed is its own (nothing is delivered again to others, as for a
    process that was killed). No reply."""


class ReadSince(NamedTuple):
    """A whole-object read (``read``: ``copy``, ``keys``, ``#GETVALUE``, ...) by a caller that
    holds its result as of ``known`` (-1: nothing). The reply: ``None`` while the object is
    still at ``known``; for a copy of a dict, list or set, ``(changes, version, True)`` when
    the changes since are few and all logged (each ``(op, args, kwargs, result)``, to replay
    in order); else ``(result, version)``; ``False`` for a custom type (no versions: the
    caller reads plainly)."""

    req_id: int
    obj_id: int
    read: str
    known: int
    owner: int = 0


class LeaseAcquire(NamedTuple):
    """Acquire a Lock or RLock (``blocking``, ``timeout`` as ``acquire``'s, -1: no limit) and,
    at the grant, make ``reads`` (``((obj_id, method, args), ...)``, see ``_leases``); if
    ``borrow``, the lock may be lent to the caller (``_loans``). The reply: ``(True, {index:
    (epoch, value)})`` once granted, with a third item ``(slot, loan number, reentrant)`` if
    lent; ``False`` if not granted; ``None`` (and no acquire) where leases are off or the
    object is no lock: the caller acquires plainly."""

    req_id: int
    obj_id: int
    blocking: bool
    timeout: float
    reads: tuple[tuple[int, str, tuple[Any, ...]], ...]
    borrow: bool = False
    owner: int = 0


class LeasedRead(NamedTuple):
    """A quick pure read (``method(*args)``) whose value is leased until the object changes.
    The reply: ``(epoch, value)``; ``(None, value)`` where it cannot be leased; ``None`` (and
    no read) where it is no leasable read of the object: the caller reads plainly."""

    req_id: int
    obj_id: int
    method: str
    args: tuple[Any, ...]
    owner: int = 0


class Result(NamedTuple):
    """The successful outcome of request ``req_id``."""

    req_id: int
    value: Any = None


class Failure(NamedTuple):
    """Request ``req_id`` raised ``error`` (the referent's own exception, or a procshare one)."""

    req_id: int
    error: BaseException


class Push(NamedTuple):
    """A message the server sends unasked: an event for subscription ``sub_id``."""

    sub_id: int
    payload: Any


ClientMessage = (
    Call
    | Create
    | Control
    | Batch
    | Retain
    | Release
    | Watch
    | Unwatch
    | Cancel
    | Goodbye
    | ReadSince
    | LeaseAcquire
    | LeasedRead
    | Post
)
ServerMessage = Result | Failure | Push
