"""Addresses: the forms users write, and the one canonical form used everywhere inside.

Accepted (the stdlib's forms and URLs)::

    None                        a fresh unix socket in a private 0700 directory (the default)
    "/path/to/sock"             a unix socket (the stdlib's form)
    "unix:///path/to/sock"      the same as a URL
    ("127.0.0.1", 50000)        TCP (the stdlib's form); ("", 50000) and ("0.0.0.0", 50000)
                                bind every interface, as the stdlib's (the server logs a
                                warning: other machines can connect)
    "tcp://host:port"           the same as a URL

Canonical: a ``str`` path for unix sockets, a ``(host, port)`` tuple for TCP. A URL without a
host (``tcp://:50000``) binds the loopback interface.
"""

from __future__ import annotations

import os
import socket
from typing import Any, TypeGuard

__all__ = [
    "REDIS_SCHEMES",
    "Address",
    "describe",
    "family",
    "is_redis_url",
    "parse_address",
    "private_unix_path",
    "remove_stale_private_dirs",
]

Address = str | tuple[str, int]

#: The schemes of Redis URLs: their objects live in Redis (``procshare._redis``); the
#: canonical form of such an address is its URL without a password (``RedisURL.canonical``).
REDIS_SCHEMES = ("redis://", "rediss://")


def is_redis_url(address: object) -> TypeGuard[str]:
    """Whether ``address`` names a Redis server (``redis://`` or ``rediss://``)."""
    return isinstance(address, str) and address.startswith(REDIS_SCHEMES)


#: A unix socket path longer than this does not fit in ``sockaddr_un``.
_MAX_UNIX_PATH = 107


def parse_address(address: Any) -> Address | None:
    """Return the canonical form of ``address`` (``None`` stays ``None``: pick a default).

    Raises:
        ValueError: the address is malformed or uses an unknown scheme.
        TypeError: the address is of a type no form accepts.
    """
    if address is None:
        return None
    if isinstance(address, bytes):
        address = os.fsdecode(address)
    if isinstance(address, (tuple, list)):
        if len(address) != 2 or not isinstance(address[1], int):
            raise ValueError(f"a TCP address is (host, port), got {address!r}")
        host = address[0] if isinstance(address[0], str) else str(address[0])
        # kept as given: "" binds every interface, as the stdlib's (the server warns)
        return (host, address[1])
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, a (host, port) tuple or None, not {address!r}")
    if "://" not in address:
        return _unix_path(address)
    if address.startswith(REDIS_SCHEMES):
        from ._redis._url import parse_redis_url

        return parse_redis_url(address).canonical
    from urllib.parse import urlsplit  # (only for URLs: ~2 ms to import)

    url = urlsplit(address)
    if url.scheme == "unix":
        return _unix_path(url.netloc + url.path)
    if url.scheme in ("tcp", "tls"):  # (tls: the connection's business, see ``connect``)
        if url.port is None:
            raise ValueError(f"a {url.scheme}:// address needs a port: {address!r}")
        return (url.hostname or "127.0.0.1", url.port)
    raise ValueError(
        f"unknown address scheme {url.scheme!r} in {address!r} "
        "(use unix://, tcp://, tls://, redis:// or rediss://)"
    )


def parse_command_line_address(text: str) -> Address | None:
    """An address as typed on the command line: ``host:port`` means TCP there (a unix path
    needs ``unix://`` or a ``/``); everything else as ``parse_address``. (A string given to
    ``BaseManager(address=...)`` stays a unix path, as in the stdlib.)"""
    host, sep, port = text.rpartition(":")
    if sep and "/" not in text and port.isdigit():
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # ([::1]:5000)
        return (host or "127.0.0.1", int(port))
    return parse_address(text)


def _unix_path(path: str) -> str:
    if not path:
        raise ValueError("a unix socket address needs a path")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"unix socket path is longer than {_MAX_UNIX_PATH} bytes: {path!r}")
    return path


def family(address: Address) -> socket.AddressFamily:
    """The socket family of a canonical address."""
    return socket.AF_UNIX if isinstance(address, str) else socket.AF_INET


#: a private directory's name: ``procshare-<pid of its server>-<random>``
_PRIVATE_PREFIX = "procshare-"
_SOCKET_NAME = "server.sock"
#: what a server writes next to its socket so that tools can find it (``_discovery``)
CONNECTION_FILE = "server.json"


def private_dir() -> str:
    """A new directory only this user can enter (mode 0700), named after this process."""
    import tempfile  # (a server's need, not a client's: ~3 ms to import)

    remove_stale_private_dirs()
    return tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}{os.getpid()}-")


def private_unix_path() -> str:
    """A fresh socket path inside a new directory only this user can enter (mode 0700).

    The directory is named after the serving process (this one), so that a later server can
    tell it was left behind by one that was killed (``remove_stale_private_dirs``)."""
    return os.path.join(private_dir(), _SOCKET_NAME)


def remove_stale_private_dirs(parent: str | None = None) -> list[str]:
    """Remove the private socket directories of servers that are gone (killed with -9: one
    that exits removes its own), and return them.

    Only a directory that is this user's, named after a process that no longer exists, and
    holding nothing but its socket and its connection file is removed: another user's, a live
    server's, or one with anything else in it is left alone.
    """
    import tempfile

    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        pid_text, dash, _rest = entry.name.removeprefix(_PRIVATE_PREFIX).partition("-")
        if not (entry.name.startswith(_PRIVATE_PREFIX) and dash and pid_text.isdigit()):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != uid:
                continue
            if _process_exists(int(pid_text)):
                continue
            inside = os.listdir(entry.path)
            if not set(inside) <= {_SOCKET_NAME, CONNECTION_FILE}:
                continue
            for name in inside:
                os.unlink(os.path.join(entry.path, name))
            os.rmdir(entry.path)
        except OSError:  # (gone meanwhile, or not ours to remove)
            continue
        removed.append(entry.path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (exists, another user's)
        return True
    return True


def describe(address: Address) -> str:
    """The URL form of a canonical address, for messages and the CLI."""
    if isinstance(address, str):
        return f"unix://{address}"
    return f"tcp://{address[0]}:{address[1]}"
