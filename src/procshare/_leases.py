"""Leases: values a process may read again without asking the server, while they stay true.

Two ways to get one:

* **with a lock.** A process that takes a shared lock usually reads the same few values right
  after it (``with lock: v.value += 1``). Its lock proxy remembers what was read while it held
  the lock, and its next acquire asks for those reads to be made at the moment the lock is
  granted and sent with the grant: one round trip instead of two.
* **with a read** (a ``LeasedRead`` request). A quick pure read (``d[k]``, ``v.value``, ``len(d)``,
  ``event.is_set()``, ...) of a built-in kind comes back with a lease on its value, and
  reading the same thing again is answered locally until the object changes: a polling loop
  costs no round trips while nothing happens.

A lease may answer a read only if the object has not changed since it was granted.

Validity travels through shared memory, not messages. Each object has a counter, its *epoch*,
in a page that clients map read-only (objects share one when their ids collide modulo
``SLOTS``). The server bumps an object's epoch when it changes while a lease on it may be out
(whoever changed it, the lease's holder included, through any method). A grant carries the
epoch it was made at; a lease answers a read only while the page still shows that epoch. So a
change ends the leases on that object and no others, and freeing a lock ends none: a lease
does not depend on any lock. The bump is a store made before the server replies to the change
that caused it. So a process that learns of the change (from the reply, or from anything that
happened after it) and then tells the holder cannot get there before the store: the holder's
read never misses a change that finished before it began, as a round trip would not. A pushed
message could not promise that: it may wait in the server's output queue behind other data.

Only clients on the same machine get leases: the page is a ``memfd`` that they open through
``/proc/<server pid>/fd`` over a unix socket, and they check its magic number. Everyone else
reads and acquires as before. A server that died leaves its page mapped, still showing the
last epochs: so a client answers from a lease only while its connection shows nothing to read
(no end-of-file), and a read made after the server went away raises as a round trip would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from ._client._frozen import ATOMS
from ._kinds import KINDS
from ._pages import SharedPage

__all__ = [
    "BOUND",
    "HEADER_WORDS",
    "LEASABLE",
    "LEASED_COPIES",
    "LEASING_LOCKS",
    "MAX_LEASES",
    "MAX_READS",
    "PAGE_WORDS",
    "SLOTS",
    "LeasePage",
    "LeaseRequest",
    "leasable_args",
    "leasable_value",
    "magic_for",
    "parse_reads",
    "slot_of",
    "waiting_of",
]

#: Epoch counters in a page (512 KiB); objects share one when their ids collide modulo this (a
#: shared counter only bumps more often: a lease ends that could have stayed, never the reverse)
SLOTS: Final = 65536
#: 8-byte words before the counters: the magic number (b"psleases" + the server instance)
HEADER_WORDS: Final = 2
#: The most reads one grant carries.
MAX_READS: Final = 8
#: Typeids whose acquire may bring leased reads with the grant (the server confirms the kind).
LEASING_LOCKS: Final = frozenset({"Lock", "RLock"})
#: The most values a client keeps leased (past it, it starts again from none).
MAX_LEASES: Final = 4096
#: Argument types a leased read may take: hashable, and no two of them compare equal across
#: types (``1 == 1.0 == True``: ``d.get(k, 0)`` must not answer ``d.get(k, 0.0)``).
_KEY_ATOMS: Final = frozenset({int, str, bytes, type(None)})
#: The reads each kind may lease: its cacheable (pure) reads that are also quick (a whole copy
#: made at every grant would cost more than the round trip it saves). Server and client agree.
LEASABLE: Final = {
    name: frozenset(m for m, spec in kind.methods.items() if spec.cacheable)
    & {"get", "__getitem__", "__contains__", "__len__", "__getattribute__"}
    | ({"is_set"} if name == "Event" else set())  # (its flag changes only by set and clear)
    for name, kind in KINDS.items()
}
#: Kinds whose whole ``copy()`` may be leased, to answer a scan of its keys (``_client._scans``):
#: the copy is never handed out, only its immutable values are.
LEASED_COPIES: Final = frozenset({"dict"})
#: A tuple or frozenset is leased if it is this small and nested this little at most (the check
#: runs at every leased read on the server: it must stay cheap).
_TUPLE_ITEMS: Final = 16
_TUPLE_DEPTH: Final = 2


def leasable_value(value: Any) -> bool:
    """Whether ``value`` may be leased: immutable all the way down, so that one object may
    answer several reads (an atom, or a small tuple or frozenset of them)."""
    kind = type(value)
    if kind in ATOMS:
        return True
    return (kind is tuple or kind is frozenset) and _plain_within(value, _TUPLE_DEPTH)


def _plain_within(items: Any, depth: int) -> bool:
    if len(items) > _TUPLE_ITEMS:
        return False
    for item in items:
        kind = type(item)
        if kind in ATOMS:
            continue
        if depth and (kind is tuple or kind is frozenset) and _plain_within(item, depth - 1):
            continue
        return False
    return True


#: 8-byte words in the page: the header, the epochs, then one word per slot saying whether a
#: queue of that slot has a getter parked (``waiting_of``)
PAGE_WORDS: Final = HEADER_WORDS + 2 * SLOTS


def slot_of(obj_id: int) -> int:
    """The counter (8-byte word index in the page) of object ``obj_id``."""
    return HEADER_WORDS + obj_id % SLOTS


def waiting_of(obj_id: int) -> int:
    """The word (index in the page) saying whether queue ``obj_id`` has a getter parked: its
    puts are then not posted (a post is applied once its sender sleeps, which the getter
    would wait for). Objects sharing a slot share it (a queue may then see another's flag:
    set, a put waits for its answer where it need not; cleared, one may be posted)."""
    return HEADER_WORDS + SLOTS + obj_id % SLOTS


def magic_for(instance: str) -> bytes:
    """The page's first 16 bytes for the server ``instance`` (a hex string of 8 bytes)."""
    return b"psleases" + bytes.fromhex(instance)[:8].ljust(8, b"\0")


class LeasePage(SharedPage):
    """The server's side of the page: one writable epoch counter per object slot (and a
    queue's "a getter is parked" word, ``waiting_of``)."""

    def __init__(self, instance: str) -> None:
        super().__init__("procshare-leases", PAGE_WORDS * 8, magic_for(instance))

    @classmethod
    def create(cls, instance: str) -> LeasePage | None:
        """A new page, or ``None`` where memfds are not available (leases are then off)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls(instance)
        except OSError:
            return None

    def epoch(self, slot: int) -> int:
        return self.words[slot]

    def flag_waiting(self, obj_id: int) -> Callable[[bool], None]:
        """What queue ``obj_id`` calls to say whether a getter is parked (``waiting_of``)."""
        index = waiting_of(obj_id)
        words = self.words

        def waiting(on: bool) -> None:
            words[index] = 1 if on else 0

        return waiting

    def bump(self, slot: int) -> None:
        """End every lease on the objects of ``slot`` (one aligned 8-byte store)."""
        self.words[slot] = (self.words[slot] + 1) & 0xFFFF_FFFF_FFFF_FFFF


#: A ``Call.posting`` answer's ``registered``: the caller may post this method's calls, but
#: only while it holds the lock it holds now (``_server._table.Entry.bound``).
BOUND: Final = "bound"
#: ... and: the caller may post this method's calls, sent along with its requests, not into
#: its post pipe (``_server/_post_pipes``): a Condition's ``notify`` by its lock's holder, whose
#: release follows at once and brings it along; a queue's ``put``, which a get often follows
#: at once (a post into a quiet pipe would wake the server first, and a get after it would
#: apply the pipe first: both cost a Queue round ~15% with a CPU busy)
ALONG: Final = "along"


class LeaseRequest:
    """What a leasing acquire answers once granted: the core makes the reads then (``lock``,
    the lock being granted, and ``session``, to whom: see ``Entry.bound``)."""

    __slots__ = ("lock", "reads", "session")

    def __init__(
        self,
        reads: tuple[tuple[int, str, tuple[Any, ...]], ...],
        lock: Any = None,
        session: Any = None,
    ) -> None:
        self.reads = reads
        self.lock = lock
        self.session = session


def parse_reads(reads: Any) -> tuple[tuple[int, str, tuple[Any, ...]], ...]:
    """Check a leasing acquire's reads: ``((obj_id, method, args), ...)``; raise TypeError."""
    if type(reads) is not tuple or len(reads) > MAX_READS:
        raise TypeError(f"reads to lease must be a tuple of at most {MAX_READS}")
    for read in reads:
        if (
            type(read) is not tuple
            or len(read) != 3
            or type(read[0]) is not int
            or type(read[1]) is not str
            or type(read[2]) is not tuple
            or not leasable_args(read[2])
        ):
            raise TypeError(f"not a read to lease: {read!r}")
    return reads


def leasable_args(args: tuple[Any, ...]) -> bool:
    """Whether a read with these arguments may be leased (a few hashable atoms)."""
    return len(args) <= 2 and all(type(a) in _KEY_ATOMS for a in args)
