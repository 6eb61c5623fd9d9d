"""procshare's counterpart of ``multiprocessing.managers``: the same names, procshare's server.

``from procshare.managers import BaseManager`` in place of ``multiprocessing.managers`` gives
custom managers (``register``) on procshare's server. ``SharedMemoryManager`` is the standard
library's own, re-exported so that imports keep working.
"""

from __future__ import annotations

from multiprocessing.managers import SharedMemoryManager

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

__all__ = [
    "AcquirerProxy",
    "Array",
    "ArrayProxy",
    "AutoProxy",
    "BarrierProxy",
    "BaseManager",
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
    "SetProxy",
    "SharedMemoryManager",
    "State",
    "SyncManager",
    "Token",
    "Value",
    "ValueProxy",
]
