"""The procshare wire protocol, sans-IO: bytes in, typed events out, messages to bytes.

Invariant (checked by a test): nothing in this package imports socket, selectors, select,
threading, asyncio or time. Only ``_errors`` and ``_serializers`` of procshare are imported.
"""

from ._connection import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Authenticated,
    BadRequest,
    ClientProtocol,
    ConnectionClosed,
    ConnState,
    Ready,
    ServerProtocol,
)
from ._framing import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MAX_RECV_SIZE,
    RECV_SIZE,
    Flag,
    FrameReader,
    pack,
)
from ._messages import (
    Batch,
    Call,
    Control,
    Create,
    Failure,
    Op,
    Push,
    Release,
    Result,
    Retain,
    Unwatch,
    Watch,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAX_RECV_SIZE",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "RECV_SIZE",
    "Authenticated",
    "BadRequest",
    "Batch",
    "Call",
    "ClientProtocol",
    "ConnState",
    "ConnectionClosed",
    "Control",
    "Create",
    "Failure",
    "Flag",
    "FrameReader",
    "Op",
    "Push",
    "Ready",
    "Release",
    "Result",
    "Retain",
    "ServerProtocol",
    "Unwatch",
    "Watch",
    "pack",
]
