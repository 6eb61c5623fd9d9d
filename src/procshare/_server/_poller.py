"""Readiness of the server's file descriptors: ``epoll`` on Linux, ``poll`` elsewhere.

The loop asks this on every turn, also while it busy-polls, so it is kept thin: the raw
``(fd, mask)`` pairs go to the loop, which knows its connections by fd. (``selectors`` costs a
dictionary walk and a key object per event on top: about 0.5 us per turn, measured.)
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable
from typing import Final

__all__ = ["Poller"]

_EPOLL: Final = hasattr(select, "epoll")
#: interest masks
IN: Final = select.EPOLLIN if _EPOLL else select.POLLIN
OUT: Final = select.EPOLLOUT if _EPOLL else select.POLLOUT


class Poller:
    """The set of descriptors the loop waits on. Opened by ``open()`` (a server that never
    serves holds no descriptor); safe to ``unregister`` and ``close`` when not open."""

    __slots__ = ("_impl",)

    def __init__(self) -> None:
        self._impl: select.epoll | select.poll | None = None

    def open(self) -> None:
        self._impl = select.epoll() if _EPOLL else select.poll()

    def register(self, fd: int, write: bool = False, read: bool = True) -> None:
        """Wait for ``fd`` to be readable (and writable, with ``write``; only writable, with
        ``read=False``: the pipe a connection's replies go into)."""
        if self._impl is None:
            raise RuntimeError("the server is not serving")
        self._impl.register(fd, (IN if read else 0) | (OUT if write else 0))

    def modify(self, fd: int, write: bool, read: bool = True) -> None:
        """Change what ``fd`` is waited for (readable, writable: see ``register``)."""
        if self._impl is not None:
            self._impl.modify(fd, (IN if read else 0) | (OUT if write else 0))

    def unregister(self, fd: int) -> None:
        if self._impl is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):  # already gone
                self._impl.unregister(fd)

    def waiter(self) -> Callable[[float], list[tuple[int, int]]]:
        """The function the loop waits with: given a timeout in seconds, it returns the ready
        ``(fd, mask)`` pairs (epoll's own method where there is epoll: the loop calls it on
        every turn, so no wrapper sits in between). Valid until ``close()``.

        A mask with anything but ``OUT`` (data, hang-up, error) means: read it; with ``OUT``:
        write to it.
        """
        impl = self._impl
        if impl is None:
            raise RuntimeError("the server is not serving")
        if _EPOLL:
            return impl.poll
        return lambda timeout: impl.poll(timeout * 1000.0)

    def ready_now(self) -> list[tuple[int, int]] | None:
        """The ready ``(fd, mask)`` pairs, without waiting, from any thread (``None`` where
        that is not possible: ``poll`` objects refuse a second thread, epoll does not)."""
        if not _EPOLL or self._impl is None:
            return None
        return self._impl.poll(0)

    def sleep(self, seconds: float) -> None:
        """Sleep until one of the descriptors is ready or ``seconds`` passed, at the
        microsecond (``waiter()`` sleeps whole milliseconds, rounding up)."""
        if self._impl is None:
            raise RuntimeError("the server is not serving")
        if _EPOLL:
            select.select([self._impl.fileno()], (), (), seconds)  # type: ignore[union-attr]
        else:
            time.sleep(seconds)  # (poll has no descriptor of its own; only where no epoll)

    def close(self) -> None:
        if _EPOLL and self._impl is not None:
            self._impl.close()  # type: ignore[union-attr]
        self._impl = None
