"""Addresses: the forms users write, and the one canonical form used everywhere inside.

Accepted (the stdlib's forms and URLs)::

    None                        a fresh unix socket in a private 0700 directory (the default)
    "/path/to/sock"             a unix socket (the stdlib's form)
    "unix:///path/to/sock"      the same as a URL
    ("127.0.0.1", 50000)        TCP (the stdlib's form); ("", 0) binds loopback, any port;
                                ("0.0.0.0", 50000) is needed to accept other machines
    "tcp://host:port"           the same as a URL

Canonical: a ``str`` path for unix sockets, a ``(host, port)`` tuple for TCP. TCP binds the
loopback interface unless a host is given explicitly: sharing with other machines is a choice.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Address", "describe", "family", "parse_address", "private_unix_path"]

Address = str | tuple[str, int]

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
        # "" means "any interface" to the stdlib; we bind loopback unless told "0.0.0.0".
        return (host or "127.0.0.1", address[1])
    if not isinstance(address, str):
        raise TypeError(f"address must be a str, a (host, port) tuple or None, not {address!r}")
    if "://" not in address:
        return _unix_path(address)
    url = urlsplit(address)
    if url.scheme == "unix":
        return _unix_path(url.netloc + url.path)
    if url.scheme == "tcp":
        if url.port is None:
            raise ValueError(f"a tcp:// address needs a port: {address!r}")
        return (url.hostname or "127.0.0.1", url.port)
    raise ValueError(
        f"unknown address scheme {url.scheme!r} in {address!r} (use unix:// or tcp://)"
    )


def _unix_path(path: str) -> str:
    if not path:
        raise ValueError("a unix socket address needs a path")
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ValueError(f"unix socket path is longer than {_MAX_UNIX_PATH} bytes: {path!r}")
    return path


def family(address: Address) -> socket.AddressFamily:
    """The socket family of a canonical address."""
    return socket.AF_UNIX if isinstance(address, str) else socket.AF_INET


def private_unix_path() -> str:
    """A fresh socket path inside a new directory only this user can enter (mode 0700)."""
    directory = tempfile.mkdtemp(prefix="procshare-")  # mkdtemp creates it with mode 0700
    return os.path.join(directory, "server.sock")


def describe(address: Address) -> str:
    """The URL form of a canonical address, for messages and the CLI."""
    if isinstance(address, str):
        return f"unix://{address}"
    return f"tcp://{address[0]}:{address[1]}"
