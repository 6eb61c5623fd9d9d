"""procshare's counterpart of ``multiprocessing.managers``: the same names, procshare's server.

``from procshare.managers import BaseManager`` in place of ``multiprocessing.managers`` gives
custom managers (``register``) on procshare's server. Every other public name of the standard
library's module is there too: ``Server`` is procshare's server class, ``BaseListProxy`` and
``BasePoolProxy`` its proxies' bases; the rest (``SharedMemoryManager``, ``SharedMemoryServer``,
``listener_client``, ``dispatch``, ``public_methods``, ...) are the standard library's own, imported
when first used (``multiprocessing.managers`` costs ~15 ms to import, which a plain drop-in use
of procshare need not pay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    MakeProxyType,
    NamespaceProxy,
    PoolProxy,
    QueueProxy,
    RebuildProxy,
    SetProxy,
    ValueProxy,
)
from ._errors import RemoteError
from ._manager import BaseManager, Registration, State, SyncManager
from ._server._objects import Array, Namespace, Value
from ._token import Token

if TYPE_CHECKING:
    from multiprocessing.managers import SharedMemoryManager

    from ._server._transport import Server

#: procshare's own names for the standard library's
BaseListProxy = ListProxy
BasePoolProxy = PoolProxy.__base__


_stdlib: Any = None


def _stdlib_managers() -> Any:
    """The standard library's ``multiprocessing.managers``, imported once, when first needed
    (kept: a program may put procshare's module in its place in ``sys.modules``)."""
    global _stdlib
    if _stdlib is None:
        import multiprocessing.managers

        _stdlib = multiprocessing.managers
    return _stdlib


def __getattr__(name: str) -> Any:
    if name == "Server":
        from ._server._transport import Server

        return Server
    stdlib = _stdlib_managers()
    if name.startswith("__") or not hasattr(stdlib, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(stdlib, name)


def __dir__() -> list[str]:
    names = {n for n in dir(_stdlib_managers()) if not n.startswith("_")}
    return sorted(set(globals()) | names)


__all__ = [
    "AcquirerProxy",
    "Array",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseListProxy",
    "BaseManager",
    "BasePoolProxy",
    "BaseProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "MakeProxyType",
    "Namespace",
    "NamespaceProxy",
    "PoolProxy",
    "QueueProxy",
    "RebuildProxy",
    "Registration",
    "RemoteError",
    "Server",
    "SetProxy",
    "SharedMemoryManager",
    "State",
    "SyncManager",
    "Token",
    "Value",
    "ValueProxy",
]
