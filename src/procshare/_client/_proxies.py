"""Proxies: the objects user code holds in place of shared objects.

A proxy names its referent by a :class:`Token` and forwards method calls to the server over this
process's channel. Same constructor, ``_callmethod``, pickling and ``str``/``repr`` as
``multiprocessing.managers.BaseProxy``; the typed proxies (``DictProxy[K, V]``, ``ListProxy[T]``,
...) are ordinary classes with ordinary methods, checked against the table of kinds.

References (how the server knows an object is still wanted): a proxy *owns* one server-side
reference in the process where it was made. A proxy that arrives in a reply owns the reference
the server counted while encoding that reply; one unpickled from elsewhere (a child's arguments,
a multiprocessing.Queue) queues a ``Retain``; one inherited through fork retains on first use in
the child. When a proxy is garbage collected its reference is released (queued, sent with the
next request). A proxy rebuilt *inside the server* that owns its referent (a managed list stored
in a managed dict) is an internal reference instead, counted by the server directly.

Semantics are the standard library's, iteration included (a dict proxy iterates through a
live server-side iterator, a list proxy through ``__getitem__``: ``keys()``, ``lst[:]`` and
``copy()`` fetch everything in one round trip; read whole again, a large object comes back as
what changed since, see ``_snapshots``). Deliberate differences:
* ``update``/``extend``/``+=`` with another proxy as argument send that proxy's value;
* ``AutoProxy`` classes are built with closures, never ``exec``.
"""

from __future__ import annotations

import collections.abc
import copyreg
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from .._context import incoming, managers_by_address, server_hook
from .._errors import ObjectNotFound, ProcshareError, WaitTimeout
from .._kinds import KINDS, REPLAYABLE_KINDS
from .._leases import LEASABLE, LEASING_LOCKS, leasable_args
from .._protocol import LeaseAcquire, LeasedRead, ReadSince
from .._token import Token
from ._backend import Backend
from ._cache import Replica, replay
from ._channel import PID_CELL, current_pid, get_channel, refqueue_for
from ._leases import DECLINED, MISS, UNLEASED, Read
from ._pipeline import Pipeline
from ._push import Watch
from ._scans import SCAN_AFTER, SCAN_MIN, Scan
from ._snapshots import MAX_ITEMS, OFF, PLAIN, Held, plan, settle

__all__ = [
    "AcquirerProxy",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "MakeProxyType",
    "NamespaceProxy",
    "PoolProxy",
    "QueueProxy",
    "RebuildProxy",
    "SetProxy",
    "ValueProxy",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_get_ident = threading.get_ident


def _authkey_default(manager: Any) -> bytes:
    if manager is not None:
        return bytes(manager._authkey)
    import multiprocessing

    return bytes(multiprocessing.current_process().authkey)


class BaseProxy:
    """A proxy for a shared object living in a procshare server.

    Args (the standard library's, in its order):
        token: identifies the referent.
        serializer: ``"pickle"``.
        manager: the manager that created it; the proxy keeps it (and so its server) alive.
        authkey: the server's authkey (default: the manager's, or this process's).
        exposed: the method names the referent exposes (used by ``AutoProxy``).
        incref: take a reference for this process (``False`` when the caller already owns one).
        manager_owned: the proxy lives inside the server that owns the referent.
    """

    _exposed_: tuple[str, ...] = ()
    _method_to_typeid_: dict[str, str] | None = None
    _isauto = False
    #: sent as its token by the data serializers (``_data``)
    _shares_as_proxy_ = True
    #: the built-in kind this proxy class stands for (enables ``cache()`` and replays)
    _kind_: str | None = None
    #: whether its reads may come with leases (``_leases``); off once the server declined
    _leasing: bool = True
    #: the kind whose reads it may lease, where that is not ``_kind_`` (an Event's ``is_set``)
    _lease_kind_: str | None = None
    _replica: Replica | None = None
    #: the last large whole-object read, for re-reading it only after a change (_snapshots)
    _held: Held | None = None
    #: the methods whose reads may be leased (from ``_kind_`` or ``_lease_kind_``)
    _leasable_: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls._kind_ or cls._lease_kind_
        cls._leasable_ = LEASABLE.get(kind, frozenset()) if kind else frozenset()

    def __init__(
        self,
        token: Token,
        serializer: str = "pickle",
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Iterable[str] | None = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        self._ref_pid = 0
        self._owned_by_manager = manager_owned
        #: inside the server: the shared object holding this internal reference (see _core)
        self._held_by: int | None = None
        self._token = token
        self._id = token.id
        self._serializer = serializer
        self._manager = manager if manager is not None else managers_by_address.get(token.address)
        self._authkey = bytes(authkey) if authkey is not None else _authkey_default(self._manager)
        self._ch: Backend | None = None
        self._instance: str | None = None
        if exposed is not None and self._isauto:
            self._exposed_ = tuple(exposed)
        if incref and not manager_owned:
            refqueue_for(token.address).retain(token.id)
            self._ref_pid = current_pid()

    # -- calling ------------------------------------------------------------------------------

    def _channel(self) -> Backend:
        channel = self._ch
        if channel is None or channel.usable_pid != current_pid():
            channel = self._bind()
        return channel

    def _bind(self) -> Backend:
        token = self._token
        if self._owned_by_manager:
            hook = server_hook(token.address)
            if hook is not None and hook.on_loop_thread():
                raise ProcshareError(
                    "a shared object cannot be called from the server's own loop thread"
                )
        channel = get_channel(token.address, self._authkey, self._serializer)
        instance = channel.server_info.get("instance")
        if self._instance is None:
            self._instance = instance
        elif instance != self._instance:
            raise ObjectNotFound(
                f"the server at {token.address!r} was restarted: shared object {token.id} "
                "no longer exists"
            )
        if not self._owned_by_manager and self._ref_pid != current_pid():
            channel.refs.retain(token.id)  # inherited through fork: take our own reference
            self._ref_pid = current_pid()
        self._ch = channel
        return channel

    def _callmethod(
        self, methodname: str, args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """Call ``methodname`` on the referent and return a copy of the result.

        The referent's exceptions are raised as themselves; a result that is a shared object
        (``method_to_typeid``) comes back as a proxy.
        """
        replica = self._replica
        if replica is not None and replica.pid == current_pid():
            if methodname in replica.writes:  # every write, so the writer reads it back
                return self._write_through(replica, methodname, tuple(args), kwds or None)
            if not kwds and methodname in replica.reads:
                return replica.read(methodname, tuple(args))
        channel = self._ch
        if channel is None or channel.usable_pid != PID_CELL[0]:
            channel = self._bind()
        if type(args) is not tuple:
            args = tuple(args)
        if (
            methodname in self._leasable_
            and (leases := channel.leases) is not None
            and not kwds
            and self._leasing
            and leasable_args(args)
        ):
            value = leases.read(self._id, methodname, args)
            if value is MISS:
                # Read with a lease: the same read answers locally until the object changes.
                reply = channel.request(LeasedRead(0, self._id, methodname, args, _get_ident()))
                value = leases.took((self._id, methodname, args), reply)
                if value is not DECLINED:
                    return value
                self._leasing = False  # (not the kind it looks like): read plainly
            elif value is not UNLEASED:
                return value
        return channel.call(self._id, methodname, args, kwds or None, _get_ident())

    def _callmethod_versioned(
        self,
        methodname: str,
        args: tuple[Any, ...] = (),
        kwds: dict[str, Any] | None = None,
    ) -> Any:
        """``_callmethod``, returning ``(result, version of the object after the call)``."""
        channel = self._ch
        if channel is None or channel.usable_pid != current_pid():
            channel = self._bind()
        return channel.call(self._id, methodname, args, kwds, _get_ident(), versioned=True)

    def _read_whole(self, methodname: str) -> Any:
        """``_callmethod(methodname)`` for a read returning the whole object (``copy()``,
        ``items()``, ...): a large object that stays put is not sent again (``_snapshots``)."""
        held = self._held
        if held is OFF or (self._replica is not None and self._replica.pid == current_pid()):
            return self._callmethod(methodname)
        channel = self._ch
        if channel is None or channel.usable_pid != current_pid():
            channel = self._bind()
        read, same, known = plan(held, methodname, self._kind_)
        reply = channel.request(ReadSince(0, self._id, read, known, _get_ident()))
        self._held, value = settle(held, same, read, self._kind_, known, reply, methodname)
        return self._callmethod(methodname) if value is PLAIN else value

    def _write_through(
        self,
        replica: Replica,
        methodname: str,
        args: tuple[Any, ...],
        kwds: dict[str, Any] | None,
    ) -> Any:
        result, version = self._callmethod_versioned(methodname, args, kwds)
        replica.after_write(methodname, args, kwds, result, version)
        return result

    # -- push: watching, waiting, caching -------------------------------------------------------

    def watch(
        self, timeout: float | None = None, *, maxsize: int = 10_000, snapshot: bool = False
    ) -> Watch:
        """Subscribe to this object's changes: ``for change in proxy.watch(): ...``.

        Yields :class:`~procshare.Change` events (``op``, ``args``, ``version``, ...) in the
        order the server applied them, none missed: a consumer too slow for ``maxsize`` queued
        changes gets an ``"overflow"`` change saying how many it missed. With ``timeout``,
        iteration ends after that many seconds without a change. Use as a context manager to
        unsubscribe. Watchable: dict, list, set, Namespace, Value, Array, Event, and registered
        classes that opt in (``register(..., watch=[...])``).

        Raises:
            MethodNotExposed: objects of this type cannot be watched.
        """
        return Watch(self, timeout=timeout, maxsize=maxsize, snapshot=snapshot)

    def wait_until(self, predicate: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """Block until ``predicate(value)`` is true for this object's value; return the value.

        No polling: the value is followed through its change events (replayed locally for the
        built-in containers, fetched again after changes for other types).

        Raises:
            TimeoutError: the predicate did not become true within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with Watch(self, snapshot=True) as watch:
            value = watch.value
            while not predicate(value):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"the condition did not hold within {timeout} s")
                changes = [watch.get(remaining)]
                while (more := watch.get_nowait()) is not None:
                    changes.append(more)
                kind = self._kind_
                if kind is None or not all(replay(kind, value, c) for c in changes):
                    value = self._getvalue()
            return value

    def cache(self, enabled: bool = True) -> Any:
        """Serve this proxy's pure reads from a local replica kept current by the server.

        See ``procshare._client._cache`` for the rules (a writer reads its own writes; others'
        writes show as soon as their change event arrives). Returns the proxy, for chaining:
        ``d = manager.dict().cache()``. ``cache(False)`` goes back to asking the server.

        Raises:
            TypeError: this kind of object cannot be cached.
        """
        if enabled:
            if self._replica is None or self._replica.pid != current_pid():
                if self._kind_ is None:
                    raise TypeError(f"{type(self).__name__} proxies cannot be cached")
                self._replica = Replica(self, self._kind_)
        elif self._replica is not None:
            self._replica.close()
            self._replica = None
        return self

    def pipeline(self, batch_size: int = 10_000) -> Pipeline:
        """Queue calls to this object and send them together: ``with d.pipeline() as pd:``.

        ``pd[k] = v``, ``pd.append(x)``, ... are queued; each returns a ``Pending`` whose
        ``value`` is known after the block. See :class:`~procshare.Pipeline`.
        """
        return Pipeline(batch_size=batch_size, proxy=self)

    @property
    def cached(self) -> bool:
        """Whether reads are served from a local replica in this process."""
        return self._replica is not None and self._replica.pid == current_pid()

    def _callblocking(
        self, methodname: str, args: tuple[Any, ...] = (), wait: float | None = None
    ) -> Any:
        """``_callmethod`` for a method that may wait on the server (lock, queue, event) for
        up to ``wait`` seconds (``None``: for ever; a call timeout counts from then)."""
        channel = self._ch
        if channel is None or channel.usable_pid != current_pid():
            channel = self._bind()
        return channel.call(self._id, methodname, args, None, _get_ident(), True, wait=wait)

    def _posted(self, method: str, args: tuple[Any, ...], blocking: bool = False) -> bool:
        """Make a call that may be posted (``Kind.postable``) without waiting for its answer,
        where this process may (``Backend.post``): ``True`` once it was made (posted, or made
        as the call that asks the server whether its next ones may be); ``False``: make it
        plainly.

        A process asks once it made ``_ASK_AFTER`` such calls plainly: an object posted to is
        leased to nobody (``_server/_core``), and one written now and then keeps its leases.

        A write to an object this process read under the lock it holds (a read-modify-write
        under a lock, whose next grants bring that read, leased: ``LeaseBook.granted``): a
        Value's set is asked for and posted *bound* to the lock (``BOUND``: only while this
        process holds it, which keeps those grants' leases sound); any other is made plainly,
        and a process that posted to it unbound stops (``withdraw``): an object posted to is
        leased to nobody, and each read would be a round trip again (the locked counter of 4
        processes: 0.9-1.2x the stdlib's throughput with unbound posts, 1.6x bound).
        """
        channel = self._ch
        if channel is None or channel.usable_pid != PID_CELL[0]:
            channel = self._bind()
        if not channel.can_post or self._replica is not None:
            return False
        key = (self._id, method)
        registered = channel.registered
        made = registered.get(key, 0)
        leases = channel.leases
        under = leases is not None and leases.recording and leases.read_under_lock(self._id)
        if made is True:
            if under and self._id not in channel.bound:
                channel.withdraw(self._id)
                return False
            return channel.post(self._id, method, args, _get_ident())
        if made is False:
            return False
        if under and self._kind_ != "Value":
            return False  # (only a Value's posts may be bound to the lock: ``Entry.bound``)
        if made < _ASK_AFTER:
            registered[key] = made + 1
            return False
        channel.call(self._id, method, args, None, _get_ident(), blocking, posting=True)
        return True

    def _getvalue(self) -> Any:
        """A copy of the referent."""
        if self._kind_ in REPLAYABLE_KINDS:  # (an Array's value is an array: read plainly)
            return self._read_whole("#GETVALUE")
        return self._callmethod("#GETVALUE")

    def _incref(self) -> None:
        """Take one more reference for this process (stdlib compatibility)."""
        refqueue_for(self._token.address).retain(self._id)

    # -- identity, printing, pickling ---------------------------------------------------------

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._token.typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        """The referent's ``repr`` (or a fall-back if that fails), as in the standard library."""
        try:
            return str(self._callmethod("__repr__"))
        except Exception:  # noqa: BLE001 - printing must not raise
            return repr(self)[:-1] + "; '__str__()' failed>"

    def __reduce__(self) -> tuple[Any, ...]:
        kwds: dict[str, Any] = {}
        hook = server_hook(self._token.address)
        if hook is not None and hook.lend(self._id, self):
            kwds["owned"] = True  # encoded into a reply: the receiving session got a reference
        from multiprocessing.context import get_spawning_popen

        if get_spawning_popen() is not None:
            kwds["authkey"] = self._authkey  # a spawned child has no other way to know it
        if self._isauto:
            kwds["exposed"] = self._exposed_
            return (RebuildProxy, (AutoProxy, self._token, self._serializer, kwds))
        return (RebuildProxy, (type(self), self._token, self._serializer, kwds))

    def __deepcopy__(self, memo: Any) -> Any:
        return self._getvalue()

    def __del__(self) -> None:
        try:
            if self._owned_by_manager:
                hook = server_hook(self._token.address)
                if hook is not None:
                    hook.disown(self._id, self._held_by)
            elif self._ref_pid and self._ref_pid == current_pid():
                channel = self._ch
                if channel is not None and channel.pid == self._ref_pid:
                    channel.release_soon(self._id)
                else:
                    refqueue_for(self._token.address).release(self._id)
        except Exception:  # noqa: BLE001,S110 - finalizers run at odd times (interpreter exit)
            pass


def proxy_type_for(token: Token, name: str) -> Callable[..., Any]:
    """The proxy class to rebuild a shared object received as data (``_data``): the one its
    manager registered for the typeid, else procshare's proxy class of that name, else
    ``AutoProxy``. (Never a class the sender names from elsewhere: data runs no code.)"""
    manager = managers_by_address.get(token.address)
    registry = getattr(manager, "_registry", None) or {}
    registration = registry.get(token.typeid)
    if registration is not None and registration.proxytype is not None:
        return registration.proxytype  # type: ignore[no-any-return]
    cls = _OWN_PROXY_TYPES.get(name)
    return cls if cls is not None else AutoProxy


def RebuildProxy(  # noqa: N802 - the stdlib's name, used in pickles
    func: Callable[..., Any], token: Token, serializer: str, kwds: dict[str, Any]
) -> Any:
    """Rebuild a proxy when unpickling (the standard library's signature).

    Inside the server owning the referent it becomes an internal reference; from a reply it
    owns the reference the server counted for this connection; anywhere else it takes one.
    """
    kwds = dict(kwds)
    owned = kwds.pop("owned", False)
    hook = server_hook(token.address)
    if hook is not None and hook.on_loop_thread():
        hook.adopt(token.id)
        kwds.pop("incref", None)
        proxy = func(token, serializer, incref=False, manager_owned=True, **kwds)
        hook.adopted(proxy)
        return proxy
    channel = incoming.channel
    if channel is not None and hasattr(channel, "rebuild_proxy"):
        return channel.rebuild_proxy(func, token, serializer, kwds, owned)  # an asyncio client
    if channel is not None:
        token.address = channel.address  # as this process reaches the server
        kwds.setdefault("authkey", channel.authkey)
        if owned:
            kwds.pop("incref", None)
            proxy = func(token, serializer, incref=False, **kwds)
            proxy._ref_pid = current_pid()
            return proxy
    import multiprocessing

    inheriting = getattr(multiprocessing.current_process(), "_inheriting", False)
    incref = kwds.pop("incref", True) or inheriting
    return func(token, serializer, incref=incref, **kwds)


#: calls of one method on one object a process makes plainly before it asks to post them
_ASK_AFTER: Final = 3


def _hashable(key: Any) -> bool:
    """Whether ``key`` can key a dict (the server would fail to set it: no post then)."""
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _method(name: str) -> Callable[..., Any]:
    def method(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(name, args, kwds)

    method.__name__ = name
    method.__qualname__ = name
    return method


_proxy_types: dict[tuple[str, tuple[str, ...]], type[BaseProxy]] = {}


class _MadeProxyType(type):
    """The class of ``MakeProxyType``'s classes. They live in no module, so they pickle as
    the call that makes them: a server can name one in a reply (a registered
    ``proxytype``), and the other side makes the same class again."""


def _reduce_made_proxy_type(cls: type) -> Any:
    made = cls.__dict__.get("_made_")
    if made is None:  # a subclass defined in a module: by name, as any class
        return cls.__qualname__
    return (MakeProxyType, made)


copyreg.pickle(_MadeProxyType, _reduce_made_proxy_type)


def MakeProxyType(name: str, exposed: Iterable[str], _cache: Any = None) -> type[BaseProxy]:  # noqa: N802
    """Return a proxy class named ``name`` forwarding each method in ``exposed``.

    Like the standard library's, but built with closures rather than ``exec``.
    """
    exposed = tuple(exposed)
    key = (name, exposed)
    cls = _proxy_types.get(key)
    if cls is None:
        namespace: dict[str, Any] = {meth: _method(meth) for meth in exposed}
        namespace["_exposed_"] = exposed
        namespace["_made_"] = key
        namespace["__doc__"] = f"A proxy forwarding {', '.join(exposed) or 'nothing'}."
        made: type[BaseProxy] = _MadeProxyType(name, (BaseProxy,), namespace)  # type: ignore[assignment]
        _proxy_types[key] = cls = made
    return cls


def AutoProxy(  # noqa: N802 - the stdlib's name
    token: Token,
    serializer: str = "pickle",
    manager: Any = None,
    authkey: bytes | None = None,
    exposed: Iterable[str] | None = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy whose methods are those the referent exposes (asked of the server if unknown)."""
    if authkey is None:
        manager = manager if manager is not None else managers_by_address.get(token.address)
        authkey = _authkey_default(manager)
    if exposed is None:
        exposed = get_channel(token.address, authkey).control("get_methods", token.id)
    cls = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed)
    if not cls._isauto:
        cls._isauto = True
    return cls(
        token,
        serializer,
        manager=manager,
        authkey=authkey,
        exposed=exposed,
        incref=incref,
        manager_owned=manager_owned,
    )


def _value_of(obj: Any) -> Any:
    """What to send for ``obj``: the value of a proxy, the object itself otherwise."""
    return obj._getvalue() if isinstance(obj, BaseProxy) else obj


# -- typed proxies -------------------------------------------------------------------------------


class DictProxy(BaseProxy, Generic[K, V]):
    """Proxy of a shared ``dict``."""

    _exposed_ = KINDS["dict"].exposed
    _kind_ = "dict"
    #: the keys ``keys()`` returned last, being read in order (``dict(proxy)``): read from a
    #: leased copy of the dict after the first few (``_scans``)
    _scan: Scan | None = None

    def __getitem__(self, key: K) -> V:
        replica = self._replica
        if replica is not None and replica.pid == current_pid():
            return replica.get_item(key)  # type: ignore[no-any-return]
        if self._scan is not None:
            value = self._scanned(key)
            if value is not MISS:
                return value  # type: ignore[no-any-return]
        return self._callmethod("__getitem__", (key,))  # type: ignore[no-any-return]

    def _scanned(self, key: Any) -> Any:
        """What the scan answers for ``self[key]`` (``_scans``), or ``MISS``: ask the server.
        A read out of order before the copy was asked for ends the scan, as does a change
        of the dict (the copy's epoch) or the scan's last key."""
        scan = self._scan
        if scan is None:
            return MISS
        if scan.pid != current_pid():  # (inherited through fork: our channel is another)
            self._scan = None
            return MISS
        in_order = scan.step(key)
        if scan.copy is None:
            if not in_order:
                self._scan = None
                return MISS
            if scan.pos < SCAN_AFTER:
                return MISS
            if not self._hold_copy(scan):
                self._scan = None
                return MISS
        if not scan.valid():
            self._scan = None
            return MISS
        if scan.done:
            self._scan = None
        return scan.read(key)

    def _hold_copy(self, scan: Scan) -> bool:
        """Ask for a leased copy of the dict for ``scan``; whether it was granted."""
        channel = self._ch
        if channel is None or channel.usable_pid != PID_CELL[0]:
            return False
        leases = channel.leases
        if leases is None or not self._leasing:
            return False
        reply = channel.request(LeasedRead(0, self._id, "copy", (), _get_ident()))
        return scan.hold(leases, self._id, reply)

    def __setitem__(self, key: K, value: V) -> None:
        """As ``dict``'s. Served on this machine, an item of plain data under a hashable key
        is set without waiting for the server's answer (it cannot fail); every request made
        after it, by any process, sees it (``_server/_core``, posts)."""
        if _hashable(key) and self._posted("__setitem__", (key, value)):
            return
        self._callmethod("__setitem__", (key, value))

    def __delitem__(self, key: K) -> None:
        self._callmethod("__delitem__", (key,))

    def __contains__(self, key: object) -> bool:
        return self._callmethod("__contains__", (key,))  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._callmethod("__len__")  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[K]:
        """A live iterator advanced on the server, as the standard library's (one round trip
        per key; ``keys()`` fetches them all at once)."""
        return self._callmethod("__iter__")  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[K]:
        return iter(self._callmethod("__reversed__"))

    def keys(self) -> list[K]:
        keys: list[K] = self._read_whole("keys")
        channel = self._ch
        self._scan = (
            Scan(keys, current_pid())
            if type(keys) is list
            and SCAN_MIN <= len(keys) <= MAX_ITEMS
            and self._leasing
            and self._replica is None
            and channel is not None
            and channel.leases is not None
            else None
        )
        return keys

    def values(self) -> list[V]:
        return self._read_whole("values")  # type: ignore[no-any-return]

    def items(self) -> list[tuple[K, V]]:
        return self._read_whole("items")  # type: ignore[no-any-return]

    def get(self, key: K, default: Any = None) -> V | Any:
        return self._callmethod("get", (key, default))

    def pop(self, key: K, *default: Any) -> V | Any:
        return self._callmethod("pop", (key, *default))

    def popitem(self) -> tuple[K, V]:
        return self._callmethod("popitem")  # type: ignore[no-any-return]

    def setdefault(self, key: K, default: Any = None) -> V | Any:
        return self._callmethod("setdefault", (key, default))

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._callmethod("update", tuple(_value_of(a) for a in args), kwargs)

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> dict[K, V]:
        return self._read_whole("copy")  # type: ignore[no-any-return]

    def __or__(self, other: Any) -> dict[K, V]:
        return self._callmethod("__or__", (_value_of(other),))  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[K, V]:
        return self._callmethod("__ror__", (_value_of(other),))  # type: ignore[no-any-return]

    def __ior__(self, other: Any) -> DictProxy[K, V]:
        self._callmethod("__ior__", (_value_of(other),))
        return self

    def increment(self, key: K, by: Any = 1, default: Any = 0) -> Any:
        """``d[key] = d.get(key, default) + by`` in one atomic step; returns the new value.

        procshare's own: what would otherwise take a lock and three round trips.
        """
        return self._callmethod("increment", (key, by, default))

    def compare_and_set(self, key: K, expected: Any, new: V) -> bool:
        """Set ``d[key] = new`` only if ``d[key] == expected``, atomically; whether it was set.

        Raises:
            KeyError: ``key`` is absent (use ``setdefault`` to insert if absent).
        """
        return self._callmethod("compare_and_set", (key, expected, new))  # type: ignore[no-any-return]


class ListProxy(BaseProxy, Generic[T]):
    """Proxy of a shared ``list``."""

    _exposed_ = KINDS["list"].exposed
    _kind_ = "list"

    def __getitem__(self, index: Any) -> Any:
        replica = self._replica
        if replica is not None and replica.pid == current_pid():
            return replica.get_item(index)
        return self._callmethod("__getitem__", (index,))

    def __setitem__(self, index: Any, value: Any) -> None:
        self._callmethod("__setitem__", (index, value))

    def __delitem__(self, index: Any) -> None:
        self._callmethod("__delitem__", (index,))

    def __contains__(self, value: object) -> bool:
        return self._callmethod("__contains__", (value,))  # type: ignore[no-any-return]

    if TYPE_CHECKING:  # (at run time it iterates through __getitem__, as the stdlib's)

        def __iter__(self) -> Iterator[T]: ...

    def __len__(self) -> int:
        return self._callmethod("__len__")  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[T]:
        return iter(self._callmethod("__reversed__"))

    def __add__(self, other: Any) -> list[T]:
        return self._callmethod("__add__", (_value_of(other),))  # type: ignore[no-any-return]

    def __mul__(self, n: int) -> list[T]:
        return self._callmethod("__mul__", (n,))  # type: ignore[no-any-return]

    def __rmul__(self, n: int) -> list[T]:
        return self._callmethod("__rmul__", (n,))  # type: ignore[no-any-return]

    def __iadd__(self, other: Iterable[T]) -> ListProxy[T]:  # type: ignore[misc]
        self._callmethod("extend", (_value_of(other),))
        return self

    def __imul__(self, n: int) -> ListProxy[T]:
        self._callmethod("__imul__", (n,))
        return self

    def append(self, value: T) -> None:
        """As ``list``'s (plain data is appended without waiting, as ``DictProxy``'s items)."""
        if not self._posted("append", (value,)):
            self._callmethod("append", (value,))

    def extend(self, values: Iterable[T]) -> None:
        self._callmethod("extend", (_value_of(values),))

    def insert(self, index: int, value: T) -> None:
        self._callmethod("insert", (index, value))

    def pop(self, index: int = -1) -> T:
        return self._callmethod("pop", (index,))  # type: ignore[no-any-return]

    def remove(self, value: T) -> None:
        self._callmethod("remove", (value,))

    def index(self, value: T, *bounds: int) -> int:
        return self._callmethod("index", (value, *bounds))  # type: ignore[no-any-return]

    def count(self, value: T) -> int:
        return self._callmethod("count", (value,))  # type: ignore[no-any-return]

    def reverse(self) -> None:
        self._callmethod("reverse")

    def sort(self, *, key: Callable[[T], Any] | None = None, reverse: bool = False) -> None:
        self._callmethod("sort", (), {"key": key, "reverse": reverse})

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> list[T]:
        return self._read_whole("copy")  # type: ignore[no-any-return]


class SetProxy(BaseProxy, Generic[T]):
    """Proxy of a shared ``set`` (``manager.set()``, as in Python 3.14)."""

    _exposed_ = KINDS["set"].exposed
    _kind_ = "set"

    def __contains__(self, value: object) -> bool:
        return self._callmethod("__contains__", (value,))  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._callmethod("__len__")  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[T]:
        """A live iterator advanced on the server (``copy()`` fetches the set at once)."""
        return self._callmethod("__iter__")  # type: ignore[no-any-return]

    def add(self, value: T) -> None:
        self._callmethod("add", (value,))

    def discard(self, value: T) -> None:
        self._callmethod("discard", (value,))

    def remove(self, value: T) -> None:
        self._callmethod("remove", (value,))

    def pop(self) -> T:
        return self._callmethod("pop")  # type: ignore[no-any-return]

    def clear(self) -> None:
        self._callmethod("clear")

    def copy(self) -> set[T]:
        return self._read_whole("copy")  # type: ignore[no-any-return]

    def update(self, *others: Iterable[T]) -> None:
        self._callmethod("update", tuple(_value_of(o) for o in others))

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._callmethod("difference_update", tuple(_value_of(o) for o in others))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._callmethod("intersection_update", tuple(_value_of(o) for o in others))

    def symmetric_difference_update(self, other: Iterable[T]) -> None:
        self._callmethod("symmetric_difference_update", (_value_of(other),))

    def union(self, *others: Iterable[T]) -> set[T]:
        return self._callmethod("union", tuple(_value_of(o) for o in others))  # type: ignore[no-any-return]

    def intersection(self, *others: Iterable[Any]) -> set[T]:
        return self._callmethod("intersection", tuple(_value_of(o) for o in others))  # type: ignore[no-any-return]

    def difference(self, *others: Iterable[Any]) -> set[T]:
        return self._callmethod("difference", tuple(_value_of(o) for o in others))  # type: ignore[no-any-return]

    def symmetric_difference(self, other: Iterable[T]) -> set[T]:
        return self._callmethod("symmetric_difference", (_value_of(other),))  # type: ignore[no-any-return]

    def issubset(self, other: Iterable[Any]) -> bool:
        return self._callmethod("issubset", (_value_of(other),))  # type: ignore[no-any-return]

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self._callmethod("issuperset", (_value_of(other),))  # type: ignore[no-any-return]

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        return self._callmethod("isdisjoint", (_value_of(other),))  # type: ignore[no-any-return]


class ValueProxy(BaseProxy, Generic[T]):
    """Proxy of a shared ``Value`` (``manager.Value(typecode, value)``)."""

    _exposed_ = KINDS["Value"].exposed
    _kind_ = "Value"

    def get(self) -> T:
        return self._callmethod("get")  # type: ignore[no-any-return]

    def set(self, value: T) -> None:
        """Set the value (plain data without waiting, as ``DictProxy``'s items). A process
        that is the value's only writer keeps reading it locally (``.._leases``)."""
        leases = self._channel().leases  # (this process's: a forked child binds its own)
        if leases is None:
            if not self._posted("set", (value,)):
                self._callmethod("set", (value,))
            return
        with leases.writing:  # (the lease follows the posts in their order)
            if self._posted("set", (value,)):
                leases.wrote((self._id, "get", ()), value)
                return
        self._callmethod("set", (value,))

    if TYPE_CHECKING:

        @property
        def value(self) -> T: ...
        @value.setter
        def value(self, value: T) -> None: ...

    else:
        value = property(get, set)  # (no extra call per read)

    def increment(self, by: Any = 1) -> T:
        """Add ``by`` in one atomic step and return the new value.

        procshare's own: ``v.value += 1`` is two round trips and not atomic (as in the stdlib).
        """
        return self._callmethod("increment", (by,))  # type: ignore[no-any-return]

    def compare_and_set(self, expected: T, new: T) -> bool:
        """Set ``new`` only if the value equals ``expected``, atomically; whether it was set."""
        return self._callmethod("compare_and_set", (expected, new))  # type: ignore[no-any-return]

    def swap(self, new: T) -> T:
        """Set ``new`` and return the value it replaced, atomically."""
        return self._callmethod("swap", (new,))  # type: ignore[no-any-return]


class ArrayProxy(BaseProxy, Generic[T]):
    """Proxy of a shared ``array.array`` (``manager.Array(typecode, sequence)``)."""

    _exposed_ = KINDS["Array"].exposed
    _kind_ = "Array"

    def __len__(self) -> int:
        return self._callmethod("__len__")  # type: ignore[no-any-return]

    def __getitem__(self, index: Any) -> Any:
        return self._callmethod("__getitem__", (index,))

    def __setitem__(self, index: Any, value: Any) -> None:
        self._callmethod("__setitem__", (index, value))

    def tolist(self) -> list[T]:
        return self._read_whole("tolist")  # type: ignore[no-any-return]


class NamespaceProxy(BaseProxy):
    """Proxy of a shared ``Namespace``: attribute access goes to the server.

    Names starting with an underscore stay local to the proxy, as in the standard library.
    Every other name is the namespace's: procshare's extensions (``watch``, ``cache``,
    ``pipeline``, ...) never shadow a user's data: ``ns.watch = 1; ns.watch`` is 1, and
    ``ns.watch()`` is the extension only while the namespace has no attribute of that name.
    """

    _exposed_ = KINDS["Namespace"].exposed
    _kind_ = "Namespace"

    def __getattribute__(self, key: str) -> Any:
        if key[0] == "_":
            return object.__getattribute__(self, key)
        callmethod = object.__getattribute__(self, "_callmethod")
        try:
            return callmethod("__getattribute__", (key,))
        except AttributeError:
            if hasattr(type(self), key):  # an extension, not shadowed by data
                return object.__getattribute__(self, key)
            raise

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] == "_":
            object.__setattr__(self, key, value)
            return
        if object.__getattribute__(self, "_posted")("__setattr__", (key, value)):
            return  # (plain data, without waiting, as ``DictProxy``'s items)
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__setattr__", (key, value))

    def __delattr__(self, key: str) -> None:
        if key[0] == "_":
            object.__delattr__(self, key)
            return
        callmethod = object.__getattribute__(self, "_callmethod")
        callmethod("__delattr__", (key,))


class AcquirerProxy(BaseProxy):
    """Proxy of a shared Lock, RLock, Semaphore or BoundedSemaphore.

    Held by the calling thread's process connection; released by the server if that process
    dies holding it.
    """

    _exposed_: tuple[str, ...] = ("acquire", "release")
    #: what its holder read last time it held it, asked for again with the next grant
    #: (``_leases``); ``None`` once the server declined (not one of its own locks)
    _lease_reads: tuple[Read, ...] | None = ()
    #: acquisitions held through this proxy, by thread (``None`` until the first acquire):
    #: what a Condition's notify made while holding it may skip waiting for (``_notify``)
    _holding: dict[int, int] | None = None
    _holding_pid = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        acquired = self._acquire(blocking, timeout)
        if acquired:
            holding = self._holding
            if holding is None or self._holding_pid != PID_CELL[0]:
                holding = self._holding = {}  # (a forked child holds nothing of its own)
                self._holding_pid = PID_CELL[0]
            me = _get_ident()
            holding[me] = holding.get(me, 0) + 1
        return acquired

    def _holds(self) -> bool:
        """Whether this thread holds it through this proxy (and will not after a release)."""
        holding = self._holding
        me = _get_ident()
        if holding is not None and holding.get(me) and self._holding_pid == PID_CELL[0]:
            holding[me] -= 1  # (if the release fails, it is made plainly from then on)
            return True
        return False

    def _acquire(self, blocking: bool, timeout: float | None) -> bool:
        args = (blocking,) if timeout is None else (blocking, timeout)
        waits = _waits(blocking, timeout)
        reads = self._lease_reads
        if reads is None or self._token.typeid not in LEASING_LOCKS:
            return self._callblocking("acquire", args, waits)  # type: ignore[no-any-return]
        channel = self._channel()
        leases = channel.leases
        if leases is None:
            return self._callblocking("acquire", args, waits)  # type: ignore[no-any-return]
        loans = channel.loans
        if loans is not None:
            # Lent to this process (``.._loans``): taken here, or the server decides.
            taken = loans.acquire(self._id, _get_ident(), blocking)
            if type(taken) is tuple:  # recalled: the server learns what this process knows
                channel.call(self._id, "#loan", taken, None, _get_ident())
            elif taken is not None:
                return bool(taken)
        reply = None
        lent = False
        if reads or loans is not None:
            wait = -1 if timeout is None else timeout
            borrow = loans is not None
            acquire = LeaseAcquire(0, self._id, blocking, wait, reads, borrow, _get_ident())
            reply = channel.request(acquire, blocking=True, wait=waits)
            if reply is None:  # declined: acquire plainly, now and from now on
                self._lease_reads = None
                return self._callblocking("acquire", args, waits)  # type: ignore[no-any-return]
            if reply is False:
                return False
            if len(reply) == 3 and loans is not None:
                loans.add(self._id, *reply[2])
                lent = True
        elif not self._callblocking("acquire", args, waits):
            return False
        leases.granted(self._id, reads, reply, lent)
        return True

    def release(self) -> None:
        channel = self._ch
        if channel is not None and channel.leases is not None and self._lease_reads is not None:
            learned = channel.leases.released(self._id)
            if learned is not None:
                self._lease_reads = learned
        self._holds()  # (no longer held by this thread, if it was: see ``_notify``)
        if channel is not None and channel.loans is not None and channel.usable_pid == PID_CELL[0]:
            freed = channel.loans.release(self._id, _get_ident())
            if freed is True:
                return  # (lent: freed here)
            if freed is not None:  # recalled: given back, with this release if it says so
                channel.call(self._id, "#loan", freed, None, _get_ident())
                return
        self._callmethod("release")

    def locked(self) -> bool:
        """Whether it is held by anyone (Lock and RLock only)."""
        return self._callmethod("locked")  # type: ignore[no-any-return]

    @property
    def fencing_token(self) -> int | None:
        """On Redis, the fencing token of this thread's last acquire: a number that grows
        with every acquire of this lock, to pass to a store that must refuse the writes of a
        holder whose lock was lost meanwhile (a process paused past its session's ttl).
        ``None`` where there is none (procshare's server, which knows its holders)."""
        fencing = getattr(self._channel(), "fencing", None)
        return None if fencing is None else fencing.get((self._id, _get_ident()))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.release()


class ConditionProxy(AcquirerProxy):
    """Proxy of a shared Condition.

    ``notify()`` and ``notify_all()`` made while this proxy's thread holds the condition's
    lock do not wait for the server's reply (they cannot fail then): the notified process is
    woken one round trip sooner, as soon as the lock is released.
    """

    _exposed_: tuple[str, ...] = ("acquire", "release", "wait", "notify", "notify_all")

    def wait(self, timeout: float | None = None) -> bool:
        # (no limit: once notified it waits for the lock again, which its timeout does not cover)
        return self._callblocking("wait", (timeout,))  # type: ignore[no-any-return]

    def notify(self, n: int = 1) -> None:
        self._notify("notify", (n,))

    def notify_all(self) -> None:
        self._notify("notify_all", ())

    def _notify(self, method: str, args: tuple[Any, ...]) -> None:
        holding = self._holding
        if (
            holding is not None
            and holding.get(_get_ident())
            and self._holding_pid == PID_CELL[0]
            and self._posted(method, args)
        ):
            return
        self._callmethod(method, args)

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Wait until ``predicate()`` is true (evaluated here, after each wake-up)."""
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result


class EventProxy(BaseProxy):
    """Proxy of a shared Event."""

    _exposed_ = ("is_set", "set", "clear", "wait")
    _lease_kind_ = "Event"

    def is_set(self) -> bool:
        return self._callmethod("is_set")  # type: ignore[no-any-return]

    def set(self) -> None:
        self._callmethod("set")

    def clear(self) -> None:
        self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> bool:
        return self._callblocking("wait", (timeout,), timeout)  # type: ignore[no-any-return]


class BarrierProxy(BaseProxy):
    """Proxy of a shared Barrier; it breaks if a waiting party's process dies."""

    _exposed_ = ("__getattribute__", "wait", "abort", "reset")

    def wait(self, timeout: float | None = None) -> int:
        return self._callblocking("wait", (timeout,), timeout)  # type: ignore[no-any-return]

    def abort(self) -> None:
        self._callmethod("abort")

    def reset(self) -> None:
        self._callmethod("reset")

    @property
    def parties(self) -> int:
        return self._callmethod("__getattribute__", ("parties",))  # type: ignore[no-any-return]

    @property
    def n_waiting(self) -> int:
        return self._callmethod("__getattribute__", ("n_waiting",))  # type: ignore[no-any-return]

    @property
    def broken(self) -> bool:
        return self._callmethod("__getattribute__", ("broken",))  # type: ignore[no-any-return]


class QueueProxy(BaseProxy, Generic[T]):
    """Proxy of a shared Queue or JoinableQueue (``queue.Queue``'s API)."""

    _exposed_ = KINDS["Queue"].exposed

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """As ``queue.Queue.put``. On an unbounded queue served on this machine, while no
        getter is parked on it, a put of plain data does not wait for the server's answer
        (it cannot fail): every request made after it, by any process, still sees the item
        (the server reads what was posted first). A parked getter gets its item at once."""
        args = (item, block, timeout)
        if block is True and timeout is None:
            leases = self._channel().leases
            if (
                leases is not None
                and not leases.waiting(self._id)
                and self._posted("put", args, True)
            ):
                return
        self._callblocking("put", args, _waits(block, timeout))

    def put_nowait(self, item: T) -> None:
        self._callmethod("put_nowait", (item,))

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        return self._callblocking(  # type: ignore[no-any-return]
            "get", (block, timeout), _waits(block, timeout)
        )

    def get_nowait(self) -> T:
        return self._callmethod("get_nowait")  # type: ignore[no-any-return]

    def qsize(self) -> int:
        return self._callmethod("qsize")  # type: ignore[no-any-return]

    def empty(self) -> bool:
        return self._callmethod("empty")  # type: ignore[no-any-return]

    def full(self) -> bool:
        return self._callmethod("full")  # type: ignore[no-any-return]

    def task_done(self) -> None:
        self._callmethod("task_done")

    def join(self) -> None:
        self._callblocking("join")


class _QueueAutoProxy(QueueProxy[Any]):
    """The proxy ``Manager().Queue()`` returns, named as the standard library's is (its
    manager registers ``queue.Queue`` with ``AutoProxy``): ``AutoProxy[Queue]``."""


class _JoinableQueueAutoProxy(QueueProxy[Any]):
    """``Manager().JoinableQueue()``'s proxy: ``AutoProxy[JoinableQueue]``."""


# (The names people see; pickle finds the classes by their qualified names.)
_QueueAutoProxy.__name__ = "AutoProxy[Queue]"
_JoinableQueueAutoProxy.__name__ = "AutoProxy[JoinableQueue]"


class IteratorProxy(BaseProxy):
    """Proxy of an iterator living in the server (``method_to_typeid`` ``'Iterator'``)."""

    _exposed_ = ("__next__", "send", "throw", "close")

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self, *args: Any) -> Any:
        return self._callmethod("__next__", args)

    def send(self, *args: Any) -> Any:
        return self._callmethod("send", args)

    def throw(self, *args: Any) -> Any:
        return self._callmethod("throw", args)

    def close(self, *args: Any) -> Any:
        return self._callmethod("close", args)


_POOL_METHODS = (
    "apply",
    "apply_async",
    "close",
    "imap",
    "imap_unordered",
    "join",
    "map",
    "map_async",
    "starmap",
    "starmap_async",
    "terminate",
)


class PoolProxy(MakeProxyType("PoolProxy", _POOL_METHODS)):  # type: ignore[misc]
    """Proxy of a ``multiprocessing.pool.Pool`` living in the server."""

    _method_to_typeid_ = {
        "apply_async": "AsyncResult",
        "map_async": "AsyncResult",
        "starmap_async": "AsyncResult",
        "imap": "Iterator",
        "imap_unordered": "Iterator",
    }

    def __enter__(self) -> PoolProxy:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.terminate()


# Proxies are virtual subclasses of the collection ABCs, as in the standard library (3.13+).
collections.abc.MutableMapping.register(DictProxy)
collections.abc.MutableSequence.register(ListProxy)
collections.abc.MutableSet.register(SetProxy)

#: procshare's proxy classes by qualified name (``proxy_type_for``)
_OWN_PROXY_TYPES: dict[str, Callable[..., Any]] = {
    cls.__qualname__: cls
    for cls in (
        DictProxy,
        ListProxy,
        SetProxy,
        ValueProxy,
        ArrayProxy,
        NamespaceProxy,
        AcquirerProxy,
        ConditionProxy,
        EventProxy,
        BarrierProxy,
        QueueProxy,
        _QueueAutoProxy,
        _JoinableQueueAutoProxy,
        IteratorProxy,
        PoolProxy,
    )
}


def _waits(block: bool, timeout: float | None) -> float | None:
    """How long a call with ``block`` and ``timeout`` may wait on the server (``None``: for
    ever), as ``threading``/``queue`` define it; a negative timeout waits for ever too."""
    if not block:
        return 0.0
    if timeout is None or timeout < 0:
        return None
    return float(timeout)
