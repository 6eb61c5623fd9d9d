"""``BaseManager`` and ``SyncManager``: the standard library's manager API on procshare's server.

The API is ``multiprocessing.managers``'s: ``register`` (typeid, callable, proxytype, exposed,
method_to_typeid, create_method), ``start(initializer, initargs)``, ``connect()``,
``shutdown()``, ``get_server().serve_forever()``, ``address``, ``join()``, the context manager,
and ``SyncManager``'s factories. What happens behind it is procshare's: one event-loop server
with native shared types (see ``_server``), a sans-IO protocol, one multiplexed connection per
process.

Differences from the standard library (improvements, documented in docs/drop-in.md):
* a process holding a Lock/RLock/Semaphore/Condition that dies releases it; queues and barriers
  survive a dead party (see ``_server/_objects.py`` for the rule);
* the server started by ``start()`` exits once its owner process has died and no client is
  connected any more (the standard library's lingers forever);
* ``("", port)`` binds the loopback interface; pass ``"0.0.0.0"`` to accept other machines;
* ``SyncManager`` also offers ``set()`` (as Python 3.14 does).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from multiprocessing import connection, pool, util
from multiprocessing.process import AuthenticationString  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

from ._address import Address, is_redis_url, parse_address
from ._client._backend import Backend
from ._client._channel import Channel, forget_channels, get_channel, live_channel, use_tls
from ._client._pipeline import Pipeline
from ._client._proxies import (
    AcquirerProxy,
    ArrayProxy,
    AutoProxy,
    BarrierProxy,
    BaseProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    IteratorProxy,
    ListProxy,
    NamespaceProxy,
    PoolProxy,
    QueueProxy,
    RebuildProxy,
    SetProxy,
    ValueProxy,
    _JoinableQueueAutoProxy,
    _QueueAutoProxy,
)
from ._context import managers_by_address
from ._errors import ManagerStateError, ProcshareError
from ._protocol import Create
from ._sched import parse_spin
from ._serializers import serializer_names
from ._server import _objects

if TYPE_CHECKING:
    from ._server._table import ServerType
    from ._server._transport import Server

__all__ = ["BaseManager", "Registration", "State", "SyncManager"]


_K = TypeVar("_K")
_V = TypeVar("_V")
_T = TypeVar("_T")
_M = TypeVar("_M", bound="BaseManager")


class State:
    """The life of a manager (same values as the standard library's)."""

    __slots__ = ["value"]
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    def __init__(self) -> None:
        self.value = State.INITIAL


class Registration(NamedTuple):
    """One registered typeid. A tuple in the standard library's order, with names."""

    callable: Callable[..., Any] | None
    exposed: tuple[str, ...] | None
    method_to_typeid: Mapping[str, str] | None
    proxytype: Any


# Callables the server implements natively, whatever proxy they are registered with.
#: the callables of the built-in kinds, as registered: callable -> kind (``_objects``)
_OWN_KINDS: dict[Any, str] = {factory: kind for kind, factory in _objects.FACTORIES.items()}

# Standard-library callables we implement natively when registered with a typed proxy (with
# AutoProxy, clients may call any public method of the real class, so it stays custom).
_STDLIB_KINDS: dict[Any, str] = {
    threading.Lock: "Lock",
    threading.RLock: "RLock",
    threading.Semaphore: "Semaphore",
    threading.BoundedSemaphore: "BoundedSemaphore",
    threading.Condition: "Condition",
    threading.Event: "Event",
    threading.Barrier: "Barrier",
    queue.Queue: "Queue",
}


def _native_kind(typeid: str, reg: Registration) -> str | None:
    try:
        kind = _OWN_KINDS.get(reg.callable)
        if kind is None and reg.proxytype is not AutoProxy:
            kind = _STDLIB_KINDS.get(reg.callable)
    except TypeError:  # an unhashable callable
        return None
    if kind == "Queue" and typeid == "JoinableQueue":
        kind = "JoinableQueue"
    return kind


def _server_types(
    registry: Mapping[str, Registration], watched: Mapping[str, frozenset[str]] | None = None
) -> dict[str, ServerType]:
    from ._server._table import ServerType

    types = {}
    watched = watched or {}
    for typeid, reg in registry.items():
        kind = _native_kind(typeid, reg)
        types[typeid] = ServerType(
            typeid=typeid,
            kind=kind,
            factory=None if kind is not None else reg.callable,
            # native kinds expose their handler table; custom ones what was registered
            exposed=None if kind is not None or reg.exposed is None else tuple(reg.exposed),
            method_to_typeid=dict(reg.method_to_typeid) if reg.method_to_typeid else None,
            proxytype=reg.proxytype if reg.proxytype is not None else AutoProxy,
            watched=watched.get(typeid, frozenset()),
        )
    # Built-in kinds that methods return (a dict's live iterator) exist on every server.
    types.setdefault(
        "LiveIterator",
        ServerType("LiveIterator", "LiveIterator", None, None, None, IteratorProxy),
    )
    return types


class BaseManager:
    """Starts (or connects to) a procshare server and creates shared objects on it.

    Args (the standard library's, then procshare's, keyword-only):
        address: where the server listens: a unix socket path, ``unix:///path``,
            ``(host, port)`` or ``tcp://host:port``; default: a private unix socket.
        authkey: the secret clients must know (default: this process's authkey).
        serializer: ``"pickle"``, ``"msgpack"`` (plain data only) or ``"xmlrpclib"``.
        ctx: the multiprocessing context used to start the server process.
        shutdown_timeout: seconds ``shutdown()`` waits for the server before terminating it.
        release_delay: seconds an object nobody references is kept before it is freed.
        spin: the longest busy-poll, for the server and its clients alike, made only where it
            takes nobody's CPU: ``None`` (50 us with two CPUs or more), seconds, ``"50us"``,
            or 0 / ``"off"``; default ``$PROCSHARE_SPIN`` (docs/performance.md, "Speed on a
            busy machine").
        reactors: server threads serving connections (default: one per CPU, at most 8).
        max_frame: the largest message, in bytes, the server accepts.
        cache: serve reads of the dicts, lists, sets, Namespaces, Values and Arrays this
            manager creates from local replicas (see ``proxy.cache()``).
        leases: let local clients answer reads made again, and reads with a lock's grant,
            while the objects are unchanged (default; see ``procshare._leases``). ``False``:
            every read is a round trip.
        posts: let local clients send the calls that cannot fail without waiting for their
            answer (default: a lock's release by its holder, a put on an unbounded queue, a
            dict's item set, a list's append, ...: docs/drop-in.md, "Writes that cannot
            fail"); ``False`` (or ``$PROCSHARE_POSTS=off`` in a process): every call waits.
        fair_locks: hand a released Lock or RLock to its longest waiter at once, always
            (strict arrival order). Default: a process that releases a lock and asks for it
            again at once may keep it, for up to a millisecond while others wait, which
            saves a wake-up per hand-over (docs/drop-in.md, "A contended lock changes
            hands").
        max_memory: the most data the server may hold, in bytes or as ``"512MiB"``/``"2GB"``
            (beyond what it used when it started): a change that would pass it, or that adds
            data once the server is within 16 MiB of it, raises ``MemoryLimitError``; reads
            and removals are still served (Redis's ``maxmemory`` with ``noeviction``).
            Linux only. Default: no limit.
        timeout: seconds a call that does not wait on the server (anything but ``acquire``,
            ``get``, ``wait`` and the like, which wait as long as they ask to) may go
            unanswered before this process gives its connection up and raises
            ``ServerUnreachable`` (a ``TimeoutError``): a server that is stopped or out of
            reach. Default ``$PROCSHARE_TIMEOUT``, else wait for ever.
        tls: a client ``ssl.SSLContext``: this process connects to the server with TLS (on
            TCP), checking its certificate (``ssl.create_default_context(cafile=...)``).
        tls_cert, tls_key: PEM files of the certificate and key a server this manager starts
            (``start()``, ``get_server()``) presents: its TCP clients must speak TLS.
        tls_ca: with ``tls_cert``: clients must present a certificate signed by this CA.
        max_connections: connections the server serves at once (each process that uses it
            has one, two while it watches); one more is refused with ``ServerBusy``.
            Default: no limit but the process's file descriptors.
    """

    _registry: dict[str, Registration] = {}
    #: custom typeids that opted in to ``watch()``: typeid -> the methods that change them
    _watched: dict[str, frozenset[str]] = {}
    #: the server class (``None``: procshare's, imported when a server is first made)
    _Server: type[Server] | None = None

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float = 1.0,
        release_delay: float = 5.0,
        spin: float | str | None = None,
        max_frame: int | None = None,
        cache: bool = False,
        leases: bool = True,
        posts: bool = True,
        fair_locks: bool = False,
        reactors: int | None = None,
        max_memory: int | str | None = None,
        timeout: float | None = None,
        tls: Any = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        max_connections: int | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
            raise ValueError("a TLS server needs tls_cert and tls_key (and tls_ca, optional)")
        self._tls = tls
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._timeout = timeout
        if authkey is None:
            authkey = multiprocessing.current_process().authkey
        if serializer not in serializer_names():
            raise ValueError(
                f"serializer {serializer!r} is not available; use one of {serializer_names()}"
            )
        self._address: Address | None = parse_address(address)
        #: a Redis URL as given (whether it names a namespace: ``start``)
        self._redis_url = address if is_redis_url(address) else None
        self._authkey = AuthenticationString(authkey)
        self._state = State()
        self._serializer = serializer
        self._ctx = ctx or multiprocessing.get_context()
        self._shutdown_timeout = shutdown_timeout
        self._options: dict[str, Any] = {"release_delay": release_delay}
        if tls_cert is not None:
            self._options["tls_files"] = (tls_cert, tls_key, tls_ca)
        if max_connections is not None:
            if not isinstance(max_connections, int) or max_connections < 1:
                raise ValueError(f"max_connections must be a positive int, not {max_connections!r}")
            self._options["max_connections"] = max_connections
        if spin is not None:
            parse_spin(spin)  # a bad setting fails here, not in the server process
            self._options["spin"] = spin
        if max_frame is not None:
            self._options["max_frame"] = max_frame
        if not leases:
            self._options["leases"] = False
        if not posts:
            self._options["posts"] = False
        if fair_locks:
            self._options["lock_window"] = 0.0
        if reactors is not None:
            self._options["reactors"] = reactors
        if max_memory is not None:
            from ._server._memory import MemoryGuard, parse_size

            MemoryGuard(parse_size(max_memory))  # a bad setting fails here, not in the server
            self._options["max_memory"] = max_memory
        self._process: Any = None
        self._cache = cache

    # -- state checks -------------------------------------------------------------------------

    def _check_initial(self) -> None:
        if self._state.value == State.STARTED:
            raise ManagerStateError("Already started server")
        if self._state.value == State.SHUTDOWN:
            raise ManagerStateError("Manager has shut down")

    def _check_started(self) -> None:
        if self._state.value == State.INITIAL:
            raise ManagerStateError("server not yet started: call start() or connect() first")
        if self._state.value == State.SHUTDOWN:
            raise ManagerStateError("Manager has shut down")

    # -- starting and connecting --------------------------------------------------------------

    @classmethod
    def _make_server(
        cls,
        registry: Mapping[str, Registration],
        address: Address | None,
        authkey: bytes,
        serializer: str,
        *,
        watched: Mapping[str, frozenset[str]] | None = None,
        **options: Any,
    ) -> Server:
        server_class = cls._Server
        if server_class is None:
            from ._server import _transport

            server_class = _transport.Server
        tls_files = options.pop("tls_files", None)
        if tls_files is not None:
            from ._server._tls import server_context

            options["tls"] = server_context(*tls_files)
        return server_class(
            _server_types(registry, watched),
            address,
            bytes(authkey),
            rebuild=RebuildProxy,
            serializers=(serializer,),
            **options,
        )

    def get_server(self) -> Server:
        """Return a server (with ``serve_forever()`` and ``address``) to run in this process."""
        self._check_initial()
        return self._make_server(
            self._registry,
            self._address,
            self._authkey,
            self._serializer,
            watched=self._watched,
            **self._options,
        )

    def connect(self) -> None:
        """Connect to a server already running at ``address``."""
        if self._address is None:
            raise ValueError("connect() needs the address of a running server")
        if self._tls is not None:
            use_tls(self._address, self._tls)
        get_channel(self._address, bytes(self._authkey), self._serializer, self._timeout).control(
            "ping"
        )
        self._state.value = State.STARTED
        managers_by_address[self._address] = self

    def start(
        self, initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        """Start a server process for this manager.

        Raises:
            ManagerStateError: already started, or shut down.
            TypeError: ``initializer`` is not callable.
            OSError: the server could not listen on ``address`` (the child's error).
        """
        self._check_initial()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if self._redis_url is not None:
            self._start_on_redis(self._redis_url)
            return
        reader, writer = connection.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=type(self)._run_server,
            args=(
                self._registry,
                self._address,
                self._authkey,
                self._serializer,
                writer,
                initializer,
                tuple(initargs),
                os.getpid(),
                {**self._options, "watched": self._watched},
            ),
        )
        ident = ":".join(str(i) for i in self._process._identity)
        self._process.name = f"{type(self).__name__}-{ident}"
        self._process.start()
        writer.close()
        try:
            status, payload = reader.recv()
        except EOFError:
            self._process.join(5)
            raise ManagerStateError(
                f"the manager's server process exited (code {self._process.exitcode}) "
                "before it was ready"
            ) from None
        finally:
            reader.close()
        if status != "ok":
            self._process.join(5)
            raise payload
        self._address = payload
        if self._tls is not None:
            use_tls(payload, self._tls)
        self._state.value = State.STARTED
        managers_by_address[payload] = self
        self.shutdown = util.Finalize(  # type: ignore[method-assign]
            self,
            type(self)._finalize_manager,
            args=(
                self._process,
                self._address,
                self._authkey,
                self._state,
                self._shutdown_timeout,
                self._serializer,
            ),
            exitpriority=0,
        )

    def _start_on_redis(self, url: str) -> None:
        """``start()`` where the objects live in Redis: no server process. A URL that names
        no namespace gets a new one of this manager's own, which ``shutdown()`` deletes with
        everything in it; one that names a namespace is joined and left as it is."""
        from ._redis._url import parse_redis_url

        parsed = parse_redis_url(url, fresh_namespace=True)
        owned = "namespace=" not in url
        self._address = parsed.canonical
        self._channel_unchecked().control("ping")
        self._state.value = State.STARTED
        managers_by_address[self._address] = self
        self.shutdown = util.Finalize(  # type: ignore[method-assign]
            self,
            type(self)._finalize_redis,
            args=(self._address, bytes(self._authkey), self._serializer, owned, self._state),
            exitpriority=0,
        )

    def _channel_unchecked(self) -> Backend:
        assert self._address is not None
        return get_channel(self._address, bytes(self._authkey), self._serializer, self._timeout)

    @staticmethod
    def _finalize_redis(
        address: str, authkey: bytes, serializer: str, owned: bool, state: State
    ) -> None:
        """End a manager on Redis: delete its own namespace (not one it joined)."""
        from ._redis._channel import forget_redis_channels

        with contextlib.suppress(Exception):
            forget_redis_channels(address, authkey, serializer, drop=owned)
        state.value = State.SHUTDOWN
        managers_by_address.pop(address, None)

    @classmethod
    def _run_server(
        cls,
        registry: Mapping[str, Registration],
        address: Address | None,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        owner_pid: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Create a server, report its address through ``writer``, and serve (in the child)."""
        # As the stdlib (bpo-36368): Ctrl-C in a terminal must not kill the server before the
        # parent had a chance to shut it down cleanly.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if initializer is not None:
            initializer(*initargs)
        try:
            server = cls._make_server(
                registry, address, authkey, serializer, owner_pid=owner_pid, **(options or {})
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            writer.send(("error", exc))
            writer.close()
            return
        writer.send(("ok", server.address))
        writer.close()
        multiprocessing.current_process()._manager_server = server  # type: ignore[attr-defined]
        server.serve_forever()

    @staticmethod
    def _finalize_manager(
        process: Any,
        address: Address,
        authkey: bytes,
        state: State,
        shutdown_timeout: float,
        serializer: str = "pickle",
    ) -> None:
        """Stop the server process (registered as a finalizer by ``start()``)."""
        if process.is_alive():
            with contextlib.suppress(Exception):
                # (the connection this process has is as good, and costs no new handshake)
                channel = live_channel(address, authkey, serializer)
                made = channel is None
                if channel is None:
                    channel = Channel(
                        address,
                        bytes(authkey),
                        serializer=serializer,
                        connect_timeout=shutdown_timeout,
                    )
                try:
                    channel.control("shutdown")
                finally:
                    if made:
                        channel.close()
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join()
        state.value = State.SHUTDOWN
        forget_channels(address)
        managers_by_address.pop(address, None)

    def shutdown(self) -> None:
        """Stop the server (replaced by a finalizer once ``start()`` has run)."""
        if self._state.value == State.STARTED and self._process is None:
            self._state.value = State.SHUTDOWN  # connected, not owning: just forget it

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process (started by ``start()``) to end."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = None

    @property
    def address(self) -> Address | None:
        """Where the server listens: a unix socket path, or a ``(host, port)`` tuple."""
        return self._address

    def __enter__(self: _M) -> _M:
        if self._state.value == State.INITIAL:
            self.start()
        self._check_started()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.shutdown()

    def __reduce__(self) -> Any:
        raise TypeError(
            "a manager cannot be pickled; pass its proxies (or its address and authkey) instead"
        )

    # -- talking to the server ----------------------------------------------------------------

    def _channel(self) -> Backend:
        self._check_started()
        if self._address is None:
            raise ManagerStateError("the manager has no address")
        return get_channel(self._address, bytes(self._authkey), self._serializer, self._timeout)

    def _create_proxy(self, typeid: str, args: tuple[Any, ...], kwds: dict[str, Any] | None) -> Any:
        """Create a ``typeid`` object on the server and return its proxy (inside
        ``named(name).<typeid>(...)``: get or create the object of that name)."""
        name = _NAMING.get()
        if name is None:
            proxy = self._channel().request(Create(0, typeid, args, kwds or None, 0))
        else:
            _NAMING.set(None)  # (this call only)
            proxy = self._channel().control("named", name, typeid, args, kwds or None)
        if not isinstance(proxy, BaseProxy):
            raise ProcshareError(f"the server answered creation with {type(proxy).__name__}")
        reg = self._registry.get(typeid)
        wanted = reg.proxytype if reg is not None else None
        if wanted is not None and not _is_of_proxytype(proxy, wanted):
            # This client registered another proxy type than the server: honour the client's.
            converted = wanted(
                proxy._token,
                self._serializer,
                manager=self,
                authkey=self._authkey,
                exposed=proxy._exposed_,
                incref=False,
            )
            converted._ref_pid, proxy._ref_pid = proxy._ref_pid, 0
            proxy = converted
        proxy._manager = self
        if self._cache and proxy._kind_ is not None:
            proxy.cache()
        return proxy

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Any, tuple[str, ...]]:
        """Create a shared object; return its token and exposed methods (stdlib internal API).

        The reference taken for it is held by this process until it exits.
        """
        proxy = self._create_proxy(typeid, args, kwds)
        proxy._ref_pid = 0  # keep the reference: the caller builds its own proxy from the token
        return proxy._token, tuple(proxy._exposed_)

    def _debug_info(self) -> str:
        """Text describing every shared object and its reference count."""
        return self._channel().control("debug_info")  # type: ignore[no-any-return]

    def _number_of_objects(self) -> int:
        """How many shared objects the server holds."""
        return self._channel().control("number_of_objects")  # type: ignore[no-any-return]

    def named(self, name: str) -> Named:
        """The shared objects of this name, got or created: ``m.named("jobs").Queue()``.

        Every factory of the manager is there, with its own signature (``dict``, ``Queue``,
        ``Lock``, registered typeids, ...). The first call creates the object, with those
        arguments, and gives it the name; later calls, from any process connected to the
        server, return a proxy to that same object and ignore their arguments. A named object
        lives until ``delete(name)``, not until its last proxy is gone. The same name asked for
        as another type raises ``NameTakenError``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a name is a non-empty str, not {name!r}")
        self._check_started()
        return Named(self, name)

    def names(self) -> dict[str, str]:
        """The named objects of the server: ``{name: typeid}``."""
        return self._channel().control("names")  # type: ignore[no-any-return]

    def delete(self, name: str) -> None:
        """Forget a name (``KeyError`` if there is none); its object then lives as long as
        proxies to it do, as an anonymous object."""
        self._channel().control("delete", name)

    def pipeline(self, batch_size: int = 10_000) -> Pipeline:
        """Queue calls to this manager's objects and send them together.

        ``with manager.pipeline() as p: p(d)[k] = v; n = p(lst).len()`` — see
        :class:`~procshare.Pipeline`.
        """
        self._check_started()
        return Pipeline(batch_size=batch_size)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the server: objects (with holders and waiters), sessions, counters."""
        return self._channel().control("stats")  # type: ignore[no-any-return]

    # -- registration -------------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., Any] | None = None,  # noqa: A002 - the stdlib's name
        proxytype: Any = None,
        exposed: Iterable[str] | None = None,
        method_to_typeid: Mapping[str, str] | None = None,
        create_method: bool = True,
        *,
        watch: Iterable[str] | None = None,
    ) -> None:
        """Register a type (or a callable returning shared objects) under ``typeid``.

        Same parameters as the standard library. ``callable`` runs in the server; with
        ``create_method`` the manager gains a method named ``typeid`` that calls it and returns
        a proxy of type ``proxytype`` (default ``AutoProxy``: the referent's public methods).
        procshare's own: ``watch`` lists the methods that change such an object; calls to them
        are then published to ``proxy.watch()`` subscribers.

        Raises:
            TypeError: a ``method_to_typeid`` key or value is not a string.
        """
        if not isinstance(typeid, str):
            raise TypeError(f"typeid must be a str, not {type(typeid).__name__}")
        if "_registry" not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if "_watched" not in cls.__dict__:
            cls._watched = cls._watched.copy()
        if watch is not None:
            cls._watched[typeid] = frozenset(watch)
        else:
            cls._watched.pop(typeid, None)
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in method_to_typeid.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(f"method_to_typeid must map str to str, got {key!r}: {value!r}")
        cls._registry[typeid] = Registration(
            callable,
            None if exposed is None else tuple(exposed),
            dict(method_to_typeid) if method_to_typeid else None,
            proxytype,
        )
        if create_method:

            def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
                return self._create_proxy(typeid, args, kwds)

            create.__name__ = typeid
            create.__qualname__ = f"{cls.__name__}.{typeid}"
            create.__doc__ = f"Create a shared {typeid!r} object and return a proxy for it."
            setattr(cls, typeid, create)


def _is_of_proxytype(proxy: BaseProxy, proxytype: Any) -> bool:
    if proxytype is AutoProxy:
        return proxy._isauto
    return isinstance(proxytype, type) and isinstance(proxy, proxytype)


class SyncManager(BaseManager):
    """A manager offering every shared type of the standard library's ``SyncManager``.

    ``multiprocessing.Manager()``'s counterpart is :func:`procshare.Manager`, which returns a
    started ``SyncManager``.
    """

    # The factories' types follow the builtins' (``m.dict({"a": 1})`` is a
    # ``DictProxy[str, int]``), as the stdlib's stubs do for its managers.
    @overload
    def dict(self) -> DictProxy[Any, Any]: ...
    @overload
    def dict(self, **kwargs: _V) -> DictProxy[str, _V]: ...
    @overload
    def dict(self, mapping: Mapping[_K, _V], /) -> DictProxy[_K, _V]: ...
    @overload
    def dict(self, iterable: Iterable[tuple[_K, _V]], /) -> DictProxy[_K, _V]: ...
    @overload
    def dict(self, *args: Any, **kwargs: Any) -> DictProxy[Any, Any]: ...
    def dict(self, *args: Any, **kwargs: Any) -> DictProxy[Any, Any]:
        """A shared ``dict`` (same arguments as ``dict()``)."""
        return self._create_proxy("dict", args, kwargs)  # type: ignore[no-any-return]

    @overload
    def list(self) -> ListProxy[Any]: ...
    @overload
    def list(self, iterable: Iterable[_T], /) -> ListProxy[_T]: ...
    def list(self, *args: Any) -> ListProxy[Any]:
        """A shared ``list`` (same arguments as ``list()``)."""
        return self._create_proxy("list", args, None)  # type: ignore[no-any-return]

    @overload
    def set(self) -> SetProxy[Any]: ...
    @overload
    def set(self, iterable: Iterable[_T], /) -> SetProxy[_T]: ...
    def set(self, *args: Any) -> SetProxy[Any]:
        """A shared ``set`` (same arguments as ``set()``)."""
        return self._create_proxy("set", args, None)  # type: ignore[no-any-return]

    def Namespace(self, **kwargs: Any) -> NamespaceProxy:  # noqa: N802
        """A shared attribute namespace."""
        return self._create_proxy("Namespace", (), kwargs)  # type: ignore[no-any-return]

    def Value(self, typecode: Any, value: _T, lock: bool = True) -> ValueProxy[_T]:  # noqa: N802
        """A shared value (``typecode`` is informative, as in the standard library)."""
        return self._create_proxy("Value", (typecode, value, lock), None)  # type: ignore[no-any-return]

    def Array(self, typecode: str, sequence: Iterable[_T], lock: bool = True) -> ArrayProxy[_T]:  # noqa: N802
        """A shared ``array.array``."""
        return self._create_proxy("Array", (typecode, sequence, lock), None)  # type: ignore[no-any-return]

    def Lock(self) -> AcquirerProxy:  # noqa: N802
        """A shared lock, released by the server if its holder dies."""
        return self._create_proxy("Lock", (), None)  # type: ignore[no-any-return]

    def RLock(self) -> AcquirerProxy:  # noqa: N802
        """A shared reentrant lock, released by the server if its holder dies."""
        return self._create_proxy("RLock", (), None)  # type: ignore[no-any-return]

    def Semaphore(self, value: int = 1) -> AcquirerProxy:  # noqa: N802
        """A shared semaphore."""
        return self._create_proxy("Semaphore", (value,), None)  # type: ignore[no-any-return]

    def BoundedSemaphore(self, value: int = 1) -> AcquirerProxy:  # noqa: N802
        """A shared bounded semaphore."""
        return self._create_proxy("BoundedSemaphore", (value,), None)  # type: ignore[no-any-return]

    def Condition(self, lock: Any = None) -> ConditionProxy:  # noqa: N802
        """A shared condition variable, over ``lock`` (a shared Lock/RLock) or a new RLock."""
        return self._create_proxy("Condition", (lock,), None)  # type: ignore[no-any-return]

    def Event(self) -> EventProxy:  # noqa: N802
        """A shared event."""
        return self._create_proxy("Event", (), None)  # type: ignore[no-any-return]

    def Barrier(  # noqa: N802
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> BarrierProxy:
        """A shared barrier (``action`` runs in the server when it trips)."""
        return self._create_proxy("Barrier", (parties, action, timeout), None)  # type: ignore[no-any-return]

    def Queue(self, maxsize: int = 0, *, redeliver: bool = True) -> QueueProxy[Any]:  # noqa: N802
        """A shared FIFO queue.

        An item on its way to a consumer that is killed goes back to the front (nothing is
        lost; at least once for killed consumers). ``redeliver=False``: at most once, as the
        stdlib's (an item handed to a consumer as it dies is lost with it).
        """
        kwargs = None if redeliver else {"redeliver": False}
        return self._create_proxy("Queue", (maxsize,), kwargs)  # type: ignore[no-any-return]

    def JoinableQueue(  # noqa: N802
        self, maxsize: int = 0, *, redeliver: bool = True
    ) -> QueueProxy[Any]:
        """A shared queue with ``task_done``/``join``.

        The items a consumer took and had not marked done when it was killed go back to the
        front, for another to do (at least once for killed consumers; a consumer that exits
        without ``task_done`` keeps them, as with the stdlib, and ``join()`` does not wait
        for them). ``redeliver=False``: at most once, as the stdlib's.
        """
        kwargs = None if redeliver else {"redeliver": False}
        return self._create_proxy("JoinableQueue", (maxsize,), kwargs)  # type: ignore[no-any-return]

    def Pool(self, *args: Any, **kwargs: Any) -> PoolProxy:  # noqa: N802
        """A ``multiprocessing.pool.Pool`` living in the server process."""
        return self._create_proxy("Pool", args, kwargs)  # type: ignore[no-any-return]


#: the name ``Named`` gives the object its factory creates (read by ``_create_proxy``)
_NAMING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "procshare_naming", default=None
)


class Named:
    """``manager.named(name)``: the manager's factories, getting or creating the object of
    that name (see ``BaseManager.named``)."""

    def __init__(self, manager: BaseManager, name: str) -> None:
        self._manager = manager
        self._name = name

    def __repr__(self) -> str:
        return f"<named {self._name!r} of {self._manager!r}>"

    def __dir__(self) -> list[str]:
        return sorted(t for t in self._manager._registry if hasattr(self._manager, t))

    def __getattr__(self, typeid: str) -> Callable[..., Any]:
        manager = self._manager
        if typeid.startswith("_") or typeid not in manager._registry:
            raise AttributeError(f"{type(manager).__name__} has no shared type {typeid!r}")
        factory = getattr(manager, typeid, None)
        if factory is None:
            raise AttributeError(f"{typeid!r} has no factory method on {type(manager).__name__}")
        name = self._name

        @functools.wraps(factory)
        def get_or_create(*args: Any, **kwargs: Any) -> Any:
            token = _NAMING.set(name)
            try:
                return factory(*args, **kwargs)
            finally:
                _NAMING.reset(token)

        return get_or_create


for _typeid, _callable, _proxytype in (
    ("Queue", _objects.Queue, _QueueAutoProxy),
    ("JoinableQueue", _objects.JoinableQueue, _JoinableQueueAutoProxy),
    ("Event", _objects.Event, EventProxy),
    ("Lock", _objects.Lock, AcquirerProxy),
    ("RLock", _objects.RLock, AcquirerProxy),
    ("Semaphore", _objects.Semaphore, AcquirerProxy),
    ("BoundedSemaphore", _objects.BoundedSemaphore, AcquirerProxy),
    ("Condition", _objects.Condition, ConditionProxy),
    ("Barrier", _objects.Barrier, BarrierProxy),
    ("Pool", pool.Pool, PoolProxy),
    ("list", list, ListProxy),
    ("dict", dict, DictProxy),
    ("set", set, SetProxy),
    ("Value", _objects.Value, ValueProxy),
    ("Array", _objects.Array, ArrayProxy),
    ("Namespace", _objects.Namespace, NamespaceProxy),
):
    SyncManager.register(_typeid, _callable, _proxytype, create_method=False)
SyncManager.register("Iterator", proxytype=IteratorProxy, create_method=False)
SyncManager.register("AsyncResult", create_method=False)
del _typeid, _callable, _proxytype
