"""Locks lent to the process that keeps taking them: their page, and the rules.

A Lock or RLock that one process takes again and again, and nobody else does, costs that
process a round trip per acquire and per release: on a busy machine each is a wake-up of the
server and a turn on a CPU, which is what makes a lock round slower than the stdlib's there.
So the server *lends* such a lock to its process: the process's threads then take and free it
in shared memory (a few memory operations, no message), until someone else asks for it and
the server *recalls* it. (A lock biased to one thread is the same idea inside a JVM.)

**The page** is a ``memfd`` that the server shares with the clients on its machine, which map
it read-write (they open it as they open the lease page, ``_leases``). It has ``SLOTS`` slots
of four words: ``HOLDER`` (the owner tag of the thread that holds the lock, 0 when free),
``COUNT`` (an RLock's depth, for ``stats()``), ``RECALL`` (set by the server) and ``NUMBER``
(the loan's number: a client checks it before it writes, and a slot is lent again only once
its borrower gave it back).

**The handshake** is Dekker's. A borrower takes the lock by storing ``HOLDER`` and then loading
``RECALL``; the server recalls it by storing ``RECALL`` and then loading ``HOLDER``; each side
puts a full fence between its store and its load. So at least one of them sees the other's
store: the borrower sees the recall and backs out, or the server sees the holder and counts
the lock as held by it until it gives the loan back. x86 may let a load pass an earlier store
without a locked instruction between them; Python reaches one through any ``threading.Lock``
acquire or release (CPython's locks, semaphores and mutexes are taken with ``lock cmpxchg``
and freed with ``lock xadd`` or ``lock cmpxchg``), which is what :func:`fence` does. Other
processors order less, so locks are lent on x86 only (``lending_here``).

**The rules** that keep it sound:

* The server lends at an acquire it grants at once, on a lock nobody waits for, when the
  same session took the lock the time before too, to a client that asked (it mapped the
  page), and never a lock a Condition uses.
* Before any other use of a lent lock (anyone's acquire, release, a Condition made over it, a
  session that ends, ...) the server recalls it; from then on the server decides, as for a
  lock never lent. A lock has one loan out at most.
* A borrower writes its slot only under its book's guard, and only while the loan is in its
  book. Once it sees a recall it takes the loan out of its book and gives it back (``#loan``,
  with what it knows: the holder and the count), before anything else on that lock.
* The server frees a slot when its borrower gave it back, when the borrower's session ends
  (a lock it held is freed as any lock of a process that ended), or when the lock is disposed
  of (nobody can then touch it).
"""

from __future__ import annotations

import os
import platform
import threading
from typing import TYPE_CHECKING, Final

from ._pages import SharedPage

if TYPE_CHECKING:
    from ._server._objects import Lock
    from ._server._session import Session

__all__ = [
    "COUNT",
    "HEADER_WORDS",
    "HOLDER",
    "MAX_LOANS",
    "NUMBER",
    "PAGE_BYTES",
    "RECALL",
    "SLOTS",
    "SLOT_WORDS",
    "Loan",
    "LoanPage",
    "fence",
    "lending_here",
    "magic_for",
]

#: Slots in a page (one per loan out at a time).
SLOTS: Final = 8192
#: 8-byte words per slot, and each word's index within its slot.
SLOT_WORDS: Final = 4
HOLDER: Final = 0
COUNT: Final = 1
RECALL: Final = 2
NUMBER: Final = 3
#: 8-byte words before the slots: the magic number (b"psloans\0" + the server instance)
HEADER_WORDS: Final = 2
PAGE_BYTES: Final = (HEADER_WORDS + SLOTS * SLOT_WORDS) * 8
#: The most loans one session has out at a time.
MAX_LOANS: Final = 64

_fence_lock = threading.Lock()
_acquire_fence = _fence_lock.acquire
_release_fence = _fence_lock.release


def fence() -> None:
    """A full memory fence on x86 (see the module): a locked instruction each way."""
    _acquire_fence()
    _release_fence()


def lending_here() -> bool:
    """Whether locks may be lent on this machine (x86, memfds: see the module)."""
    machine = platform.machine().lower()
    return hasattr(os, "memfd_create") and machine in ("x86_64", "amd64", "i386", "i686")


def magic_for(instance: str) -> bytes:
    """The page's first 16 bytes for the server ``instance`` (a hex string of 8 bytes)."""
    return b"psloans\0" + bytes.fromhex(instance)[:8].ljust(8, b"\0")


class Loan:
    """One loan out: of ``lock``, to ``session``, in ``slot`` of ``page``."""

    __slots__ = ("ended", "lock", "number", "owner", "page", "session", "slot")

    def __init__(self, page: LoanPage, lock: Lock, session: Session, slot: int, number: int):
        self.page = page
        self.lock = lock
        self.session = session
        self.slot = slot
        self.number = number
        self.ended = False
        #: the holder the recall found (0: it was free)
        self.owner = 0

    def recall(self) -> tuple[int, int]:
        """Ask for it back: ``(holder, count)`` as the borrower's slot shows them now."""
        self.owner, count = self.page.recall(self.slot)
        return self.owner, count

    def holder(self) -> int:
        """The owner tag of its holder now (0: free); racy, for a look only."""
        return self.page.word(self.slot, HOLDER)

    def count(self) -> int:
        return self.page.word(self.slot, COUNT)

    def end(self) -> None:
        """Free its slot (its borrower gave it back, or will never touch it again)."""
        if self.ended:
            return
        self.ended = True
        self.page.free(self.slot)
        self.session.loans.pop(self.number, None)


class LoanPage(SharedPage):
    """The server's side of the page: slots to lend."""

    def __init__(self, instance: str) -> None:
        super().__init__("procshare-loans", PAGE_BYTES, magic_for(instance))
        self._free = list(range(SLOTS - 1, -1, -1))
        self._numbers = 0

    @classmethod
    def create(cls, instance: str) -> LoanPage | None:
        """A new page, or ``None`` where locks cannot be lent here."""
        if not lending_here():
            return None
        try:
            return cls(instance)
        except OSError:
            return None

    def lend(self, lock: Lock, session: Session, owner: int, count: int) -> Loan | None:
        """A loan of ``lock`` to ``session``, held by ``owner`` ``count`` times; ``None`` when
        every slot is out."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._numbers += 1
        base = HEADER_WORDS + slot * SLOT_WORDS
        words = self.words
        words[base + HOLDER] = owner
        words[base + COUNT] = count
        words[base + RECALL] = 0
        words[base + NUMBER] = self._numbers
        loan = Loan(self, lock, session, slot, self._numbers)
        session.loans[loan.number] = loan
        return loan

    def recall(self, slot: int) -> tuple[int, int]:
        base = HEADER_WORDS + slot * SLOT_WORDS
        words = self.words
        words[base + RECALL] = 1
        fence()
        return words[base + HOLDER], words[base + COUNT]

    def word(self, slot: int, index: int) -> int:
        return self.words[HEADER_WORDS + slot * SLOT_WORDS + index]

    def free(self, slot: int) -> None:
        base = HEADER_WORDS + slot * SLOT_WORDS
        self.words[base : base + SLOT_WORDS] = memoryview(bytes(SLOT_WORDS * 8)).cast("Q")
        self._free.append(slot)
