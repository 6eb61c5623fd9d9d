"""Where proxies and servers living in the same process find each other.

The client layer (proxies) and the server layer never import each other, yet two moments need
both. When a proxy is *unpickled inside the server that owns its referent* (a managed list
stored into a managed dict), it becomes an internal reference that the server must count; when
a proxy is *pickled into a reply*, the session receiving it gains a reference the server must
count. A running server registers a :class:`ServerHook` here under its address; proxies look it
up. Clients register nothing: an unpickled proxy that no server claims is an ordinary one.

Also here: the thread-local "incoming channel" a client sets while it deserializes a reply, so a
proxy rebuilt from a reply knows the connection (and the authkey) it arrived on.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

__all__ = [
    "ServerHook",
    "incoming",
    "managers_by_address",
    "normalize_address",
    "register_server",
    "server_hook",
    "unregister_server",
]


class ServerHook(Protocol):
    """What a server running in this process offers to proxies rebuilt or pickled in it."""

    def on_loop_thread(self) -> bool:
        """Whether the caller is the server's own loop (the only thread that adopts/lends)."""
        ...

    def adopt(self, obj_id: int) -> None:
        """Count one internal reference to ``obj_id``. Raises ObjectNotFound if it is gone."""
        ...

    def adopted(self, proxy: Any) -> None:
        """``proxy`` (just rebuilt, counted by ``adopt``) belongs to the message being decoded:
        the server records which shared object holds it once it dispatches that message."""
        ...

    def disown(self, obj_id: int, holder: int | None) -> None:
        """Drop one internal reference to ``obj_id``, held by shared object ``holder`` (or by
        nobody known). Any thread; takes effect on the loop."""
        ...

    def lend(self, obj_id: int, by: object) -> bool:
        """If a reply is being encoded on this thread, count a reference for its session
        (once per object ``by`` being pickled, however often it is pickled).

        Returns whether a session was counted.
        """
        ...

    def referent(self, obj_id: int) -> Any:
        """The object ``obj_id`` stands for. Raises ObjectNotFound if it is gone."""
        ...


_servers: dict[Any, ServerHook] = {}
_lock = threading.Lock()


def normalize_address(address: Any) -> Any:
    """Canonical form used as a key: unix paths as ``str``, TCP addresses as ``(host, port)``."""
    if isinstance(address, list):
        return tuple(address)
    if isinstance(address, bytes):
        return address.decode()
    return address


def register_server(address: Any, hook: ServerHook) -> None:
    """Make the server at ``address`` known to proxies in this process."""
    with _lock:
        _servers[normalize_address(address)] = hook


def unregister_server(address: Any) -> None:
    """Forget the server at ``address`` (it stopped)."""
    with _lock:
        _servers.pop(normalize_address(address), None)


def server_hook(address: Any) -> ServerHook | None:
    """The server at ``address`` if it runs in this process."""
    if not _servers:
        return None
    return _servers.get(normalize_address(address))


class _Incoming(threading.local):
    channel: Any = None


#: ``incoming.channel`` is the client channel deserializing a reply on this thread, else None.
incoming = _Incoming()


#: Managers alive in this process, by server address: a proxy rebuilt here (from a reply, or a
#: child's arguments) keeps its manager alive, as the standard library's proxies do.
managers_by_address: weakref.WeakValueDictionary[Any, Any] = weakref.WeakValueDictionary()
