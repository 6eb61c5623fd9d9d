"""Pages of memory a server shares with the clients on its machine (``_leases``, ``_loans``).

A page is a ``memfd``: the server keeps its descriptor open, and a client opens it through
``/proc/<server pid>/fd/<fd>`` (the path the server sends with its handshake) and maps it. Its
first 16 bytes are a magic number naming the server instance: a path a client is given may
name another file here (the server of another machine, or of another pid namespace), and a
page whose magic is not the one expected is not used.
"""

from __future__ import annotations

import contextlib
import mmap
import os

__all__ = ["SharedPage", "map_page"]


class SharedPage:
    """The server's side of a page: its mapping as 8-byte ``words`` (each read and written
    in one aligned access), and the ``path`` clients open it at, valid while the page stays
    open (``close``)."""

    def __init__(self, name: str, size: int, magic: bytes) -> None:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._map[: len(magic)] = magic
        self.words = memoryview(self._map).cast("Q")
        self.path = f"/proc/{os.getpid()}/fd/{fd}"

    def close(self) -> None:
        self.words.release()
        self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def map_page(path: str, size: int, magic: bytes, *, writable: bool) -> mmap.mmap | None:
    """Map the page at ``path`` (read-only unless ``writable``), or ``None`` if it cannot be
    opened or is not the page expected (its magic number differs)."""
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mapped = mmap.mmap(fd, size, prot=prot)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    if mapped[: len(magic)] != magic:
        mapped.close()
        return None
    return mapped
