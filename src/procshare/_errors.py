"""The one exception hierarchy of procshare.

Every error procshare raises on its own account derives from :class:`ProcshareError`, and also
from the standard exception users already catch for that situation (``ConnectionError``,
``TimeoutError``, ``multiprocessing.AuthenticationError``, ``AttributeError``, ...), so code
written against ``multiprocessing.managers`` keeps working. Exceptions raised by a referent
(``KeyError``, ``IndexError``, ``queue.Empty``, ...) are not wrapped: they reach the caller as
themselves, as in the standard library.

Invariants: no class here shadows a builtin name; every class pickles and unpickles to an equal
error (they cross process boundaries), which is why none of them takes extra ``__init__``
arguments beyond the message, except :class:`RemoteError` which carries the remote traceback.
"""

from __future__ import annotations

import multiprocessing
import pickle

__all__ = [
    "AuthenticationError",
    "CallWithdrawn",
    "ConnectionLost",
    "FrameTooLarge",
    "ManagerStateError",
    "MemoryLimitError",
    "MethodNotExposed",
    "ObjectNotFound",
    "ProcshareError",
    "ProtocolError",
    "RemoteError",
    "SerializationError",
]


class ProcshareError(Exception):
    """Root of every error procshare raises on its own account."""


class ConnectionLost(ProcshareError, ConnectionError):
    """The server went away (or the connection to it broke) before the call completed.

    Raised promptly, never after a hang: a call in flight when the server dies fails with this,
    and so does every later call until a new server is reachable.
    """


class AuthenticationError(ProcshareError, multiprocessing.AuthenticationError):
    """The other side does not know the authkey (HMAC challenge failed)."""


class ProtocolError(ProcshareError):
    """A peer sent bytes that are not a valid procshare message."""


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds the configured frame limit."""


class SerializationError(ProcshareError, pickle.PicklingError, TypeError):
    """An argument or a result could not be serialized or deserialized.

    Raised before anything is sent when an argument cannot be pickled, so no operation is ever
    half-applied. Also a ``TypeError`` and a ``pickle.PicklingError``, which is what the standard
    library's manager raises in the same situation.
    """


class ManagerStateError(ProcshareError, multiprocessing.ProcessError):
    """A manager was used in the wrong state (not started, already started, shut down)."""


class RemoteError(ProcshareError):
    """An error inside the server that is not the referent's own exception.

    The standard library raises ``RemoteError`` in the same situations: a constructor that
    failed in the server, a method that is not exposed, an object that does not exist.
    ``str()`` shows the remote traceback framed as the standard library's does;
    ``remote_traceback`` holds the traceback text.
    """

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message, remote_traceback)
        self.message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        body = self.remote_traceback or self.message
        if self.remote_traceback and self.message not in self.remote_traceback:
            body = f"{self.message}\n{self.remote_traceback}"
        return "\n" + "-" * 75 + "\n" + body.rstrip("\n") + "\n" + "-" * 75


class ObjectNotFound(RemoteError, LookupError):
    """The shared object a proxy refers to no longer exists on the server."""


class MethodNotExposed(RemoteError, AttributeError):
    """The method is not exposed by the shared object's type (see ``register(exposed=...)``)."""


class MemoryLimitError(ProcshareError, MemoryError):
    """The server refused a change: it would have taken the server past its ``max_memory``
    (or the server is at it, and refuses changes that add data until some is freed)."""


class CallWithdrawn(ProcshareError):
    """A parked request was withdrawn because its caller abandoned it (``Cancel``): the final
    answer to a call interrupted by a signal. The client consumes it; user code never sees it."""
