"""The one exception hierarchy of procshare.

Every error procshare raises on its own account derives from :class:`ProcshareError`, and also
from the standard exception users already catch for that situation (``ConnectionError``,
``TimeoutError``, ``multiprocessing.AuthenticationError``, ``AttributeError``, ...), so code
written against ``multiprocessing.managers`` keeps working. Exceptions raised by a referent
(``KeyError``, ``IndexError``, ``queue.Empty``, ...) are not wrapped: they reach the caller as
themselves, as in the standard library; nor are bad arguments (a ``TypeError`` or
``ValueError`` raised before anything is sent).

Invariants: no class here shadows a builtin name; every class pickles and unpickles to an equal
error (they cross process boundaries), which is why none of them takes extra ``__init__``
arguments beyond the message, except :class:`RemoteError` which carries the remote traceback.
"""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Any

__all__ = [
    "AuthenticationError",
    "CallWithdrawn",
    "ConnectionLost",
    "ErrorNotRebuildable",
    "FrameTooLarge",
    "LockLostError",
    "ManagerStateError",
    "MemoryLimitError",
    "MethodNotExposed",
    "NameTakenError",
    "ObjectNotFound",
    "ProcshareError",
    "ProtocolError",
    "RemoteError",
    "ResultNotSerializable",
    "SerializationError",
    "ServerBusy",
    "ServerNotFound",
    "ServerRefused",
    "ServerUnreachable",
    "UnsupportedError",
    "WaitTimeout",
    "WatchClosed",
    "connection_lost",
    "serialization_error",
]


class ProcshareError(Exception):
    """Root of every error procshare raises on its own account."""


class ConnectionLost(ProcshareError, ConnectionError):
    """The server went away (or the connection to it broke) before the call completed.

    Raised promptly, never after a hang: a call in flight when the server dies fails with this,
    and so does every later call until a new server is reachable. When the socket said why
    (nothing listens, no such socket file), the error is also that ``OSError``: see
    ``connection_lost``.
    """


class ServerRefused(ConnectionLost, ConnectionRefusedError):
    """Nothing listens at the server's TCP address (or unix socket): ``ConnectionRefusedError``,
    as the standard library's manager raises."""


class ServerNotFound(ConnectionLost, FileNotFoundError):
    """No server socket at that unix path: ``FileNotFoundError``, as the standard library's."""


class ServerBusy(ConnectionLost):
    """The server has as many connections as it allows (``max_connections``): it refused
    this one. Nothing of this client's was lost; connect again later."""


class ServerUnreachable(ConnectionLost, TimeoutError):
    """Connecting timed out: ``TimeoutError``."""


_LOST_AS: dict[type[OSError], type[ConnectionLost]] = {
    ConnectionRefusedError: ServerRefused,
    FileNotFoundError: ServerNotFound,
    TimeoutError: ServerUnreachable,
}


def connection_lost(what: str, cause: BaseException | None = None) -> ConnectionLost:
    """``what`` failed because of ``cause``: a ``ConnectionLost`` that is also the ``OSError``
    the socket raised, so that code written for the standard library (``except
    ConnectionRefusedError``, retry loops) catches it; with ``errno`` and ``strerror`` set."""
    if isinstance(cause, OSError):
        for os_type, lost_type in _LOST_AS.items():
            if isinstance(cause, os_type):
                if cause.errno is None:
                    return lost_type(f"{what}: {cause}" if str(cause) else what)
                return lost_type(cause.errno, f"{what}: {cause.strerror}")
    return ConnectionLost(f"{what}: {cause}" if cause is not None and str(cause) else what)


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


#: SerializationError classes that are also the error pickle raised: original type -> class
_SERIALIZATION_AS: dict[type[BaseException], type[SerializationError]] = {}


def serialization_error(message: str, cause: BaseException) -> SerializationError:
    """A ``SerializationError`` that is also an instance of what pickling raised (``cause``:
    a ``RuntimeError`` from a ``__reduce__``, the ``AttributeError`` of a local function, ...),
    as the standard library's manager lets that error through and programs catch it."""
    original = type(cause)
    if not isinstance(cause, Exception) or isinstance(cause, SerializationError):
        return SerializationError(message)
    cls = _SERIALIZATION_AS.get(original)
    if cls is None:
        if issubclass(SerializationError, original):  # (TypeError, PicklingError)
            cls = SerializationError
        else:
            try:
                cls = type(
                    f"SerializationError_{original.__name__}",
                    (SerializationError, original),
                    {"__module__": __name__, "__reduce__": _reduce_serialization_error},
                )
            except TypeError:  # (their layouts cannot be combined: OSError with AttributeError)
                cls = SerializationError
        _SERIALIZATION_AS[original] = cls
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - an original whose __init__ wants other arguments
        return SerializationError(message)


def _reduce_serialization_error(self: BaseException) -> tuple[Any, ...]:
    # It travels as a plain SerializationError (the combined class exists only where made).
    return (SerializationError, self.args)


class ManagerStateError(ProcshareError, multiprocessing.ProcessError, AssertionError):
    """A manager was used in the wrong state (not started, already started, shut down).

    Also an ``AssertionError``: the standard library asserts the state (``server not yet
    started``), and a ``multiprocessing.ProcessError``, which it raises for ``start()`` twice.
    """


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


class ResultNotSerializable(RemoteError, SerializationError):
    """A method's result could not be pickled in the server: a ``RemoteError``, as the standard
    library raises then, and a ``SerializationError``."""

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        RemoteError.__init__(self, message, remote_traceback)


class ErrorNotRebuildable(RemoteError, TypeError):
    """The shared object's code raised an exception that cannot be rebuilt from its pickle
    (an ``__init__`` that wants other arguments): a ``TypeError``, as unpickling it raises in
    the standard library's client, carrying its type, text and traceback."""


class ObjectNotFound(RemoteError, LookupError):
    """The shared object a proxy refers to no longer exists on the server."""

    @classmethod
    def of(cls, obj_id: int) -> ObjectNotFound:
        """The error for the shared object ``obj_id``."""
        return cls(f"shared object {obj_id} does not exist (any more)")


class MethodNotExposed(RemoteError, AttributeError):
    """The method is not exposed by the shared object's type (see ``register(exposed=...)``)."""


class NameTakenError(ProcshareError, TypeError):
    """The name belongs to a shared object of another type (``m.named(name)``)."""


class MemoryLimitError(ProcshareError, MemoryError):
    """The server refused a change: it would have taken the server past its ``max_memory``
    (or the server is at it, and refuses changes that add data until some is freed)."""


class WaitTimeout(ProcshareError, TimeoutError):
    """No change came within the time given: ``watch().get(timeout)``, iterating a watch made
    with a timeout, ``wait_until(predicate, timeout)``. A ``TimeoutError``."""


class WatchClosed(ProcshareError, ValueError):
    """The watch was closed: it delivers no more changes (a ``ValueError``, as reading a
    closed file is)."""


class UnsupportedError(ProcshareError, NotImplementedError):
    """What was asked for is not offered where the objects live (a registered class's
    objects on Redis, which cannot run code; ``watch()`` on Redis, not yet)."""


class LockLostError(ProcshareError, RuntimeError):
    """``release()`` of a lock (or semaphore permit) this process no longer held: its Redis
    session expired (the process was paused, or cut off, longer than the session's ttl) and
    the lock went to another. Nothing was released: the new holder keeps it."""


class CallWithdrawn(ProcshareError):
    """A parked request was withdrawn because its caller abandoned it (``Cancel``): the final
    answer to a call interrupted by a signal. The client consumes it; user code never sees it."""
