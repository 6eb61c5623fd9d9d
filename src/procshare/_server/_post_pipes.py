"""Post pipes: where a client on this machine writes its posts, read by the server in batches.

A post (``Post``: a dict's item set, a list's append, made without waiting for the answer) is
done for its sender once written. Written into the request pipe, each one woke the server: a
writer that posts a few thousand times a second cost a wake-up of the server each time
(~15-25 us of CPU on a busy machine, more than the post itself), and the posts of a writer
that never waits kept the server running beside it. So each such client gets a pipe of its
own for its posts, which the server waits on only while it is quiet:

* the first post after a quiet spell wakes the server, which reads what the pipe holds and
  then *rests* it: it stops waiting on it for ``POST_BATCH_DELAY``, and reads it again then
  (resting it again while it still finds posts; waiting on it again once it finds none). A
  steady writer costs one wake-up per ``POST_BATCH_DELAY``, whatever its pace.
* nothing that must see a post waits for that: the client's next frame on its request pipe
  after it posted is preceded by a ``Drain``, which makes the server apply its post pipe
  first; and a request of another process on an object somebody posts to catches up with
  its posters (``Core.catch_up``), which reads their post pipes too. A client that ends has
  its post pipe read before its session closes (what it held, its locks, is freed after).

What a post pipe holds is posts only. A client writes one whole where the pipe has room, and
otherwise waits for room as the server reads (the server waits on a pipe that holds part of a
post: ``keeps_up``). Not every post goes into the pipe: those a request follows at once go
with the requests (a Value's set bound to a lock, a Condition's ``notify``, a queue's ``put``,
a process's few posts between requests), and a run of posts goes into the pipe only once a
reply showed those sent along applied. Only the server's end of the pipe lives here; the
client's is ``Channel.post``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from .._protocol import ServerProtocol

__all__ = ["POST_BATCH_DELAY", "Resting", "keeps_up", "open_post_pipe", "read_post_pipe"]

#: how long a post pipe that held posts is not waited on (read again then): at most one
#: wake-up per pipe this often, and how late a post nobody asked about is applied at most
POST_BATCH_DELAY: Final = 0.001
#: bytes asked for per read: a pipe's default capacity, so that one read usually empties it
_READ_SIZE: Final = 65536
#: bytes read at once above which a pipe is not rested (``keeps_up``): half its capacity
_KEEP_UP_AFTER: Final = 32768

C = TypeVar("C")


def open_post_pipe() -> tuple[int, int]:
    """A new post pipe: ``(read end, write end)``, both non-blocking: the server's reads never
    wait, and a client finding it full waits for room in ``poll`` (``Channel._write_post``)."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    return read_end, write_end


def read_post_pipe(fd: int) -> bytes | None:
    """Everything the post pipe ``fd`` holds now (``b""``: nothing), or ``None`` once its
    client closed it. Every write to it was whole, so what is read ends at a frame's end
    (unless the pipe held more than one read takes: it is read until empty)."""
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            data = b""
        if not data:
            if not chunks:
                return None
            break
        chunks.append(data)
        if len(data) < _READ_SIZE:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def keeps_up(read: int, proto: ServerProtocol) -> bool:
    """Whether a post pipe from which ``read`` bytes were just read is to be waited on, not
    rested: its client writes faster than a rest lets through (a large share of the pipe's
    capacity within one), or is in the middle of a post larger than the pipe, whose writer
    waits for room. (A writer of small posts at any pace fills a fraction of it.)"""
    return read >= _KEEP_UP_AFTER or proto.has_posts_buffered()


class Resting(Generic[C]):
    """One reactor's post pipes it does not wait on for now (see the module), by descriptor,
    and when it reads them again."""

    __slots__ = ("pipes", "until")

    def __init__(self) -> None:
        self.pipes: dict[int, C] = {}
        #: when they are read again (``inf``: none rests)
        self.until = float("inf")

    def add(self, fd: int, conn: C, now: float) -> None:
        """Rest ``fd`` (of ``conn``) until the next reading, or for ``POST_BATCH_DELAY``."""
        self.pipes[fd] = conn
        if self.until == float("inf"):
            self.until = now + POST_BATCH_DELAY

    def discard(self, fd: int) -> None:
        self.pipes.pop(fd, None)
        if not self.pipes:
            self.until = float("inf")

    def take_due(self, now: float) -> list[tuple[int, C]]:
        """The pipes to read again now (they rest no more: rest those that held posts
        again with ``add``)."""
        if now < self.until:
            return []
        due = list(self.pipes.items())
        self.pipes.clear()
        self.until = float("inf")
        return due
