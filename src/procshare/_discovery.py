"""Connection files: how ``procshare inspect`` and ``top`` find the servers of this user.

Every server (embedded ``Manager()`` or ``procshare serve``) writes ``server.json`` (address,
pid, authkey, serializer, version, start time) into a private directory of its own, mode
0700, the file mode 0600: the directory of its socket, or for a TCP server one made for it.
It removes both when it stops; a server killed with -9 leaves them, and the next server
removes them (``_address.remove_stale_private_dirs``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from ._address import (
    _PRIVATE_PREFIX,
    CONNECTION_FILE,
    Address,
    _process_exists,
    describe,
    parse_command_line_address,
    private_dir,
)

__all__ = ["ConnectionFile", "running_servers"]


class ConnectionFile:
    """The connection file of one server, written at once; ``remove()`` when it stops."""

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        serializer: str,
        directory: str | None,
        tls: bool = False,
    ) -> None:
        from . import __version__

        #: the directory is ours to remove too when we made it (a TCP server's)
        self._made_dir = directory is None
        self.directory = private_dir() if directory is None else directory
        self.path = os.path.join(self.directory, CONNECTION_FILE)
        content = {
            "address": url_of(address, tls),
            "pid": os.getpid(),
            "authkey": authkey.hex(),
            "serializer": serializer,
            "version": __version__,
            "started": time.time(),
        }
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        if self._made_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)


def url_of(address: Address, tls: bool = False) -> str:
    """The URL clients use for ``address`` (``tls://`` for a server that speaks TLS)."""
    url = describe(address)
    return "tls://" + url.removeprefix("tcp://") if tls and url.startswith("tcp://") else url


def running_servers(parent: str | None = None) -> list[dict[str, Any]]:
    """The servers of this user that are running, from their connection files, oldest first:
    each ``{"address", "pid", "authkey" (bytes), "serializer", "version", "started"}``."""
    import tempfile

    parent = parent or tempfile.gettempdir()
    found: list[dict[str, Any]] = []
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if not entry.name.startswith(_PRIVATE_PREFIX):
                continue
            path = os.path.join(entry.path, CONNECTION_FILE)
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                with open(path) as f:
                    info = json.load(f)
                info["authkey"] = bytes.fromhex(info["authkey"])
                pid = int(info["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not one, or half written
            if _process_exists(pid):
                found.append(info)
    return sorted(found, key=lambda info: float(info.get("started", 0)))


def find_server(pid: int) -> dict[str, Any] | None:
    """The running server of this user with that pid, if any."""
    for info in running_servers():
        if int(info["pid"]) == pid:
            return info
    return None


def address_of(info: dict[str, Any]) -> Address:
    address = parse_command_line_address(str(info["address"]))
    assert address is not None
    return address
