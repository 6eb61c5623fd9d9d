"""A dict read key by key after ``keys()`` (``dict(proxy)``) is read from one leased copy.

``dict(proxy)`` is how Python copies a mapping that is not a dict: ``keys()``, then ``d[k]`` for
every key in that order, a round trip each (10,001 of them for 10,000 items, with the standard
library's Manager as with ours, before this). ``{k: d[k] for k in d.keys()}`` does the same. A
dict proxy notices it: after ``keys()`` returned at least ``SCAN_MIN`` keys and the next
``SCAN_AFTER`` item reads asked for the first keys of that list, in its order, it asks the
server for a copy of the whole dict, leased as a quick read is (``.._leases``), and answers the
rest of the scan from it.

What keeps every answer right:

* the copy answers only while the lease page shows the epoch it was granted at (any change of
  the dict, by anyone, bumps it before the change's reply) and the connection is up
  (``LeaseBook.vouched``): the rules of every lease;
* it answers only for a key it holds whose value is immutable all the way down
  (``leasable_value``): a mutable value would be shared between two answers, where the server
  sends a fresh one each time; such a read, or a missing key, goes to the server;
* the server declines where it grants no lease (another process posts to the dict, so a post
  could be on its way; leases off); the proxy then reads plainly to the end of the scan.

What it costs: the copy is sent once (the bench's "dict copy" row), and the proxy keeps it until
the scan has read every key, the dict changes or ``keys()`` is read again. A scan that stops
after its first few keys sent the copy for nothing; ``SCAN_AFTER`` reads in order first make
that rare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._leases import leasable_value, slot_of
from ._leases import MISS

if TYPE_CHECKING:
    from ._leases import LeaseBook

__all__ = ["SCAN_AFTER", "SCAN_MIN", "Scan"]

#: ``keys()`` shorter than this starts no scan: its reads are few, a copy would save little.
SCAN_MIN: Final = 32
#: Item reads in ``keys()``'s order before the copy is asked for.
SCAN_AFTER: Final = 4


class Scan:
    """The keys a dict proxy's ``keys()`` returned, how many of them were read in order since,
    and, once asked for, the leased copy that answers the rest (``copy``, valid while the
    page's word ``slot`` shows ``epoch``).

    Threads may share the proxy: they may step ``pos`` over each other, which only changes
    when the copy is asked for; what the copy answers never depends on it."""

    __slots__ = ("book", "copy", "epoch", "keys", "pid", "pos", "slot")

    def __init__(self, keys: list[Any], pid: int) -> None:
        self.keys = keys
        self.pid = pid
        self.pos = 0
        self.copy: dict[Any, Any] | None = None
        self.book: LeaseBook | None = None
        self.slot = 0
        self.epoch = 0

    def step(self, key: Any) -> bool:
        """Whether ``key`` is the scan's next key (stepping past it if so). Keys of another
        type never match (``1 == 1.0``: a scan is told by the very keys ``keys()`` gave)."""
        pos = self.pos
        keys = self.keys
        if pos >= len(keys):
            return False
        expected = keys[pos]
        if expected is key or (type(expected) is type(key) and expected == key):
            self.pos = pos + 1
            return True
        return False

    @property
    def done(self) -> bool:
        """Whether every key of ``keys()`` was read in order."""
        return self.pos >= len(self.keys)

    def hold(self, book: LeaseBook, obj_id: int, reply: Any) -> bool:
        """Keep the copy a ``LeasedRead`` of ``copy`` brought, ``(epoch, dict)``; whether it
        came with a lease (``None``: declined; ``(None, dict)``: no lease granted)."""
        if type(reply) is not tuple or len(reply) != 2:
            return False
        epoch, copy = reply
        if type(epoch) is not int or type(copy) is not dict:
            return False
        self.book, self.slot, self.epoch, self.copy = book, slot_of(obj_id), epoch, copy
        return True

    def valid(self) -> bool:
        """Whether the copy is held and still answers: the dict has not changed since, and
        the connection is up."""
        book = self.book
        return (
            self.copy is not None
            and book is not None
            and book.epochs[self.slot] == self.epoch
            and book.vouched()
        )

    def read(self, key: Any) -> Any:
        """``copy[key]`` where the copy may answer it (``valid`` checked first); else ``MISS``:
        ask the server (a missing key, a mutable value, an unhashable key)."""
        copy = self.copy
        if copy is None:
            return MISS
        try:
            value = copy.get(key, MISS)
        except TypeError:  # (unhashable: the server raises it, as the stdlib's does)
            return MISS
        if value is MISS or not leasable_value(value):
            return MISS
        return value
