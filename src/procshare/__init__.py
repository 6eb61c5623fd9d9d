"""procshare: share Python objects between processes, as ``multiprocessing`` does, but better.

``import procshare as multiprocessing`` runs ordinary multiprocessing scripts unchanged: this
module re-exports what they use from ``multiprocessing`` (``Process``, ``Queue``, ``Pipe``,
``Pool``, shared-memory ``Value``/``Array``, ...), and ``Manager()`` returns procshare's own
manager: a faster server with native shared types, where a process that dies holding a lock no
longer deadlocks everyone else.

The module-level functions act on the current default start method, exactly like
``multiprocessing``'s; ``get_context(method)`` returns a context whose ``Manager()`` is
procshare's.
"""

from __future__ import annotations

import multiprocessing as _mp
import os as _os
from multiprocessing import context as _mp_context
from typing import Any

from . import managers
from ._address import is_redis_url
from ._client._pipeline import Pending, Pipeline
from ._client._push import Change, Watch
from ._connect import URL_ENV, connect
from ._errors import (
    ConnectionLost,
    FrameTooLarge,
    LockLostError,
    ManagerStateError,
    MemoryLimitError,
    MethodNotExposed,
    NameTakenError,
    ObjectNotFound,
    ProcshareError,
    ProtocolError,
    RemoteError,
    SerializationError,
    ServerBusy,
    ServerNotFound,
    ServerRefused,
    ServerUnreachable,
    UnsupportedError,
    WaitTimeout,
    WatchClosed,
)
from ._logging import log_to_stderr
from ._manager import BaseManager, SyncManager

__version__ = "0.1.0"

_default = _mp_context._default_context

# Re-exported from the default multiprocessing context: bound methods that honour the start
# method chosen at call time, as ``multiprocessing``'s own module-level names do.
Process = _default.Process
current_process = _mp.current_process
parent_process = _mp.parent_process
active_children = _mp.active_children
cpu_count = _default.cpu_count
Lock = _default.Lock
RLock = _default.RLock
Semaphore = _default.Semaphore
BoundedSemaphore = _default.BoundedSemaphore
Condition = _default.Condition
Event = _default.Event
Barrier = _default.Barrier
Queue = _default.Queue
JoinableQueue = _default.JoinableQueue
SimpleQueue = _default.SimpleQueue
Pipe = _default.Pipe
Pool = _default.Pool
Value = _default.Value
Array = _default.Array
RawValue = _default.RawValue
RawArray = _default.RawArray
freeze_support = _default.freeze_support
get_logger = _default.get_logger
allow_connection_pickling = _default.allow_connection_pickling
set_executable = _default.set_executable
set_forkserver_preload = _default.set_forkserver_preload
get_all_start_methods = _default.get_all_start_methods
get_start_method = _default.get_start_method
set_start_method = _default.set_start_method
AuthenticationError = _mp.AuthenticationError
BufferTooShort = _mp.BufferTooShort
ProcessError = _mp.ProcessError
TimeoutError = _mp.TimeoutError  # noqa: A001 - multiprocessing's name, kept for drop-in use


def Manager(*, ctx: Any = None, **options: Any) -> SyncManager:  # noqa: N802 - stdlib name
    """Start a procshare server process and return its manager (``multiprocessing.Manager()``).

    Args:
        ctx: the multiprocessing context to start the server with (default: the current one).
        **options: procshare's manager options (``release_delay``, ``spin``, ...; see
            :class:`~procshare.managers.BaseManager`).

    Returns:
        A started :class:`~procshare.managers.SyncManager`; use it as a context manager, or
        call ``shutdown()``, to stop the server (it also stops when this process exits).

    With ``$PROCSHARE_URL`` set, it connects to that server instead (see :func:`connect`;
    ``shutdown()`` then only disconnects, and server options such as ``release_delay`` are
    the server's own).
    """
    url = _os.environ.get(URL_ENV)
    if is_redis_url(url):
        # Objects in Redis: a namespace of this manager's own (unless the URL names one)
        manager = SyncManager(
            address=url, **{k: v for k, v in options.items() if k in _CONNECT_OPTIONS}
        )
        manager.start()
        return manager
    if url:
        # A running server is named: use it (an unchanged script shares it with others).
        return connect(**{k: v for k, v in options.items() if k in _CONNECT_OPTIONS})
    manager = SyncManager(ctx=ctx if ctx is not None else _mp.get_context(), **options)
    manager.start()
    return manager


#: Manager() options that mean something to a connection (the rest configure a server)
_CONNECT_OPTIONS = frozenset({"authkey", "serializer", "cache", "spin", "timeout"})


class Context(_mp.context.BaseContext):
    """A multiprocessing context whose ``Manager()`` is procshare's; everything else is the
    wrapped context's (its ``Process``, its start method), and it is a
    ``multiprocessing.context.BaseContext``, as code written for the stdlib checks."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        if name == "_context":  # (not yet set: unpickling, copying)
            raise AttributeError(name)
        return getattr(self._context, name)

    @property
    def Process(self) -> Any:  # noqa: N802 - stdlib name
        return self._context.Process

    @property
    def _name(self) -> str:
        return str(self._context.get_start_method())

    def get_start_method(self, allow_none: bool = False) -> Any:
        return self._context.get_start_method(allow_none)

    def Manager(self, **options: Any) -> SyncManager:  # type: ignore[override]  # noqa: N802
        """Start a procshare manager whose server uses this context's start method."""
        return Manager(ctx=self._context, **options)

    def get_context(self, method: str | None = None) -> Context:  # type: ignore[override]
        """This context, or another for ``method``, as ``multiprocessing.get_context``."""
        if method is None:
            return self
        return get_context(method)

    def __repr__(self) -> str:
        return f"<procshare.Context {self._context.get_start_method()!r}>"


#: the standard library's modules found under procshare's name (``procshare.connection`` is
#: ``multiprocessing.connection``), imported when first used
_STDLIB_MODULES = frozenset(
    {
        "connection",
        "context",
        "dummy",
        "forkserver",
        "heap",
        "pool",
        "process",
        "queues",
        "reduction",
        "resource_tracker",
        "shared_memory",
        "sharedctypes",
        "spawn",
        "synchronize",
        "util",
    }
)


def __getattr__(name: str) -> Any:
    if name == "reducer":  # (multiprocessing's: the default context's, read when asked)
        return _default.reducer
    if name in _STDLIB_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_context(method: str | None = None) -> Context:
    """A context for start method ``method`` (``fork``, ``spawn``, ``forkserver`` or default).

    Like ``multiprocessing.get_context``, but its ``Manager()`` starts procshare's manager.
    """
    return Context(_mp.get_context(method))


__all__ = [
    "Array",
    "AuthenticationError",
    "Barrier",
    "BaseManager",
    "BoundedSemaphore",
    "BufferTooShort",
    "Change",
    "Condition",
    "ConnectionLost",
    "Context",
    "Event",
    "FrameTooLarge",
    "JoinableQueue",
    "Lock",
    "LockLostError",
    "Manager",
    "ManagerStateError",
    "MemoryLimitError",
    "MethodNotExposed",
    "NameTakenError",
    "ObjectNotFound",
    "Pending",
    "Pipe",
    "Pipeline",
    "Pool",
    "Process",
    "ProcessError",
    "ProcshareError",
    "ProtocolError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "RemoteError",
    "Semaphore",
    "SerializationError",
    "ServerBusy",
    "ServerNotFound",
    "ServerRefused",
    "ServerUnreachable",
    "SimpleQueue",
    "SyncManager",
    "TimeoutError",
    "UnsupportedError",
    "Value",
    "WaitTimeout",
    "Watch",
    "WatchClosed",
    "active_children",
    "allow_connection_pickling",
    "connect",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "managers",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
]
