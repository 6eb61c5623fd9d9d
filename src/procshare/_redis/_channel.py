"""``RedisChannel``: the backend of the proxies when the objects live in Redis.

One per process and Redis namespace (``get_redis_channel``), as ``_client._channel.Channel``
is one per process and server; it speaks the same ``Backend`` operations, so every proxy
works unchanged. What it keeps in Redis, and how, is in ``_scripts`` (every change is one Lua
script, run once per request id), ``_items`` (dicts and lists, item by item) and ``_values``
(the other containers, each one value).

**Sessions.** A process is a session (``sessions``: id -> expiry) kept alive by a heartbeat
thread every ttl/3. Everything a process holds names its session: locks, RLock depths,
semaphore permits, queue items on their way to it, references, waiters. A session that
expires is dead: the next acquire of a lock it held takes it back, and a janitor (any live
process, at most one at a time: ``SET NX PX``) gives back what dead sessions held and frees
the objects nobody references, in bounded batches.

**Waiting.** A call that must wait (an acquire of a held lock, a get on an empty queue)
registers a token in the object's waiters with its check, atomically, then waits in
``BLPOP`` on that token's list, in slices of at most a second; whoever frees what it waits
for pushes to the first live waiter's token. Between slices it checks again (keeping its
place), so a wake-up lost with a connection costs a slice, never a hang.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import pickle
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._address import Address
from .._context import incoming
from .._errors import (
    ConnectionLost,
    LockLostError,
    NameTakenError,
    ObjectNotFound,
    ProcshareError,
    UnsupportedError,
)
from .._kinds import KINDS
from .._protocol import Batch, Create, LeasedRead, ReadSince
from .._serializers import get_serializer
from .._server import _objects
from .._token import Token
from ._items import ITEMWISE, decode_key, decode_value, encode_key, encode_value, plain_int
from ._scripts import LATCH_SLOTS, LATCHED, PLAIN
from ._url import RedisURL, parse_redis_url, redis_client
from ._values import CONTAINERS, from_plain, handler_for, initial_value, to_plain

if TYPE_CHECKING:
    from .._client._channel import RefQueue
    from .._client._leases import LeaseBook
    from .._client._loans import LoanBook

__all__ = ["RedisChannel", "forget_redis_channels", "get_redis_channel"]

#: the longest single BLPOP: between two, a waiter checks again (a lost wake-up costs this)
WAIT_SLICE: Final = 1.0

#: how many times a command is sent over a lost connection before the loss is raised (a
#: restarted Redis, a proxy cutting connections), with a pause that doubles each time
_SENDS: Final = 10


def _pause_before(attempt: int) -> None:
    """Wait before sending again over a new connection: none at first, then 5 ms doubling
    to at most 0.5 s (~2.5 s in all before a loss is raised)."""
    if attempt:
        time.sleep(min(0.005 * 2 ** (attempt - 1), 0.5))


#: kind -> the names of its methods that change it (``Kind.mutators`` computes it each time)
_MUTATORS: Final = {name: kind.mutators for name, kind in KINDS.items()}

#: seconds a process describes its changes to an object after it found a watcher of it (then
#: it asks again: a script that meets a watcher unannounced does nothing and says so)
DESCRIBE_FOR: Final = 2.0


class Abandoned(BaseException):
    """Raised in a worker thread's wait whose asyncio caller was cancelled (``_async``): the
    wait's own handlers withdraw it, as for a KeyboardInterrupt (a ``BaseException``, so
    that no ``except Exception`` on the way takes it for a failure)."""


class Caller:
    """An asyncio call being run on a worker thread (``_async``), as its waits see it.

    ``cancelled``: its caller stopped waiting; ``token``: the wake-up token it is waiting on
    now (where the cancelling side pushes, to wake it at once); ``shield``: > 0 while it must
    not stop (a Condition wait taking its lock back); ``taken``: the queue items it took,
    ``(queue id, tag, stored item)`` (given back if its caller is gone when it ends)."""

    __slots__ = ("cancelled", "shield", "taken", "token")

    def __init__(self) -> None:
        self.cancelled = False
        self.token: str | None = None
        self.shield = 0
        self.taken: list[tuple[int, bytes, bytes]] = []


class _Closer:
    """Closes a thread's connection when its thread ends (kept in the thread-local alone, it
    goes at once then, where the connection itself waits for the cycle collector)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.disconnect()


def _owner_tag(owner: int) -> str:
    return str(owner)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisChannel:
    """This process's connection to one Redis namespace (a ``Backend``)."""

    def __init__(self, address: str, authkey: bytes, serializer: str = "pickle") -> None:
        import redis

        from .._client._channel import PID_CELL, refqueue_for

        url: RedisURL = parse_redis_url(address)
        self.url = url
        self.address: Address = address
        self.authkey = authkey
        self.pid = self.usable_pid = PID_CELL[0]
        self.leases: LeaseBook | None = None
        self.loans: LoanBook | None = None  # (locks are lent by procshare's server only)
        self.can_post = False
        self.registered: dict[tuple[int, str], bool | int] = {}
        self.bound: dict[int, int] = {}
        self.refs: RefQueue = refqueue_for(address)
        self._prefix = url.prefix
        self._serializer = get_serializer(serializer)
        self._client = redis_client(url, socket_connect_timeout=10.0, health_check_interval=30)
        self._scripts = {
            name: self._client.register_script(src) for name, src in {**LATCHED, **PLAIN}.items()
        }
        #: script name -> its SHA1 (``EVALSHA`` straight away: ``_run``)
        self._shas = {name: script.sha for name, script in self._scripts.items()}
        self._latched = frozenset(LATCHED)
        #: request ids: unique to this channel (random) and to each call (counted)
        self._rid_prefix = secrets.token_hex(6) + ":"
        self._rids = itertools.count()
        #: watched containers this process changes -> until when its changing scripts carry
        #: the changes' descriptions for the watchers (``_run_changing``)
        self._described: dict[int, float] = {}
        #: the call being made on a container, per thread (what a one-entry change describes)
        self._calling = threading.local()
        #: each thread's connection for scripts (``_connection``), and all of them (closed
        #: with the channel)
        self._conns = threading.local()
        self._all_conns: weakref.WeakSet[Any] = weakref.WeakSet()
        #: whether this Redis takes ``CLIENT REPLY SKIP`` (``None``: not asked yet)
        self._skip_replies: bool | None = None
        #: queue items' acks not sent yet, and sent without an answer (``_delivered``)
        self._acks: list[bytes] = []
        self._acks_lock = threading.Lock()
        self._unconfirmed: list[bytes] = []
        self._unconfirmed_lock = threading.Lock()
        self.session = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        #: the queue items on their way to this process (``f:<session>``: ``_delivered``)
        self._in_flight = f"{self._prefix}f:{self.session}"
        self._ttl_ms = int(url.session_ttl * 1000)
        self._delay_ms = int(url.release_delay * 1000)
        #: (object id) -> (typeid, kind)
        self._types: dict[int, tuple[str, str]] = {}
        #: (object id) -> (version, what was stored) last seen, for the containers: the
        #: serialized value, a list's items, or a dict's (order, entries)
        self._values: dict[int, tuple[bytes, Any]] = {}
        #: (lock id, owner) -> the fencing token of its last acquire by that owner
        self.fencing: dict[tuple[int, int], int] = {}
        #: (lock id, owner) -> how many times held (an RLock's depth): what ``release`` may
        #: find lost
        self.held: dict[tuple[int, int], int] = {}
        #: JoinableQueue id -> the tags of the items this process took and has not done,
        #: oldest first (each stays on its way to this process until its task_done)
        self.undone: dict[int, collections.deque[bytes]] = {}
        #: condition id -> its lock's id
        self.condition_locks: dict[int, int] = {}
        self._closed = False
        self._broken: BaseException | None = None
        try:
            instance, _ = self._run(
                "beat",
                self.session,
                self._ttl_ms,
                self._who(),
                secrets.token_hex(8),
                self._rid_prefix[:-1],
            )
        except redis.RedisError as exc:
            raise ConnectionLost(f"cannot reach Redis at {url.canonical}: {exc}") from exc
        self._load_scripts()
        self.server_info: dict[str, Any] = {
            "instance": _text(instance),
            "backend": "redis",
            "session": self.session,
        }
        self._stop = threading.Event()
        self._heart = threading.Thread(
            target=self._beat, name="procshare-redis-heartbeat", daemon=True
        )
        self._heart.start()

    # -- scripts -------------------------------------------------------------------------------

    def _run(self, name: str, *args: Any) -> Any:
        """Run script ``name`` with ``args`` after the prefix and a fresh request id (and, in
        the same write, the acks of the queue items that reached this process: ``_delivered``)."""
        import redis

        rid = f"{self._rid_prefix}{next(self._rids)}" if name in self._latched else ""
        command = ("EVALSHA", self._shas[name], 0, self._prefix, rid, *args)
        if self._acks:
            sent, answer = self._run_with_acks(command)
            if sent:
                return answer
        try:
            return self._send(command)
        except redis.exceptions.NoScriptError:  # (a restarted or flushed Redis: not run)
            self._load_scripts()
            return self._send(command)

    def _send(self, command: tuple[Any, ...]) -> Any:
        """Send one command on this thread's connection; its answer (raw, as Redis gave it).

        A connection lost on the way is replaced and the command sent again, a few times: a
        read or a harmless script is read again, a change is answered by its latch."""
        import redis

        for attempt in range(_SENDS):
            conn = self._connection()
            try:
                conn.send_packed_command(conn.pack_command(*command))
                return conn.read_response()
            except (OSError, redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                if attempt == _SENDS - 1:
                    raise
                _pause_before(attempt + 1)
            except redis.ResponseError:
                raise  # (the command's own error: the connection is as it was)
            except BaseException:
                conn.disconnect()  # (interrupted mid-answer: its state is unknown)
                raise
        raise AssertionError("unreachable")  # (the last attempt returned or raised)

    def _connection(self) -> Any:
        """This thread's own connection for scripts: a script then costs no trip through the
        pool (taken, health-checked and given back on every command, ~5 us); it closes when
        its thread ends (the thread-local goes, and with it the connection)."""
        conn = getattr(self._conns, "conn", None)
        if conn is None:
            pool = self._client.connection_pool
            conn = self._conns.conn = pool.connection_class(**pool.connection_kwargs)
            self._conns.closer = _Closer(conn)  # (goes with the thread, and closes it)
            self._all_conns.add(conn)
        return conn

    def _run_with_acks(self, command: tuple[Any, ...]) -> tuple[bool, Any]:
        """Send the pending acks and ``command`` in one write: ``(True, its answer)``, or
        ``(False, None)`` where it must be sent the usual way (the acks stay pending; a
        command that went out is answered by its latch when sent again)."""
        import redis

        with self._acks_lock:
            fields, self._acks = self._acks, []
        key = self._in_flight
        conn = self._connection()
        try:
            if self._skip_replies is None:
                self._skip_replies = _replies_can_be_skipped(conn)
            if self._skip_replies:  # (Redis answers the script only)
                acks = [("CLIENT", "REPLY", "SKIP"), ("HDEL", key, *fields)]
            else:  # (a user without CLIENT: the HDEL's answer is read first)
                acks = [("HDEL", key, *fields)]
            conn.send_packed_command(conn.pack_commands([*acks, command]))
            if not self._skip_replies:
                with contextlib.suppress(redis.ResponseError):
                    conn.read_response()
            with self._unconfirmed_lock:
                self._unconfirmed += fields  # (sent: the heartbeat confirms them)
            try:
                return True, conn.read_response()
            except redis.exceptions.NoScriptError:
                self._load_scripts()
                return False, None
        except (OSError, redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()  # (its state unknown: a new one next time)
            with self._acks_lock:
                self._acks[:0] = fields
            return False, None
        except redis.ResponseError:
            raise  # (the script's own error, read whole: the connection is as it was)
        except BaseException:
            conn.disconnect()  # (interrupted mid-answer)
            with self._acks_lock:
                self._acks[:0] = fields
            raise

    def _describe(self, obj_id: int, changes: list[Any]) -> bytes:
        """What a changing script gets as ARGV[4]: nothing while nobody watches the object (as
        far as this process knows), else ``<n>:`` and the serialized changes."""
        if self._described.get(obj_id, 0.0) < time.monotonic():
            return b""
        return self._description(changes)

    def _description(self, changes: list[Any]) -> bytes:
        """``changes`` as a watched object's stream entry carries them (``_watch``)."""
        return b"%d:" % len(changes) + self._serializer.dumps(changes)

    def _run_changing(self, name: str, obj_id: int, changes: list[Any], *args: Any) -> Any:
        """Run the container-changing script ``name``, describing ``changes`` (a list of
        ``(op, args, kwargs, result)``) when somebody watches the object (``_scripts._WATCHED``:
        a script that finds a watcher and no description changes nothing and says so)."""
        answer = self._run(name, obj_id, self._describe(obj_id, changes), *args)
        if answer[0] in (b"watched", "watched"):
            self._described[obj_id] = time.monotonic() + DESCRIBE_FOR
            answer = self._run(name, obj_id, self._describe(obj_id, changes), *args)
        return answer

    def _load_scripts(self, names: Any = None) -> None:
        """Load the scripts into Redis (``names``, else all), in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for name in names or self._scripts:
            pipe.script_load(self._scripts[name].script)
        pipe.execute()

    def _who(self) -> str:
        return f"pid {os.getpid()} on {socket.gethostname()}"

    @property
    def broken(self) -> bool:
        return self._broken is not None

    # -- the session ---------------------------------------------------------------------------

    def _beat(self) -> None:
        """The heartbeat thread: renew the session every ttl/3, send reference notes, and now
        and then be the janitor."""
        every = self._ttl_ms / 3000
        next_janitor = 0.0
        while not self._stop.wait(every):
            if self.usable_pid != os.getpid():
                return
            with contextlib.suppress(Exception):
                self._run("beat", self.session, self._ttl_ms, "", "", "")
                self._confirm_deliveries()
                self._flush_refs()
                now = time.monotonic()
                if now >= next_janitor:
                    next_janitor = now + self._ttl_ms / 1000
                    self.janitor()

    def janitor(self) -> tuple[int, int]:
        """Reap dead sessions and free unreferenced objects, if no other process is doing it
        now; ``(sessions reaped, objects freed)``."""
        guard = self._prefix + "janitor"
        if not self._client.set(guard, self.session, nx=True, px=self._ttl_ms):
            return (0, 0)
        try:
            dead, freed = self._run("janitor", self._delay_ms)
            return int(dead), int(freed)
        finally:
            with contextlib.suppress(Exception):
                self._client.delete(guard)

    def _flush_refs(self) -> None:
        refs = self.refs
        if not refs:
            return
        retain, release = refs.drain()
        if retain or release:
            self._run("refs", self.session, self._delay_ms, len(retain), *retain, *release)

    def close(self, drop: bool = False) -> None:
        """Leave on purpose: what this process held is given back at once; ``drop``: delete
        the whole namespace instead (the end of a ``Manager()`` that owned it)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self.usable_pid == os.getpid():
            with contextlib.suppress(Exception):
                if drop:
                    self._drop_namespace()
                else:
                    self._keep_undone()
                    self._confirm_deliveries()
                    self._flush_refs()
                    self._run("leave", self.session, self._delay_ms)
        with contextlib.suppress(Exception):
            self._client.close()
        for conn in list(self._all_conns):
            with contextlib.suppress(Exception):
                conn.disconnect()

    def _drop_namespace(self) -> int:
        """Delete every key of this namespace.

        First its incarnation and its objects' types, in one step: from then on every
        script finds the namespace gone and writes nothing in it (a child's late reference
        note or leave, a janitor), so the keys scanned away are not made again behind the
        scan; then every key, in batches; then once more, for what was written meanwhile."""
        p = self._prefix
        deleted = int(self._client.unlink(p + "instance", p + "types"))
        for _ in range(2):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=p.replace("{", "\\{") + "*", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self._client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += self._client.unlink(*batch)
        return deleted

    # -- the Backend operations ------------------------------------------------------------------

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
        if self.refs:
            self._flush_refs()
        typeid, kind = self._type_of(obj_id)
        if kind in CONTAINERS:
            return self._container_call(obj_id, kind, method, args, kwargs or {}, versioned)
        if versioned:
            raise UnsupportedError(f"a {typeid} on Redis has no versions")
        handler = _PRIMITIVE_CALLS.get((kind, method)) or _PRIMITIVE_CALLS.get(("*", method))
        if handler is None:
            raise _not_exposed(typeid, method)
        return handler(self, obj_id, kind, owner, *args, **(kwargs or {}))

    def post(self, obj_id: int, method: str, args: tuple[Any, ...] = (), owner: int = 0) -> bool:
        return False  # (every call on Redis waits for its answer)

    def withdraw(self, obj_id: int) -> None:
        pass  # (nothing is ever posted here)

    def request(self, msg: Any, blocking: bool = False, wait: float | None = None) -> Any:
        if self.refs:
            self._flush_refs()
        kind = type(msg)
        if kind is Create:
            return self._create(msg.typeid, msg.args, msg.kwargs or {})
        if kind is ReadSince:
            return False  # (no logged versions here: the proxy reads plainly)
        if kind is LeasedRead:
            return None
        if kind is Batch:
            return self._batch(msg.calls)
        raise UnsupportedError(f"{kind.__name__} requests are not available on Redis")

    def request_many(self, msgs: list[Any]) -> list[Any]:
        return [self.request(msg) for msg in msgs]

    def control(self, command: str, *args: Any) -> Any:
        if self.refs:
            self._flush_refs()
        handler = _CONTROLS.get(command)
        if handler is None:
            raise UnsupportedError(f"{command!r} is not available on Redis")
        return handler(self, *args)

    def release_soon(self, obj_id: int) -> None:
        self.refs.release(obj_id)

    def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        raise UnsupportedError("watch() and cache() are not available on Redis yet (issue #21)")

    def unsubscribe(self, sub_id: int) -> None:
        return None

    def unsubscribe_soon(self, sub_id: int) -> None:
        return None

    def read_forever(self, on_broken: Callable[[BaseException], None]) -> None:
        raise UnsupportedError("watch() is not available on Redis yet (issue #21)")

    # -- objects ---------------------------------------------------------------------------------

    def _type_of(self, obj_id: int) -> tuple[str, str]:
        known = self._types.get(obj_id)
        if known is not None:
            return known
        p = self._prefix
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(p + "types", obj_id)
        pipe.hget(f"{p}{obj_id}:m", "kind")
        typeid, kind = pipe.execute()
        if typeid is None:
            raise ObjectNotFound.of(obj_id)
        known = (_text(typeid), _text(kind) if kind is not None else "")
        self._types[obj_id] = known
        return known

    def _create(
        self, typeid: str, args: tuple[Any, ...], kwargs: dict[str, Any], name: str = ""
    ) -> Any:
        from .._client._proxies import BaseProxy
        from .._manager import _native_kind

        registry = _registry_for(self.address)
        registration = registry.get(typeid)
        if registration is None:
            raise ValueError(f"unknown typeid {typeid!r}")
        kind = _native_kind(typeid, registration)
        if kind is None or kind == "LiveIterator":
            raise UnsupportedError(
                f"{typeid!r} is a registered class: its objects need a server to run in, "
                "which Redis is not (use procshare's own server for it)"
            )
        values, meta, inside, referent = self._initial_state(kind, args, kwargs)
        flat: list[Any] = [len(values)]
        for suffix, value in values.items():
            flat += [suffix, value]
        flat.append(len(meta))
        for field, value in meta.items():
            flat += [field, value]
        status, answer = self._run("create", typeid, self.session, name, *flat)
        status = _text(status)
        if status == "taken":
            raise NameTakenError(
                f"the name {name!r} belongs to a {_text(answer)!r} object, not a {typeid!r}"
            )
        obj_id = int(answer)
        self._types[obj_id] = (typeid, kind)
        if kind in ITEMWISE:
            if referent:  # (its first entries, and the references they hold)
                self._write_whole(obj_id, kind, b"-1", referent, [])
        elif inside:  # its value holds proxies: it keeps their objects alive
            self._run("write", obj_id, b"", "0", values["d"], self._delay_ms, *inside)
        token = Token(typeid, self.address, obj_id)
        proxytype = registration.proxytype
        proxy = proxytype(token, "pickle", authkey=self.authkey, incref=False)
        if isinstance(proxy, BaseProxy):
            proxy._ref_pid = os.getpid()  # (the create script counted our reference)
        if kind == "Condition":
            lock_id = int(meta["lock"])
            self._types.setdefault(lock_id, self._type_of(lock_id))
        return proxy

    def _initial_state(
        self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], set[int], Any]:
        """What a new object of ``kind`` starts as: per-object keys, its meta fields, the
        objects whose proxies its value holds, and (a dict or list) its first contents."""
        meta: dict[str, Any] = {"kind": kind}
        dumps = self._serializer.dumps
        if kind in ITEMWISE:
            referent = _objects.FACTORIES[kind](*args, **kwargs)
            self._encode_whole(kind, referent)  # (a key Redis cannot keep: refused now)
            # (first contents are written next, as version -1 -> 0: it starts at 0, as there)
            return {"v": -1 if referent else 0}, meta, set(), referent
        if kind in CONTAINERS:
            referent = _objects.FACTORIES[kind](*args, **kwargs)
            plain = initial_value(kind, referent)
            return {"d": dumps(plain), "v": 0}, meta, _shared_inside(plain, self.address), None
        if kind in ("Lock", "RLock"):
            _objects.FACTORIES[kind](*args, **kwargs)  # (its arguments checked as there)
            meta["reentrant"] = 1 if kind == "RLock" else 0
            return {"d": 1}, meta, set(), None
        if kind in ("Semaphore", "BoundedSemaphore"):
            sem = _objects.FACTORIES[kind](*args, **kwargs)
            meta["initial"] = sem.value
            meta["reentrant"] = 0
            return {"d": sem.value}, meta, set(), None
        if kind == "Event":
            _objects.FACTORIES[kind](*args, **kwargs)
            return {"d": "0"}, meta, set(), None
        if kind == "Condition":
            lock = args[0] if args else kwargs.get("lock")
            if lock is None:
                lock = self._create("RLock", (), {})
            lock_id, lock_kind = _lock_of(lock, self.address)
            if lock_kind not in ("Lock", "RLock"):
                raise TypeError(f"a Condition's lock must be a Lock or an RLock, not {lock_kind}")
            meta["lock"] = lock_id  # (the condition holds a reference to it: ``_scripts``)
            return {}, meta, set(), None
        if kind == "Barrier":
            barrier = _objects.Barrier(*args, **kwargs)
            meta["parties"] = barrier.parties
            timeout = barrier.default_timeout
            meta["timeout"] = "" if timeout is None else repr(float(timeout))
            action = args[1] if len(args) > 1 else kwargs.get("action")
            if action is not None:
                meta["action"] = 1
                meta["actionblob"] = pickle.dumps(action)
            return {}, meta, set(), None
        if kind in ("Queue", "JoinableQueue"):
            maxsize = args[0] if args else kwargs.get("maxsize", 0)
            if not isinstance(maxsize, int):
                raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
            meta["maxsize"] = max(0, maxsize)
            meta["redeliver"] = 1 if kwargs.get("redeliver", True) else 0
            return {"u": 0}, meta, set(), None
        raise UnsupportedError(f"{kind} objects are not available on Redis")

    # -- containers -------------------------------------------------------------------------------

    def _container_call(
        self,
        obj_id: int,
        kind: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        versioned: bool,
    ) -> Any:
        fn = handler_for(kind, method)
        if fn is None:
            raise _not_exposed(kind, method)
        changes = method in _MUTATORS[kind]
        if kind in ITEMWISE and (changes or not versioned):
            one_entry = _ITEM_CALLS.get((kind, method))
            if one_entry is not None:
                calling = self._calling
                calling.change = (method, args, kwargs or None, None)
                calling.version = None
                answer = one_entry(self, obj_id, *args, **kwargs)
                if answer is not WHOLE:
                    if not versioned:
                        return answer
                    if calling.version is not None:  # (a cached proxy's own write)
                        return answer, int(calling.version)
        cached = self._values.get(obj_id)
        verified = not changes or cached is None
        known = self._read(obj_id, kind, cached) if verified or cached is None else cached
        while True:
            version, stored = known
            referent = self._decode_whole(kind, stored)
            try:
                result = fn(referent, *args, **kwargs)
            except Exception:
                if verified:
                    raise  # (raised by the current value: as the call would, unwritten)
                # (raised by what this process last saw: the value may have moved on)
                known, verified = self._read(obj_id, kind, known), True
                continue
            if not changes:
                return (result, int(version)) if versioned else result
            change = (method, args, kwargs or None, result)
            written = self._write_whole(obj_id, kind, version, referent, [change])
            if written is not None:
                return (result, int(written)) if versioned else result
            # changed meanwhile: compute again (a one value's conflict brought the newer one)
            known = self._values.get(obj_id) or self._read(obj_id, kind, None)
            verified = True

    def _read(self, obj_id: int, kind: str, known: tuple[bytes, Any] | None) -> tuple[bytes, Any]:
        """The container's whole stored form and version (``known`` if it is still current)."""
        version = known[0] if known is not None else b""
        if kind in ITEMWISE:
            answer = self._run("read_items", obj_id, version, kind)
        else:
            answer = self._run("read", obj_id, version)
        status = _text(answer[0])
        if status == "gone":
            self._values.pop(obj_id, None)
            raise ObjectNotFound.of(obj_id)
        if status == "same" and known is not None:
            return known
        fresh = (answer[1], _stored_in(kind, answer, 2))
        self._values[obj_id] = fresh
        return fresh

    def _decode_whole(self, kind: str, stored: Any) -> Any:
        """A fresh referent from the stored form ``_read`` returned."""
        loads = self._serializer.loads
        if kind == "list":
            return [decode_value(item, loads) for item in stored]
        if kind == "dict":
            order, flat = stored
            entries = dict(zip(flat[::2], flat[1::2], strict=True))
            return {decode_key(field): decode_value(entries[field], loads) for field in order}
        return from_plain(kind, loads(stored))

    def _encode_whole(self, kind: str, referent: Any) -> Any:
        """The stored form of ``referent`` (``_decode_whole``'s inverse)."""
        dumps = self._serializer.dumps
        if kind == "list":
            return [encode_value(item, dumps) for item in referent]
        if kind == "dict":
            order: list[bytes] = []
            flat: list[bytes] = []
            for key, value in referent.items():
                field = _field_for_write(key)
                order.append(field)
                flat += (field, encode_value(value, dumps))
            if len(set(order)) != len(order):
                raise TypeError("two keys of this dict are one key on Redis (1, 1.0 and True)")
            return (order, flat)
        return dumps(to_plain(kind, referent))

    def _write_whole(
        self, obj_id: int, kind: str, version: bytes, referent: Any, changes: list[Any]
    ) -> bytes | None:
        """Write ``referent`` if the object is still at ``version``: its new version, or
        ``None`` if it changed meanwhile. ``changes``: the calls that made it, for watchers."""
        stored, script, args = self._write_args(kind, version, referent)
        answer = self._run_changing(script, obj_id, changes, *args)
        status = _text(answer[0])
        if status == "ok":
            self._values[obj_id] = (answer[1], stored)
            return bytes(answer[1])
        if status == "gone":
            self._values.pop(obj_id, None)
            raise ObjectNotFound.of(obj_id)
        if kind not in ITEMWISE:  # (the one-value conflict brings the newer value along)
            self._values[obj_id] = (answer[1], answer[2])
        else:
            self._values.pop(obj_id, None)
        return None

    def _item(self, name: str, obj_id: int, *args: Any) -> Any:
        """Run the one-entry script ``name``: its answer, or ``WHOLE`` where the change must
        be made on the whole (the container holds proxies)."""
        change = getattr(self._calling, "change", None)
        batch: _Batching | None = getattr(self._calling, "batch", None)
        if batch is None:
            answer = self._run_changing(name, obj_id, [change], *args)
        elif batch.answer is None:  # (a pipeline's first pass: noted, sent with the others)
            batch.script = (name, obj_id, args)
            raise _Noted
        else:
            answer = batch.answer
        self._values.pop(obj_id, None)  # (what this process saw of it is no longer current)
        status = _text(answer[0])
        if status == "gone":
            raise ObjectNotFound.of(obj_id)
        if status == "whole":
            return WHOLE
        if status == "ok":
            self._calling.version = answer[1]  # (the version after it: see _container_call)
        return answer

    def _look(self, obj_id: int, what: str, arg: Any = "") -> Any:
        """One entry read, a plain command (as fast as Redis answers): the answer, or
        ``None`` for no such entry; an answer that may mean the object is gone (nothing, or
        nothing there) is checked."""
        send = self._send
        answer: Any
        if what == "get":
            answer = send(("HGET", f"{self._prefix}{obj_id}:e", arg))
        elif what == "has":
            answer = send(("HEXISTS", f"{self._prefix}{obj_id}:e", arg)) or None
        elif what == "dlen":
            answer = send(("HLEN", f"{self._prefix}{obj_id}:e")) or None
        elif what == "index":
            answer = send(("LINDEX", f"{self._prefix}{obj_id}:l", arg))
        else:
            answer = send(("LLEN", f"{self._prefix}{obj_id}:l")) or None
        if answer is None:
            if not send(("HEXISTS", self._prefix + "types", obj_id)):
                self._values.pop(obj_id, None)
                raise ObjectNotFound.of(obj_id)
            return 0 if what in ("has", "dlen", "llen") else None
        return answer

    # -- pipelines --------------------------------------------------------------------------------

    def _batch_entries(
        self, calls: Any, kinds: dict[int, str]
    ) -> tuple[list[Any], dict[int, BaseException]] | None:
        """A pipeline's batch of one-entry changes (sets, appends, pops... of dicts and
        lists, with plain values): their scripts in one ``MULTI/EXEC``, whatever the size of
        the containers. ``None`` where the batch is not only such calls (it is then made on
        the whole values: ``_batch_once``).

        Each call's handler runs twice: first its script is noted (``_Noted``), then, with
        the script's answer, it makes its result as a plain call would. Under ``WATCH``, the
        containers are checked to hold no proxies first (their scripts would answer
        ``whole``, changing nothing, half-way through the batch). Every script has its
        request id: a batch sent again after a lost connection is answered by the latches,
        never applied twice."""
        import redis

        if not calls or any(
            (kinds.get(obj_id), method) not in _BATCHED_CHANGES for obj_id, method, *_ in calls
        ):
            return None
        calling = self._calling
        values: list[Any] = [None] * len(calls)
        errors: dict[int, BaseException] = {}
        noted: list[tuple[int, _Batching, Any]] = []  # (index, its script, its change)
        try:
            for index, (_obj_id, method, args, kwargs, _owner) in enumerate(calls):
                batch = calling.batch = _Batching()
                calling.change = (method, args, kwargs or None, None)
                try:
                    value = self._entry_call(calls[index], kinds)
                except _Noted:
                    noted.append((index, batch, calling.change))
                    continue
                except Exception as exc:  # noqa: BLE001 (the call's own error, as a plain one)
                    errors[index] = exc
                    continue
                if value is WHOLE:
                    return None
                values[index] = value  # (nothing to send: an empty extend)
            if not noted:
                return values, errors
            groups = _merged(noted)
            p = self._prefix
            # (one request id each, kept if the batch is sent again: its latch answers then)
            rids = [f"{self._rid_prefix}{next(self._rids)}" for _ in groups]

            def commands(watched: set[int]) -> list[tuple[Any, ...]]:
                sent: list[tuple[Any, ...]] = [("MULTI",)]
                for rid, (name, obj_id, args, changes, _members) in zip(rids, groups, strict=True):
                    ev = self._description(changes) if obj_id in watched else b""
                    sent.append(("EVALSHA", self._shas[name], 0, p, rid, obj_id, ev, *args))
                sent.append(("EXEC",))
                return sent

            sent = self._send_batch(sorted({g[1] for g in groups}), commands)
            if sent is None:
                return None  # (a container holds proxies: on the whole values)
            answers = [None] * len(noted)
            for group, answer in zip(groups, sent, strict=True):
                for member in group[4]:
                    answers[member] = answer
            for (index, batch, change), answer in zip(noted, answers, strict=True):
                if isinstance(answer, redis.ResponseError):
                    errors[index] = ProcshareError(f"Redis refused the change: {answer}")
                    continue
                batch.answer = answer
                calling.batch = batch
                calling.change = change
                try:
                    value = self._entry_call(calls[index], kinds)
                except Exception as exc:  # noqa: BLE001 (the call's own error, as a plain one)
                    errors[index] = exc
                    continue
                values[index] = value
            return values, errors
        finally:
            calling.batch = None

    def _entry_call(self, call: Any, kinds: dict[int, str]) -> Any:
        """A pipeline's call made by its one-entry handler (``_ITEM_CALLS``)."""
        obj_id, method, args, kwargs, _owner = call
        return _ITEM_CALLS[(kinds[obj_id], method)](self, obj_id, *args, **(kwargs or {}))

    def _send_batch(
        self, obj_ids: list[int], commands: Callable[[set[int]], list[tuple[Any, ...]]]
    ) -> Any:
        """Send ``MULTI ... EXEC`` (``commands(the objects watched)``, which describe their
        changes for the watchers) if none of the containers holds proxies, all under
        ``WATCH`` of those marks: the answers, or ``None`` where one holds proxies (or began
        to, or to be watched, meanwhile). A lost connection sends it all again (the scripts'
        latches answer what was done). An object freed meanwhile is found so by each of its
        scripts, together (``MULTI``): its calls fail alike."""
        import redis

        p = self._prefix
        marks = [f"{p}{obj_id}:{mark}" for obj_id in obj_ids for mark in ("c", "W")]
        looks = [("EXISTS", mark) for mark in marks]
        for attempt in range(_SENDS):
            conn = self._connection()
            try:
                conn.send_packed_command(conn.pack_commands([("WATCH", *marks), *looks]))
                conn.read_response()
                found = [int(conn.read_response()) for _ in looks]
                if any(found[0::2]):
                    self._unwatch(conn)
                    return None
                watched = {i for i, w in zip(obj_ids, found[1::2], strict=True) if w}
                sending = commands(watched)
                conn.send_packed_command(conn.pack_commands(sending))
                for _ in range(len(sending) - 1):
                    conn.read_response()  # (OK, then QUEUED for each)
                answers = conn.read_response()
            except (OSError, redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()
                if attempt == _SENDS - 1:
                    raise
                _pause_before(attempt + 1)
                continue
            except BaseException:
                conn.disconnect()  # (in an unknown state: WATCH or MULTI may be on)
                raise
            if answers is None:
                return None  # (a proxy stored, or a watch begun, meanwhile: the whole way)
            if any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
                self._load_scripts()  # (every EVALSHA failed alike: none was applied)
                continue
            return answers
        raise ConnectionLost("a pipeline's batch kept being interrupted; it was not applied")

    def _batch(self, calls: Any) -> tuple[list[Any], dict[int, BaseException]]:
        """A pipeline's batch: its calls applied in order as one step, ``(values, {index:
        error})`` as procshare's server answers.

        A batch of one-entry changes goes as their scripts (``_batch_entries``). Any other:
        the containers it touches are read whole under ``WATCH`` (of their versions), the
        calls run here on the copies, and every changed one is written back in one
        ``MULTI/EXEC``: a concurrent reader sees all of the batch or none of it. If one of
        them changed in between, ``EXEC`` does nothing and the batch is computed again. Both
        go on this thread's connection. Calls on other objects (locks, queues...) fail one by
        one with ``UnsupportedError``."""
        import redis

        kinds: dict[int, str] = {}
        refused: dict[int, BaseException] = {}
        for obj_id, *_ in calls:
            if obj_id in kinds or obj_id in refused:
                continue
            try:
                typeid, kind = self._type_of(obj_id)
            except ObjectNotFound as exc:
                refused[obj_id] = exc
                continue
            if kind in CONTAINERS:
                kinds[obj_id] = kind
            else:
                refused[obj_id] = UnsupportedError(
                    f"a pipeline on Redis holds calls to dicts, lists, sets, Namespaces, Values "
                    f"and Arrays, not to a {typeid}"
                )
        entries = self._batch_entries(calls, kinds) if not refused else None
        if entries is not None:
            return entries
        conn = self._connection()
        cut = 0  # (connections lost under it: it is sent again, on a new one, a few times)
        try:
            while True:
                written: list[Any] = []
                computed: list[Any] = []
                try:
                    answer = self._batch_once(conn, calls, kinds, refused, written, computed)
                except (OSError, redis.ConnectionError, redis.TimeoutError):
                    conn.disconnect()
                    if written and self._applied(written[0][2]):
                        for obj_id, _, _ in written:  # (applied: its answer was lost)
                            self._values.pop(obj_id, None)
                        return computed[0]  # type: ignore[no-any-return]
                    cut += 1
                    if cut >= _SENDS:
                        raise
                    _pause_before(cut)
                    continue
                if answer is not None:
                    return answer
        except BaseException:
            conn.disconnect()  # (in an unknown state: WATCH may be on)
            raise

    def _batch_once(
        self,
        conn: Any,
        calls: Any,
        kinds: dict[int, str],
        refused: dict[int, BaseException],
        written: list[Any],
        computed: list[Any],
    ) -> tuple[list[Any], dict[int, BaseException]] | None:
        """One try of ``_batch`` on ``conn``: its answer, or ``None`` to compute it again
        (another process changed what it read, or Redis had lost the scripts). ``written``
        gets the objects it sends to be written and their request ids, ``computed`` the
        answer it sends them for (what to answer if the connection is lost after ``EXEC``
        went out and was applied)."""
        import redis

        p = self._prefix
        # round trip 1: WATCH, and everything it touches read at once
        watch = ("WATCH", p + "types", *(f"{p}{i}:v" for i in kinds))
        watch += tuple(f"{p}{i}:W" for i in kinds)  # (a watch begun meanwhile: again)
        flat = [x for obj_id, kind in kinds.items() for x in (obj_id, kind)]
        read = ("EVALSHA", self._shas["read_many"], 0, p, "", *flat)
        conn.send_packed_command(conn.pack_commands([watch, read]))
        conn.read_response()
        try:
            rows = conn.read_response()
        except redis.exceptions.NoScriptError:  # (a flushed Redis: nothing was run)
            self._unwatch(conn)
            self._load_scripts()
            return None
        versions, referents, watched = self._read_rows(kinds, rows, refused)
        values, errors, changes = self._apply(calls, kinds, referents, refused)
        computed[:] = [(values, errors)]
        if not changes:
            self._unwatch(conn)
            return values, errors
        # round trip 2: every changed one written back, or none of them
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        for obj_id, described in changes.items():
            rid = f"{self._rid_prefix}{next(self._rids)}"
            stored, script, args = self._write_args(
                kinds[obj_id], versions[obj_id], referents[obj_id]
            )
            ev = self._description(described) if obj_id in watched else b""
            commands.append(("EVALSHA", self._shas[script], 0, p, rid, obj_id, ev, *args))
            written.append((obj_id, stored, rid))
        commands.append(("EXEC",))
        conn.send_packed_command(conn.pack_commands(commands))
        for _ in range(len(commands) - 1):
            conn.read_response()  # (OK, then QUEUED for each)
        answers = conn.read_response()
        if answers is None:
            return None  # (one of them changed meanwhile: compute again)
        if any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
            self._load_scripts()  # (every EVALSHA failed alike: none was applied)
            return None
        for answer, (obj_id, stored, _) in zip(answers, written, strict=True):
            if _text(answer[0]) == "ok":
                self._values[obj_id] = (answer[1], stored)
            else:
                self._values.pop(obj_id, None)
        return values, errors

    def _applied(self, rid: str) -> bool:
        """Whether the script sent with request id ``rid`` ran (its answer is in the ring)."""
        channel, _, n = rid.rpartition(":")
        kept: Any = self._send(("HGET", f"{self._prefix}ql:{channel}", int(n) % LATCH_SLOTS))
        return bool(kept) and bool(kept.startswith(rid.encode() + b"\0"))

    @staticmethod
    def _unwatch(conn: Any) -> None:
        conn.send_command("UNWATCH")
        conn.read_response()

    def _write_args(
        self, kind: str, version: bytes, referent: Any
    ) -> tuple[Any, str, tuple[Any, ...]]:
        """How ``referent`` is written if the object is still at ``version``: its stored
        form, the script (``write`` or ``rewrite``), and the script's arguments after the
        object's id and its changes' description."""
        stored = self._encode_whole(kind, referent)
        plain = referent if kind in ITEMWISE else to_plain(kind, referent)
        inside = sorted(_shared_inside(plain, self.address))
        if kind in ITEMWISE:
            flat = stored if kind == "list" else stored[1]
            return stored, "rewrite", (version, self._delay_ms, kind, len(inside), *inside, *flat)
        return stored, "write", (version, stored, self._delay_ms, *inside)

    def _read_rows(
        self, kinds: dict[int, str], rows: Any, refused: dict[int, BaseException]
    ) -> tuple[dict[int, bytes], dict[int, Any], set[int]]:
        """``read_many``'s rows: versions, fresh copies, and which are watched (a gone one:
        refused)."""
        versions: dict[int, bytes] = {}
        referents: dict[int, Any] = {}
        watched: set[int] = set()
        for (obj_id, kind), row in zip(list(kinds.items()), rows, strict=True):
            if _text(row[0]) == "gone":
                del kinds[obj_id]
                refused[obj_id] = ObjectNotFound.of(obj_id)
                continue
            versions[obj_id] = row[1]
            if int(row[2]):
                watched.add(obj_id)
            referents[obj_id] = self._decode_whole(kind, _stored_in(kind, row, 3))
        return versions, referents, watched

    def _apply(
        self,
        calls: Any,
        kinds: dict[int, str],
        referents: dict[int, Any],
        refused: dict[int, BaseException],
    ) -> tuple[list[Any], dict[int, BaseException], dict[int, list[Any]]]:
        """Run ``calls`` on the copies, in order: their values, errors, and the objects changed
        with the changes made to each (for their watchers)."""
        values: list[Any] = []
        errors: dict[int, BaseException] = {}
        changed: dict[int, list[Any]] = {}
        for index, (obj_id, method, args, kwargs, _owner) in enumerate(calls):
            values.append(None)
            if obj_id in refused:
                errors[index] = refused[obj_id]
                continue
            kind = kinds[obj_id]
            fn = handler_for(kind, method)
            if fn is None:
                errors[index] = _not_exposed(kind, method)
                continue
            mutates = method in _MUTATORS[kind]
            if mutates:  # (one that fails half-way keeps what it did, as there)
                changed.setdefault(obj_id, [])
            try:
                values[index] = fn(referents[obj_id], *args, **(kwargs or {}))
            except Exception as exc:  # noqa: BLE001 (each call's own error, as on the server)
                errors[index] = exc
                continue
            if mutates:
                changed[obj_id].append((method, args, kwargs or None, values[index]))
        return values, errors, changed

    # -- waiting ---------------------------------------------------------------------------------

    def _wait_token(self, token: str, deadline: float | None) -> bool:
        """Wait until ``token`` is pushed to (``True``) or a slice passes (``False``).

        On a worker thread of an asyncio client (``_async``) it also listens on ``c:<token>``,
        where the cancelled caller pushes: then it raises ``Abandoned`` (unless shielded). A
        real wake-up taken along with a cancellation counts: what it woke for is tried, and
        given back by the asyncio side if won (a wake-up is never dropped)."""
        slice_ = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        if slice_ <= 0:
            return False
        key = f"{self._prefix}t:{token}"
        timeout = f"{max(slice_, 0.001):.3f}"
        caller: Caller | None = getattr(self._calling, "caller", None)
        if caller is None:  # (on the thread's own connection: it has nothing else to do)
            return self._send(("BLPOP", key, timeout)) is not None
        cancel_key = f"{self._prefix}c:{token}"
        caller.token = token
        try:
            if caller.cancelled and not caller.shield:
                raise Abandoned
            popped = self._send(("BLPOP", key, cancel_key, timeout))
        finally:
            caller.token = None
        if popped is not None and _text(popped[0]) == key:
            return True
        if caller.cancelled and not caller.shield:
            raise Abandoned
        return False

    @contextlib.contextmanager
    def _shielded(self) -> Any:
        """A step that must finish even if its asyncio caller is cancelled (see ``Caller``)."""
        caller: Caller | None = getattr(self._calling, "caller", None)
        if caller is None:
            yield
            return
        caller.shield += 1
        try:
            yield
        finally:
            caller.shield -= 1

    def _until(
        self,
        attempt: Callable[[str, str], Any],
        give_up: Callable[[str], Any],
        wait: float | None,
    ) -> Any:
        """Run ``attempt(token, front)`` until it is not ``"wait"``; wait for a wake-up in
        between. Past ``wait`` seconds, ``give_up(token)`` answers instead."""
        deadline = None if wait is None else time.monotonic() + wait
        token = secrets.token_hex(8)
        front = "0"
        while True:
            answer = attempt(token, front)
            if _text(answer[0]) != "wait":
                return answer
            front = "1"  # (checked again: it keeps its place)
            try:
                woken = self._wait_token(token, deadline)
            except BaseException:
                # Interrupted (a signal, a KeyboardInterrupt): it waits no more, and what it
                # waited for is never given to it later.
                with contextlib.suppress(Exception):
                    give_up(token)
                raise
            if not woken and deadline is not None and time.monotonic() >= deadline:
                return give_up(token)

    def _delivered(self, field: bytes) -> None:
        """A queue item reached this process: take it off the items on their way to it (which
        a dead session's janitor puts back).

        Not a round trip of its own: the ack goes out in the same write as this process's
        next command (``_run``; ``CLIENT REPLY SKIP`` before it, so Redis answers the command
        only), or with the heartbeat, or when the process leaves, whichever comes first. Until
        then the item counts as still on its way, as on procshare's server (where the next
        request says the last answer arrived): a process killed before it made another call
        has the item delivered again (at least once). Acks sent without an answer are sent
        again, answered, by the heartbeat (``_confirm_deliveries``): one lost with a
        connection is not delivered twice."""
        with self._acks_lock:
            self._acks.append(field)

    def _keep_undone(self) -> None:
        """Leaving on purpose: the JoinableQueue items this process took and did not mark
        done are its own (as with the stdlib), not delivered again as a dead one's are."""
        fields = [tag for tags in self.undone.values() for tag in tags]
        self.undone.clear()
        if fields:
            self._client.hdel(self._in_flight, *fields)

    def _confirm_deliveries(self) -> None:
        """Send, and wait for, the acks not yet sent and those sent without an answer."""
        with self._acks_lock:
            pending, self._acks = self._acks, []
        with self._unconfirmed_lock:
            fields, self._unconfirmed = self._unconfirmed + pending, []
        if fields:
            self._client.hdel(self._in_flight, *fields)

    def _wait_on(
        self,
        script: str,
        obj_id: int,
        wait: float | None,
        waiters: str,
        pass_on: bool,
        timed_out: str,
        before: tuple[Any, ...] = (),
        after: tuple[Any, ...] = (),
    ) -> Any:
        """Run ``script`` (ARGV: id, sid, *before, token or '' for no wait, front, *after)
        until it no longer answers ``wait``, for at most ``wait`` seconds (``None``: no end);
        past that, leave ``waiters`` (passing on a wake-up that raced, if ``pass_on``) and
        answer ``(timed_out,)``. An object gone raises ``ObjectNotFound``."""

        def attempt(token: str, front: str) -> Any:
            tok = token if wait != 0.0 else ""
            return self._run(script, obj_id, self.session, *before, tok, front, *after)

        def give_up(token: str) -> Any:
            self._withdraw(obj_id, waiters, token, pass_on=pass_on)
            return (timed_out.encode(),)

        answer = self._until(attempt, give_up, wait)
        _gone(answer, obj_id)
        return answer

    def give_back(self, obj_id: int, tag: bytes, stored: bytes) -> None:
        """Put a queue item taken for an asyncio caller that is gone back at the head of its
        queue (``Caller.taken``): not on its way here any more, its ack not sent."""
        undone = self.undone.get(obj_id)
        if undone is not None and tag in undone:
            undone.remove(tag)
        with self._acks_lock:
            if tag in self._acks:
                self._acks.remove(tag)
        self._run("give_back", obj_id, self.session, tag, stored)

    def _withdraw(self, obj_id: int, listname: str, token: str, pass_on: bool) -> bool:
        """Leave the waiters of ``listname``; whether a wake-up raced with leaving."""
        raced, _ = self._run("withdraw", obj_id, listname, self.session, token, int(pass_on))
        return bool(raced)


def _stored_in(kind: str, answer: Any, at: int) -> Any:
    """The stored form of a ``kind`` container in a read script's ``answer`` from ``at``: a
    dict's is two items (its order and its entries), any other's one."""
    return (answer[at], answer[at + 1]) if kind == "dict" else answer[at]


# -- dicts and lists, one entry at a time (``_items``) ----------------------------------------

#: a one-entry call's answer where the call must be made on the whole container instead
WHOLE: Final = object()


def _field_for_write(key: Any) -> bytes:
    hash(key)  # (an unhashable key raises as a dict's would)
    return encode_key(key)


def _field_for_read(key: Any) -> bytes | None:
    """The field of ``key``, or ``None`` for a key no dict on Redis can hold (so is not in)."""
    try:
        return encode_key(key)
    except TypeError:
        hash(key)
        return None


def _plain_values(ch: RedisChannel, values: Any) -> list[bytes] | None:
    """The stored forms of ``values``, or ``None`` if one holds a proxy of this namespace
    (the container then counts its references, changed whole)."""
    values = list(values)
    if not all(type(v) in _SCALARS for v in values) and _shared_inside(values, ch.address):
        return None
    dumps = ch._serializer.dumps
    return [encode_value(v, dumps) for v in values]


def _d_getitem(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 1 or kwargs:
        return WHOLE
    field = _field_for_read(args[0])
    stored = None if field is None else ch._look(obj_id, "get", field)
    if stored is None:
        raise KeyError(args[0])
    return decode_value(stored, ch._serializer.loads)


def _d_get(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if not 1 <= len(args) <= 2 or kwargs:
        return WHOLE
    field = _field_for_read(args[0])
    stored = None if field is None else ch._look(obj_id, "get", field)
    if stored is None:
        return args[1] if len(args) > 1 else None
    return decode_value(stored, ch._serializer.loads)


def _d_contains(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 1 or kwargs:
        return WHOLE
    field = _field_for_read(args[0])
    return field is not None and int(ch._look(obj_id, "has", field)) == 1


def _d_len(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs:
        return WHOLE
    return int(ch._look(obj_id, "dlen"))


def _d_set(ch: RedisChannel, obj_id: int, pairs: dict[Any, Any]) -> Any:
    fields = [_field_for_write(key) for key in pairs]
    stored = _plain_values(ch, pairs.values())
    if stored is None:
        return WHOLE
    flat: list[bytes] = []
    for field, value in zip(fields, stored, strict=True):
        flat += (field, value)
    answer = ch._item("dict_set", obj_id, *flat)
    return answer if answer is WHOLE else None


def _d_setitem(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 2 or kwargs:
        return WHOLE
    return _d_set(ch, obj_id, {args[0]: args[1]})


def _d_update(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) > 1 or (args and type(args[0]) is not dict):
        return WHOLE  # (pairs, mappings and proxies: as a dict's update takes them)
    pairs = dict(args[0]) if args else {}
    pairs.update(kwargs)
    return _d_set(ch, obj_id, pairs)


def _d_pop(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if not 1 <= len(args) <= 2 or kwargs:
        return WHOLE
    field = _field_for_read(args[0])
    answer = None if field is None else ch._item("dict_pop", obj_id, field)
    if answer is WHOLE:
        return WHOLE
    if answer is None or _text(answer[0]) == "missing":
        if len(args) > 1:
            return args[1]
        raise KeyError(args[0])
    return decode_value(answer[2], ch._serializer.loads)


def _d_delitem(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 1 or kwargs:
        return WHOLE
    answer = _d_pop(ch, obj_id, args[0])
    return answer if answer is WHOLE else None


def _d_setdefault(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if not 1 <= len(args) <= 2 or kwargs:
        return WHOLE
    field = _field_for_write(args[0])
    stored = _plain_values(ch, args[1:] or (None,))
    if stored is None:
        return WHOLE
    answer = ch._item("dict_setdefault", obj_id, field, stored[0])
    if answer is WHOLE:
        return WHOLE
    return decode_value(answer[2], ch._serializer.loads)


def _d_increment(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if not 1 <= len(args) <= 3 or kwargs:
        return WHOLE
    defaults: tuple[Any, ...] = (1, 0)
    key, by, default = (*args, *defaults[len(args) - 1 :])
    if not (plain_int(by) and plain_int(default)):
        return WHOLE  # (floats, big ints, other types: as Python adds them)
    answer = ch._item("dict_increment", obj_id, _field_for_write(key), by, default)
    if answer is WHOLE:
        return WHOLE
    return int(answer[2])


def _l_index(index: Any) -> int | None:
    return int(index) if type(index) is int or type(index) is bool else None


def _l_getitem(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    index = _l_index(args[0]) if len(args) == 1 and not kwargs else None
    if index is None:
        return WHOLE  # (slices, and what a list's __getitem__ refuses)
    stored = ch._look(obj_id, "index", index)
    if stored is None:
        raise IndexError("list index out of range")
    return decode_value(stored, ch._serializer.loads)


def _l_setitem(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    index = _l_index(args[0]) if len(args) == 2 and not kwargs else None
    if index is None:
        return WHOLE
    stored = _plain_values(ch, args[1:])
    if stored is None:
        return WHOLE
    answer = ch._item("list_set", obj_id, index, stored[0])
    if answer is WHOLE:
        return WHOLE
    if _text(answer[0]) == "range":
        raise IndexError("list assignment index out of range")
    return None


def _l_len(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs:
        return WHOLE
    return int(ch._look(obj_id, "llen"))


def _l_push(ch: RedisChannel, obj_id: int, items: Any) -> Any:
    stored = _plain_values(ch, items)
    if stored is None:
        return WHOLE
    answer = ch._item("list_push", obj_id, *stored)
    return answer if answer is WHOLE else None


def _l_append(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 1 or kwargs:
        return WHOLE
    return _l_push(ch, obj_id, args)


def _l_extend(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    if len(args) != 1 or kwargs or type(args[0]) not in (list, tuple):
        return WHOLE
    if not args[0]:
        return None
    return _l_push(ch, obj_id, args[0])


def _l_pop(ch: RedisChannel, obj_id: int, *args: Any, **kwargs: Any) -> Any:
    index = _l_index(args[0]) if args else -1
    if len(args) > 1 or kwargs or index not in (0, -1):
        return WHOLE
    answer = ch._item("list_pop", obj_id, "l" if index == 0 else "r")
    if answer is WHOLE:
        return WHOLE
    if _text(answer[0]) == "empty":
        raise IndexError("pop from empty list")
    return decode_value(answer[2], ch._serializer.loads)


class _Noted(Exception):
    """A pipeline's first pass: the one-entry script of a call is noted, not run."""


#: the one-entry scripts that take any number of entries (sets, items to append)
_MERGEABLE: Final = frozenset({"dict_set", "list_push"})


def _merged(noted: list[tuple[int, _Batching, Any]]) -> list[Any]:
    """A batch's noted scripts as sent: ``(name, object id, arguments, changes, members)``,
    one-entry sets (and appends) of one object in a row made one script (its changes all
    described, each with its version for the watchers); ``members``: the noted calls it
    answers, by their place in ``noted``."""
    groups: list[Any] = []
    for at, (_index, batch, change) in enumerate(noted):
        name, obj_id, args = batch.script  # type: ignore[misc]
        last = groups[-1] if groups else None
        if last is not None and last[0] == name in _MERGEABLE and last[1] == obj_id:
            last[2] += args
            last[3].append(change)
            last[4].append(at)
            continue
        groups.append([name, obj_id, list(args), [change], [at]])
    return groups


class _Batching:
    """A call of a pipeline's batch, between its two passes (``_batch_entries``): the
    script it makes ``(name, object id, arguments)``, then its answer."""

    __slots__ = ("answer", "script")

    def __init__(self) -> None:
        self.script: tuple[str, int, tuple[Any, ...]] | None = None
        self.answer: Any = None


#: the one-entry changes a pipeline sends as their scripts (``_batch_entries``): each makes
#: exactly one script, whose answer gives its result (an increment may have to be made on the
#: whole value, and a read's answer could not be recovered after a lost connection)
_BATCHED_CHANGES: Final = frozenset(
    {
        ("dict", "__setitem__"),
        ("dict", "update"),
        ("dict", "pop"),
        ("dict", "__delitem__"),
        ("dict", "setdefault"),
        ("list", "__setitem__"),
        ("list", "append"),
        ("list", "extend"),
        ("list", "pop"),
    }
)

#: (kind, method) -> the call made on one entry (or ``WHOLE``: made on the whole instead)
_ITEM_CALLS: Final[dict[tuple[str, str], Callable[..., Any]]] = {
    ("dict", "__getitem__"): _d_getitem,
    ("dict", "get"): _d_get,
    ("dict", "__contains__"): _d_contains,
    ("dict", "__len__"): _d_len,
    ("dict", "__setitem__"): _d_setitem,
    ("dict", "update"): _d_update,
    ("dict", "pop"): _d_pop,
    ("dict", "__delitem__"): _d_delitem,
    ("dict", "setdefault"): _d_setdefault,
    ("dict", "increment"): _d_increment,
    ("list", "__getitem__"): _l_getitem,
    ("list", "__setitem__"): _l_setitem,
    ("list", "__len__"): _l_len,
    ("list", "append"): _l_append,
    ("list", "extend"): _l_extend,
    ("list", "pop"): _l_pop,
}


# -- primitives --------------------------------------------------------------------------------


def _gone(answer: Any, obj_id: int) -> None:
    if _text(answer[0]) == "gone":
        raise ObjectNotFound.of(obj_id)


def _raise_err(answer: Any) -> None:
    if _text(answer[0]) == "err":
        cls = {"RuntimeError": RuntimeError, "ValueError": ValueError}.get(_text(answer[1]))
        raise (cls or ProcshareError)(_text(answer[2]))


def _acquire_wait(blocking: Any, timeout: Any) -> float | None:
    """``acquire``'s arguments as ``threading`` checks them: seconds to wait, or ``None``."""
    wait = _objects._acquire_timeout(blocking, timeout)
    if not blocking:
        return 0.0
    return wait


def _acquire(
    ch: RedisChannel,
    obj_id: int,
    kind: str,
    owner: int,
    blocking: Any = True,
    timeout: Any = -1,
    depth: int = 1,
) -> bool:
    wait = _acquire_wait(blocking, timeout)
    answer = ch._wait_on(
        "acquire", obj_id, wait, "w", True, "timeout", (_owner_tag(owner),), (depth,)
    )
    status = _text(answer[0])
    if status == "ok":
        ch.fencing[(obj_id, owner)] = int(answer[1])
        held = ch.held
        held[(obj_id, owner)] = held.get((obj_id, owner), 0) + depth
        return True
    return False


def _release(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    key = (obj_id, owner)
    held = ch.held
    thinks = held.get(key, 0) > 0
    answer = ch._run("release", obj_id, ch.session, _owner_tag(owner), 1 if thinks else 0)
    _gone(answer, obj_id)
    if _text(answer[0]) == "lost":
        held.pop(key, None)
        raise LockLostError(
            f"this process no longer held {kind} {obj_id}: its Redis session expired (paused "
            "or cut off longer than the session's ttl) and the lock went to another; nothing "
            "was released"
        )
    _raise_err(answer)
    # (the holder released: the caller's own, or, a Lock or Semaphore released by another
    # than its taker, the taker's, which no longer holds it: if it is one of this process's
    # owners, it must not think so, nor a later owner that gets its id)
    sid, _, tag = _text(answer[1]).partition("|") if len(answer) > 1 else ("", "", "")
    if sid == ch.session and tag:
        key = (obj_id, int(tag))
    elif not thinks:
        return
    count = held.get(key, 0)
    if count <= 1:
        held.pop(key, None)
    else:
        held[key] = count - 1


def _state(ch: RedisChannel, obj_id: int) -> Any:
    answer = ch._run("state", obj_id)
    _gone(answer, obj_id)
    return answer


def _permits(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> int:
    return int(_state(ch, obj_id)[1] or 0)


def _locked(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> bool:
    return _permits(ch, obj_id, kind, owner) <= 0


def _is_owned(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> bool:
    holders = _pairs(_state(ch, obj_id)[2])
    return f"{ch.session}|{owner}".encode() in holders


def _pairs(flat: Any) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _at(obj_id: int) -> str:
    """The ``at 0x...`` of a repr (as the stdlib's, where it is the object's address)."""
    return f"0x{obj_id:x}"


def _lock_repr(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> str:
    """As ``repr()`` of the threading object: the stdlib's manager shows the same."""
    state = _state(ch, obj_id)
    permits = int(state[1] or 0)
    meta = _pairs(state[6])
    if kind in ("Lock", "RLock"):
        word = "locked" if permits <= 0 else "unlocked"
        if kind == "RLock":
            holders = _pairs(state[2])
            count = sum(int(c) for c in holders.values())
            holder = next(iter(holders), b"|0").split(b"|", 1)[1].decode()
            return f"<{word} _thread.RLock object owner={holder} count={count} at {_at(obj_id)}>"
        return f"<{word} _thread.lock object at {_at(obj_id)}>"
    if kind == "BoundedSemaphore":
        initial = int(meta.get(b"initial", b"0"))
        return f"<threading.BoundedSemaphore at {_at(obj_id)}: value={permits}/{initial}>"
    return f"<threading.Semaphore at {_at(obj_id)}: value={permits}>"


def _lock_id(ch: RedisChannel, cond_id: int) -> int:
    meta = _pairs(_state(ch, cond_id)[6])
    return int(meta[b"lock"])


def _cond_acquire(
    ch: RedisChannel, obj_id: int, kind: str, owner: int, blocking: Any = True, timeout: Any = -1
) -> bool:
    lock = ch.condition_locks.get(obj_id) or _lock_id(ch, obj_id)
    ch.condition_locks[obj_id] = lock
    return _acquire(ch, lock, ch._type_of(lock)[1], owner, blocking, timeout)


def _cond_release(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    lock = ch.condition_locks.get(obj_id) or _lock_id(ch, obj_id)
    ch.condition_locks[obj_id] = lock
    _release(ch, lock, ch._type_of(lock)[1], owner)


def _cond_wait(ch: RedisChannel, obj_id: int, kind: str, owner: int, timeout: Any = None) -> bool:
    wait = _objects._wait_timeout(timeout)
    lock = ch.condition_locks.get(obj_id) or _lock_id(ch, obj_id)
    ch.condition_locks[obj_id] = lock
    token = secrets.token_hex(8)
    answer = ch._run("cond_wait", obj_id, lock, ch.session, _owner_tag(owner), token)
    _gone(answer, obj_id)
    _raise_err(answer)
    depth = int(answer[1])
    key = (lock, owner)
    ch.held.pop(key, None)
    deadline = None if wait is None else time.monotonic() + wait
    notified = False
    try:
        while True:
            try:
                woken = ch._wait_token(token, deadline)
            except BaseException:  # (interrupted: a notify raced with it goes to another)
                with contextlib.suppress(Exception):
                    ch._withdraw(obj_id, "w", token, pass_on=True)
                raise
            if woken:
                notified = True
                break
            if deadline is not None and time.monotonic() >= deadline:
                notified = ch._withdraw(obj_id, "w", token, pass_on=False)
                break
    finally:
        # (as threading's: it always ends holding the lock again, notified or not)
        with ch._shielded():
            while not _acquire(ch, lock, ch._type_of(lock)[1], owner, True, -1, depth):
                pass
    return notified


def _cond_notify(ch: RedisChannel, obj_id: int, kind: str, owner: int, n: Any = 1) -> None:
    lock = ch.condition_locks.get(obj_id) or _lock_id(ch, obj_id)
    ch.condition_locks[obj_id] = lock
    answer = ch._run("cond_notify", obj_id, lock, ch.session, _owner_tag(owner), int(n))
    _gone(answer, obj_id)
    _raise_err(answer)


def _cond_notify_all(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    _cond_notify(ch, obj_id, kind, owner, -1)


def _cond_repr(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> str:
    state = _state(ch, obj_id)
    lock = _lock_id(ch, obj_id)
    inner = _lock_repr(ch, lock, ch._type_of(lock)[1], owner)
    return f"<Condition({inner}, {int(state[3])})>"


def _event_set(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    _gone(ch._run_changing("event_set", obj_id, [("set", (), None, None)]), obj_id)


def _event_clear(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    _gone(ch._run_changing("event_clear", obj_id, [("clear", (), None, None)]), obj_id)


def _event_is_set(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> bool:
    return bool(_state(ch, obj_id)[1] == b"1")


def _event_wait(ch: RedisChannel, obj_id: int, kind: str, owner: int, timeout: Any = None) -> bool:
    wait = _objects._wait_timeout(timeout)
    answer = ch._wait_on("event_wait", obj_id, wait, "w", False, "timeout")
    if _text(answer[0]) == "ok":
        return True
    return _event_is_set(ch, obj_id, kind, owner)


def _event_repr(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> str:
    word = "set" if _event_is_set(ch, obj_id, kind, owner) else "unset"
    return f"<threading.Event at {_at(obj_id)}: {word}>"


def _barrier_meta(ch: RedisChannel, obj_id: int) -> tuple[Any, dict[bytes, bytes]]:
    state = _state(ch, obj_id)
    return state, _pairs(state[6])


def _barrier_wait(ch: RedisChannel, obj_id: int, kind: str, owner: int, timeout: Any = None) -> int:
    _, meta = _barrier_meta(ch, obj_id)
    if timeout is None and meta.get(b"timeout"):
        timeout = float(meta[b"timeout"])
    wait = _objects._wait_timeout(timeout)
    token = secrets.token_hex(8)
    answer = ch._run("barrier_wait", obj_id, ch.session, token)
    _gone(answer, obj_id)
    status = _text(answer[0])
    if status == "broken":
        raise threading.BrokenBarrierError
    if status == "ok":
        return int(answer[1])
    if status == "last":
        index, gen = int(answer[1]), _text(answer[2])
        try:
            with _plain_proxies():  # (the action's proxies are sync ones, whoever waits)
                action = pickle.loads(meta[b"actionblob"])
            action()
        except BaseException:
            ch._run("barrier_break", obj_id, gen)
            raise
        if _text(ch._run("barrier_pass", obj_id, gen)[0]) != "ok":
            raise threading.BrokenBarrierError
        return index
    index, gen = int(answer[1]), _text(answer[2])
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            ch._wait_token(token, deadline)
        except BaseException:  # (interrupted: it leaves, the barrier is not broken)
            with contextlib.suppress(Exception):
                ch._run("barrier_leave", obj_id, gen, ch.session, token)
            raise
        fate = _text(ch._run("barrier_check", obj_id, gen)[0])
        if fate == "passed":
            return index
        if fate in ("broken", "gone"):
            raise threading.BrokenBarrierError
        if deadline is not None and time.monotonic() >= deadline:
            ch._run("barrier_break", obj_id, gen)  # (a timeout breaks it, as threading's)
            raise threading.BrokenBarrierError


@contextlib.contextmanager
def _plain_proxies() -> Any:
    """Proxies unpickled meanwhile are plain ones, even on an asyncio client's worker
    thread (``_async``: there a reply's proxies become async ones)."""
    was, incoming.channel = incoming.channel, None
    try:
        yield
    finally:
        incoming.channel = was


def _barrier_abort(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    _gone(ch._run("barrier_break", obj_id, ""), obj_id)


def _barrier_reset(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    _gone(ch._run("barrier_reset", obj_id), obj_id)


def _barrier_attribute(ch: RedisChannel, obj_id: int, kind: str, owner: int, name: Any) -> Any:
    state, meta = _barrier_meta(ch, obj_id)
    fields = _pairs(state[2]) if state[2] else {}
    if name == "parties":
        return int(meta[b"parties"])
    if name == "n_waiting":
        return int(fields.get(b"count", b"0"))
    if name == "broken":
        return fields.get(b"broken") == b"1"
    raise AttributeError(f"'Barrier' object has no attribute {name!r}")


def _barrier_repr(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> str:
    if _barrier_attribute(ch, obj_id, kind, owner, "broken"):
        return f"<threading.Barrier at {_at(obj_id)}: broken>"
    waiting = _barrier_attribute(ch, obj_id, kind, owner, "n_waiting")
    parties = _barrier_attribute(ch, obj_id, kind, owner, "parties")
    return f"<threading.Barrier at {_at(obj_id)}: waiters={waiting}/{parties}>"


def _put(
    ch: RedisChannel,
    obj_id: int,
    kind: str,
    owner: int,
    item: Any,
    block: Any = True,
    timeout: Any = None,
) -> None:
    import queue

    wait = _objects._queue_timeout(block, timeout) if block else 0.0
    blob = ch._serializer.dumps(item)
    answer = ch._wait_on("put", obj_id, wait, "p", True, "full", after=(blob,))
    if _text(answer[0]) in ("full", "wait"):
        raise queue.Full


def _put_nowait(ch: RedisChannel, obj_id: int, kind: str, owner: int, item: Any) -> None:
    _put(ch, obj_id, kind, owner, item, False)


def _get(
    ch: RedisChannel, obj_id: int, kind: str, owner: int, block: Any = True, timeout: Any = None
) -> Any:
    import queue

    wait = _objects._queue_timeout(block, timeout) if block else 0.0
    answer = ch._wait_on("get", obj_id, wait, "w", True, "empty")
    if _text(answer[0]) in ("empty", "wait"):
        raise queue.Empty
    item = ch._serializer.loads(answer[1])
    caller: Caller | None = getattr(ch._calling, "caller", None)
    if caller is not None:  # (given back if its asyncio caller is gone when it ends)
        caller.taken.append((obj_id, answer[2], answer[1]))
    if _text(answer[3]) == "1":  # (a JoinableQueue's: on its way until its task_done)
        ch.undone.setdefault(obj_id, collections.deque()).append(answer[2])
    else:
        ch._delivered(answer[2])  # (it arrived: no longer on its way)
    return item


def _get_nowait(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> Any:
    return _get(ch, obj_id, kind, owner, False)


def _qsize(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> int:
    return int(_state(ch, obj_id)[4])


def _empty(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> bool:
    return _qsize(ch, obj_id, kind, owner) == 0


def _full(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> bool:
    state = _state(ch, obj_id)
    maxsize = int(_pairs(state[6]).get(b"maxsize", b"0"))
    return 0 < maxsize <= int(state[4])


def _task_done(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    undone = ch.undone.get(obj_id)
    tag = undone.popleft() if undone else b""  # (the oldest item this process took)
    answer = ch._run("task_done", obj_id, ch.session, tag)
    if tag and _text(answer[0]) != "ok":
        undone.appendleft(tag)  # type: ignore[union-attr]  # (not done after all)
    _gone(answer, obj_id)
    _raise_err(answer)


def _join(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> None:
    ch._wait_on("join", obj_id, None, "j", False, "ok")


def _queue_repr(ch: RedisChannel, obj_id: int, kind: str, owner: int) -> str:
    return f"<queue.Queue object at {_at(obj_id)}>"


_Call = Callable[..., Any]

#: (kind, method) -> what does it; ``"*"`` for any kind of lock-like object
_PRIMITIVE_CALLS: Final[dict[tuple[str, str], _Call]] = {
    **{
        (k, m): fn
        for k in ("Lock", "RLock", "Semaphore", "BoundedSemaphore")
        for m, fn in dict[str, _Call](
            {
                "acquire": _acquire,
                "release": _release,
                "__repr__": _lock_repr,
                "__str__": _lock_repr,
            }
        ).items()
    },
    ("Lock", "locked"): _locked,
    ("RLock", "locked"): _locked,
    ("RLock", "_is_owned"): _is_owned,
    ("Semaphore", "get_value"): _permits,
    ("BoundedSemaphore", "get_value"): _permits,
    ("Condition", "acquire"): _cond_acquire,
    ("Condition", "release"): _cond_release,
    ("Condition", "wait"): _cond_wait,
    ("Condition", "notify"): _cond_notify,
    ("Condition", "notify_all"): _cond_notify_all,
    ("Condition", "__repr__"): _cond_repr,
    ("Condition", "__str__"): _cond_repr,
    ("Event", "set"): _event_set,
    ("Event", "clear"): _event_clear,
    ("Event", "is_set"): _event_is_set,
    ("Event", "wait"): _event_wait,
    ("Event", "__repr__"): _event_repr,
    ("Event", "__str__"): _event_repr,
    ("Barrier", "wait"): _barrier_wait,
    ("Barrier", "abort"): _barrier_abort,
    ("Barrier", "reset"): _barrier_reset,
    ("Barrier", "__getattribute__"): _barrier_attribute,
    ("Barrier", "__repr__"): _barrier_repr,
    ("Barrier", "__str__"): _barrier_repr,
    **{
        (k, m): fn
        for k in ("Queue", "JoinableQueue")
        for m, fn in dict[str, _Call](
            {
                "put": _put,
                "put_nowait": _put_nowait,
                "get": _get,
                "get_nowait": _get_nowait,
                "qsize": _qsize,
                "empty": _empty,
                "full": _full,
                "task_done": _task_done,
                "join": _join,
                "__repr__": _queue_repr,
                "__str__": _queue_repr,
            }
        ).items()
    },
}


# -- controls ----------------------------------------------------------------------------------


def _ping(ch: RedisChannel) -> str:
    ch._client.ping()
    return "pong"


def _names(ch: RedisChannel) -> dict[str, str]:
    p = ch._prefix
    names = ch._client.hgetall(p + "names")
    if not names:
        return {}
    ids = list(names.values())
    typeids = ch._client.hmget(p + "types", ids)
    return {
        _text(name): _text(typeid)
        for name, typeid in zip(names, typeids, strict=True)
        if typeid is not None
    }


def _delete(ch: RedisChannel, name: str) -> None:
    if not int(ch._run("unname", name, ch._delay_ms)):
        raise KeyError(name)


def _named(ch: RedisChannel, name: str, typeid: str, args: Any, kwargs: Any) -> Any:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a name is a non-empty str, not {name!r}")
    return ch._create(typeid, tuple(args or ()), dict(kwargs or {}), name)


def _number_of_objects(ch: RedisChannel) -> int:
    return int(ch._client.hlen(ch._prefix + "types"))


#: the most objects ``stats()`` describes one by one
STATS_OBJECTS: Final = 1000


def _stats(ch: RedisChannel) -> dict[str, Any]:
    """What the namespace holds, in the shape of procshare's server's ``stats()``: each object
    (its state: who holds, who waits, how many items), the live sessions."""
    p = ch._prefix
    now_ms = int(time.time() * 1000)
    names = {int(i): _text(n) for n, i in ch._client.hgetall(p + "names").items()}
    total, rows = ch._run("inspect", STATS_OBJECTS)
    objects = [_describe(row, names) for row in rows]
    objects.sort(key=lambda o: o["id"])
    live: Any = ch._client.zrangebyscore(p + "sessions", now_ms, "+inf", withscores=True)
    pipe = ch._client.pipeline(transaction=False)
    sids = [_text(sid) for sid, _ in live]
    for sid in sids:
        pipe.hmget(p + "si:" + sid, "who", "since")
        pipe.scard(p + "sr:" + sid)
        pipe.scard(p + "sh:" + sid)
        pipe.scard(p + "sw:" + sid)
    found = pipe.execute()
    waiting = collections.Counter(
        w["session"] for o in objects for w in _waiting_in(o.get("state") or {})
    )
    sessions = []
    for i, (sid, (_, expiry)) in enumerate(zip(sids, live, strict=True)):
        (who, since), refs, holds, watches = found[4 * i : 4 * i + 4]
        sessions.append(
            {
                **_who(sid),
                "id": sid,
                "name": _text(who) if who else "",
                "refs": int(refs),
                "holds": int(holds),
                "waiting": waiting[sid],
                "calls": None,  # (Redis counts no calls per process)
                "subscriptions": int(watches),
                "age": max(0.0, (now_ms - float(since)) / 1000) if since else 0.0,
                "expires_in": max(0.0, (float(expiry) - now_ms) / 1000),
            }
        )
    names_of = {s["id"]: s["name"] for s in sessions}
    for o in objects:  # (who each holder and waiter is, as procshare's server says it)
        state = o.get("state") or {}
        for entry in [state.get("holder"), *state.get("holders", ()), *_waiting_in(state)]:
            if entry:
                entry["name"] = names_of.get(entry["session"], "")
    return {
        "backend": "redis",
        "url": ch.url.canonical,
        "objects": objects,
        "objects_total": int(total),
        "names": _names(ch),
        "sessions": sessions,
        "counters": {},
    }


def _waiting_in(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The waiters an object's ``stats()`` state lists (getters, putters, joiners...)."""
    return [w for key in ("waiters", "getters", "putters", "joiners") for w in state.get(key, ())]


def _who(entry: str) -> dict[str, Any]:
    """The session and process of a holder's or waiter's entry (``host:pid:tag|...``)."""
    sid = entry.split("|", 1)[0]
    host, _, pid_text = sid.rpartition(":")[0].rpartition(":")
    pid = int(pid_text) if pid_text.isdigit() else 0
    return {"session": sid, "pid": pid, "host": host}


def _describe(row: Any, names: dict[int, str]) -> dict[str, Any]:
    """One object of ``stats()`` from the ``inspect`` script's row."""
    obj_id, typeid = int(row[0]), _text(row[1])
    meta = {  # (a Barrier's pickled action is not text)
        _text(k): _text(v) for k, v in _pairs(row[2]).items() if k != b"actionblob"
    }
    kind = meta.get("kind", typeid)
    d = row[4] or b""  # (a container's is its stored value: not text)
    holders = {_text(k): int(v) for k, v in _pairs(row[5]).items()}
    waiters = [_who(_text(w)) for w in row[6]]
    described: dict[str, Any] = {
        "id": obj_id,
        "name": names.get(obj_id),
        "typeid": typeid,
        "refs": int(row[13]),
        "version": int(row[3]),
        "watchers": sum(int(n) for n in row[14]),
    }
    if kind in ("Lock", "RLock"):
        holder = next(iter(holders.items()), None)
        described["state"] = {
            "locked": bool(holders),
            "holder": None
            if holder is None
            else {**_who(holder[0]), "owner": int(holder[0].split("|", 1)[1])},
            "count": holder[1] if holder else 0,
            "waiters": waiters,
        }
    elif kind in ("Semaphore", "BoundedSemaphore"):
        described["state"] = {
            "value": int(d or 0),
            "holders": [
                {**_who(h), "owner": int(h.split("|", 1)[1]), "slots": n}
                for h, n in holders.items()
            ],
            "waiters": waiters,
        }
    elif kind == "Event":
        described["state"] = {"set": d in (b"1", "1"), "waiters": waiters}
    elif kind == "Condition":
        described["state"] = {"lock": int(meta.get("lock", 0)), "waiters": waiters}
    elif kind == "Barrier":
        fields = {_text(k): _text(v) for k, v in _pairs(row[5]).items()}
        described["state"] = {
            "parties": int(meta.get("parties", 0)),
            "broken": fields.get("broken") == "1",
            "n_waiting": int(fields.get("count", 0)),
            "waiters": waiters,
        }
    elif kind in ("Queue", "JoinableQueue"):
        described["state"] = {
            "size": int(row[9]),
            "maxsize": int(meta.get("maxsize", 0)),
            "redeliver": meta.get("redeliver") == "1",
            "unfinished": int(row[10]),
            "getters": waiters,
            "putters": [_who(_text(w)) for w in row[7]],
            "joiners": [_who(_text(w)) for w in row[8]],
        }
    elif kind == "dict":
        described["len"] = int(row[11])
    elif kind == "list":
        described["len"] = int(row[12])
    return described


def _debug_info(ch: RedisChannel) -> str:
    lines = [
        f"{o['id']}: refcount={o['refs']} typeid={o['typeid']!r}" for o in _stats(ch)["objects"]
    ]
    return "\n".join(lines)


def _get_methods(ch: RedisChannel, obj_id: int) -> list[str]:
    return list(KINDS[ch._type_of(obj_id)[1]].exposed)


def _shutdown(ch: RedisChannel) -> None:
    raise UnsupportedError("a Redis server is not stopped by its clients")


_CONTROLS: Final[dict[str, Callable[..., Any]]] = {
    "ping": _ping,
    "names": _names,
    "delete": _delete,
    "named": _named,
    "number_of_objects": _number_of_objects,
    "stats": _stats,
    "debug_info": _debug_info,
    "get_methods": _get_methods,
    "shutdown": _shutdown,
}


# -- helpers -----------------------------------------------------------------------------------


def _not_exposed(typeid: str, method: str) -> Exception:
    from .._errors import MethodNotExposed

    return MethodNotExposed(f"method {method!r} of {typeid!r} object is not exposed")


def _registry_for(address: Address) -> Any:
    from .._context import managers_by_address
    from .._manager import SyncManager

    manager = managers_by_address.get(address)
    return getattr(manager, "_registry", None) or SyncManager._registry


#: the types of values that hold no proxy (what most values are: checked first)
_SCALARS: Final = frozenset({int, float, str, bytes, bool, type(None)})


def _shared_inside(plain: Any, address: Address) -> set[int]:
    """The ids of the shared objects of this namespace whose proxies are in ``plain`` (in
    its dicts, lists, tuples, sets and Namespaces, however deep): the container keeps them
    alive."""
    from .._client._proxies import BaseProxy

    found: set[int] = set()
    stack = [plain]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseProxy):
            if item._token.address == address:
                found.add(int(item._id))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, _objects.Namespace):
            stack.extend(vars(item).values())
    return found


def _replies_can_be_skipped(conn: Any) -> bool:
    """Whether the Redis behind ``conn`` takes ``CLIENT REPLY SKIP`` (a managed one may refuse
    ``CLIENT``): asked once, leaving no reply unread either way."""
    conn.send_packed_command(
        conn.pack_commands([("CLIENT", "REPLY", "SKIP"), ("PING",), ("ECHO", "procshare")])
    )
    import redis

    try:
        first = conn.read_response(disable_decoding=True)
    except redis.ResponseError:  # refused: PING's and ECHO's answers follow
        conn.read_response(disable_decoding=True)
        conn.read_response(disable_decoding=True)
        return False
    return bool(first == b"procshare")


def _lock_of(lock: Any, address: Address) -> tuple[int, str]:
    token = getattr(lock, "_token", None)
    if token is None or token.address != address:
        raise TypeError("a Condition on Redis needs a Lock or RLock of the same namespace")
    return int(token.id), str(token.typeid)


# -- one channel per process and namespace -----------------------------------------------------

_channels: dict[tuple[str, int], RedisChannel] = {}
_lock = threading.Lock()


def get_redis_channel(address: str, authkey: bytes, serializer: str = "pickle") -> RedisChannel:
    """This process's channel to the Redis namespace at ``address``."""
    pid = os.getpid()
    key = (address, pid)
    channel = _channels.get(key)
    if channel is not None and not channel._closed:
        return channel
    with _lock:
        channel = _channels.get(key)
        if channel is None or channel._closed:
            for other in [k for k in _channels if k[1] != pid]:
                _channels.pop(other, None)  # (a parent's, inherited through fork)
            channel = RedisChannel(address, authkey, serializer)
            _channels[key] = channel
    return channel


def forget_redis_channels(address: str, authkey: bytes, serializer: str, drop: bool) -> None:
    """Close and forget this process's channel to ``address``; ``drop``: delete the whole
    namespace (connecting to do so if this process has no channel to it)."""
    with _lock:
        channel = _channels.pop((address, os.getpid()), None)
    if channel is None and drop:
        channel = RedisChannel(address, authkey, serializer)
    if channel is not None:
        channel.close(drop=drop)


def close_redis_channels() -> None:
    """Close this process's channels (at exit: its session ends at once)."""
    with _lock:
        channels = [c for (_, pid), c in _channels.items() if pid == os.getpid()]
        _channels.clear()
    for channel in channels:
        channel.close()
