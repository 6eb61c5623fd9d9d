"""The client's side of leases (reads granted with a lock; the rules are in ``.._leases``).

A channel keeps a :class:`LeaseBook`. While a lock taken through it is held, the book records
the quick pure reads the process makes (up to ``MAX_READS``); the lock proxy keeps that list
when it releases, and asks for the same reads with its next acquire. The values that come back
with the grant answer those reads for as long as the page shows the grant's epoch.

Nothing here can make a read wrong: a lease answers only while the server has bumped nothing
since the grant, and anything else goes to the server. What is learned only decides what is
asked for next time (a read not made again costs the server one quick read at the grant).
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Final

from .._leases import HEADER_WORDS, LEASABLE, MAX_READS, SLOTS, leasable_args, magic_for

__all__ = ["MISS", "LeaseBook", "LeaseView", "Read"]

#: One read: (object id, method, arguments).
Read = tuple[int, str, tuple[Any, ...]]

#: What :meth:`LeaseBook.read` returns when no lease answers.
MISS: Final = object()


class LeaseView:
    """A read-only view of the server's page: the epoch of this connection's session."""

    __slots__ = ("_epochs", "_map", "slot")

    def __init__(self, mapped: mmap.mmap, slot: int) -> None:
        self._map = mapped
        self._epochs = memoryview(mapped).cast("Q")
        self.slot = slot

    @classmethod
    def open(cls, info: dict[str, Any]) -> LeaseView | None:
        """Map the page a server's handshake ``info`` offers, or ``None`` (no leases).

        The magic number proves that it is this server's page: the path of another machine's
        server, or of one in another pid namespace, may name some other file here.
        """
        offer, instance = info.get("leases"), info.get("instance")
        if not isinstance(offer, (tuple, list)) or len(offer) != 2 or type(instance) is not str:
            return None
        path, slot = offer
        try:
            magic = magic_for(instance)
            if type(path) is not str or type(slot) is not int:
                return None
            if not HEADER_WORDS <= slot < HEADER_WORDS + SLOTS:
                return None
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                mapped = mmap.mmap(fd, (HEADER_WORDS + SLOTS) * 8, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        if mapped[:16] != magic:
            mapped.close()
            return None
        return cls(mapped, slot)

    def epoch(self) -> int:
        return self._epochs[self.slot]


class LeaseBook:
    """A channel's leases and the reads recorded while one of its locks is held."""

    __slots__ = ("_leases", "_lock", "recording", "view")

    def __init__(self, view: LeaseView) -> None:
        self.view = view
        #: reads made since a lock was granted, or None when no lock is held
        self.recording: list[Read] | None = None
        self._lock = 0  # the lock whose grant started the recording
        # (epoch of the grant, values by read): one attribute, so that a thread reading
        # while another is granted sees the values with their own epoch
        self._leases: tuple[int, dict[Read, Any]] = (-1, {})

    def granted(self, lock_id: int, asked: tuple[Read, ...], reply: Any) -> None:
        """Lock ``lock_id`` was granted; ``reply`` is a leasing acquire's answer (``None``
        after a plain acquire): start recording, and keep the values it brought."""
        if reply is None:
            self._leases = (-1, {})
        else:
            _, epoch, values = reply
            self._leases = (epoch, {asked[i]: value for i, value in values.items()})
        self._lock = lock_id
        self.recording = []

    def released(self, lock_id: int) -> tuple[Read, ...] | None:
        """Lock ``lock_id`` is being released: the reads to ask for with its next grant
        (``None`` if the recording is another lock's)."""
        recording = self.recording
        if recording is None or lock_id != self._lock:
            return None
        self.recording = None
        self._leases = (-1, {})
        return tuple(recording)

    def read(self, kind: str, obj_id: int, method: str, args: tuple[Any, ...]) -> Any:
        """The leased value answering this read, or ``MISS``; records the read."""
        # Checked on every read, not only when recording: ``(k, 0) == (k, False)``, and a
        # lease of ``d.get(k, 0)`` must not answer ``d.get(k, False)``.
        if method not in LEASABLE.get(kind, ()) or not leasable_args(args):
            return MISS
        key = (obj_id, method, args)
        epoch, leases = self._leases
        value = leases.get(key, MISS)
        recording = self.recording
        if recording is not None and len(recording) < MAX_READS and key not in recording:
            recording.append(key)
        if value is not MISS and self.view.epoch() != epoch:
            return MISS
        return value
