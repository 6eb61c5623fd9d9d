"""The server's side of leases (``_leases``): which reads may be leased, and their epochs.

A value read by a local client may be *leased*: the client keeps it and reads it again without
a round trip for as long as the object's epoch, in the shared lease page, stays the same. Here
the server notes which objects have leases out, bumps an object's epoch at its next change
(before any reply that could tell of the change), and makes the reads a leasing lock acquire
asked for at the moment it is granted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._leases import LEASABLE, LEASED_COPIES, LeasePage, LeaseRequest, leasable_value, slot_of

if TYPE_CHECKING:
    from ._session import Session
    from ._table import Entry

__all__ = ["Leasing"]


class Leasing:
    """The leases on one object table (``objects``); ``count(counter)`` is the core's."""

    def __init__(self, objects: dict[int, Entry], count: Callable[[str], None]) -> None:
        self.objects = objects
        self._count = count
        #: the objects' lease epochs, shared with local clients (set by the transport for unix
        #: sockets); ``None``: leases are off
        self.page: LeasePage | None = None

    @staticmethod
    def leasable(entry: Entry, method: str, copies: bool = False) -> bool:
        """Whether ``method`` is a read of ``entry`` that may be leased: its kind's table
        (``LEASABLE``). With ``copies``, a dict's ``copy`` may be leased too
        (``LEASED_COPIES``: it answers a scan, ``_client._scans``). Whether it may be leased
        *now* is ``unposted``'s question."""
        spec = entry.spec
        if spec is None or entry.handlers is None:
            return False
        return method in LEASABLE[spec.name] or (
            copies and method == "copy" and spec.name in LEASED_COPIES
        )

    @staticmethod
    def unposted(entry: Entry, session: Session | None = None) -> bool:
        """Whether nobody posts to ``entry`` (a lease would answer while a post is on its
        way), or ``session`` alone does, and it reads a Value (``self_leased``)."""
        return entry.posters is None or (
            session is not None and Leasing._values_only_poster(entry, session)
        )

    @staticmethod
    def self_leased(entry: Entry, session: Session, method: str) -> bool:
        """Whether ``session``'s post of ``method`` leaves the leases on ``entry`` as they are:
        it is a Value's ``set`` by its only poster, the only process a lease on it can have
        been granted to since (``leasable``), which keeps its lease current with what it
        posts (``LeaseBook.wrote``)."""
        return method == "set" and Leasing._values_only_poster(entry, session)

    @staticmethod
    def _values_only_poster(entry: Entry, session: Session) -> bool:
        """Whether ``entry`` is a Value that ``session``, and nobody else, posts to."""
        posters = entry.posters
        return (
            posters is not None
            and len(posters) == 1
            and session in posters
            and entry.spec is not None
            and entry.spec.name == "Value"
        )

    def epoch(self, entry: Entry, value: Any, whole: bool = False) -> int | None:
        """Lease ``value``, just read from ``entry``: note that the entry's next change must
        bump its epoch, and return the epoch the lease is valid at; ``None`` where it cannot
        be leased (leases off, or a value that is not immutable all the way down, unless it is
        a ``whole`` copy: its holder checks each value it answers with)."""
        page = self.page
        if page is None or not (whole or leasable_value(value)):
            return None
        entry.leased = True
        self._count("leased")
        return page.epoch(slot_of(entry.id))

    def end(self, entry: Entry) -> None:
        """End every lease on ``entry``: bump its epoch (before any reply that could tell of
        the change)."""
        entry.leased = False
        if self.page is not None:
            self.page.bump(slot_of(entry.id))
            self._count("lease ends")

    def reads_at_grant(self, request: LeaseRequest) -> tuple[bool, dict[int, tuple[int, Any]]]:
        """The reply to a granted leasing acquire: ``(True, {index: (epoch, value)})``, the
        reads it asked for made now, each leased until its object changes.

        A Value whose other posters post only while they hold this lock (``Entry.bound``)
        is leased too: none of them holds it now, and none can post before its own grant,
        which ends this lease first (``Lock.bound_leases``)."""
        values: dict[int, tuple[int, Any]] = {}
        lock, grantee = request.lock, request.session
        for index, (obj_id, method, args) in enumerate(request.reads):
            entry = self.objects.get(obj_id)
            if entry is None or not self.leasable(entry, method):
                continue
            bound = not self.unposted(entry, grantee)
            if bound and not self.posted_under(entry, lock, grantee):
                continue
            fn, takes_ctx = entry.handlers[method]  # type: ignore[index]
            if takes_ctx:
                continue
            try:
                value = fn(entry.referent, *args)
            except BaseException:  # noqa: S112, BLE001 - not leased: the holder's read raises it
                continue
            epoch = self.epoch(entry, value)
            if epoch is not None:
                values[index] = (epoch, value)
                if bound:
                    if lock.bound_leases is None:
                        lock.bound_leases = []
                    if entry not in lock.bound_leases:
                        lock.bound_leases.append(entry)
        return (True, values)

    @staticmethod
    def posted_under(entry: Entry, lock: Any, grantee: Any) -> bool:
        """Whether every poster of ``entry`` but ``grantee`` posts only while it holds
        ``lock`` (which is granted to ``grantee``), and ``lock`` was never released by a
        process that did not hold it (``Lock.crossed``): then none of them can have a post to
        ``entry`` on its way (each wrote its posts before its release of the lock, read before
        that grant). Also ``Core``'s rule for a post that needs no catch-up."""
        bound, posters = entry.bound, entry.posters
        if lock is None or bound is None or posters is None or lock.crossed:
            return False
        return all(p is grantee or bound.get(p) is lock for p in posters)
