"""The client's side of leases (the rules are in ``.._leases``).

A channel keeps a :class:`LeaseBook`: the values leased to it, each with the epoch of its object
it was granted at, which answer reads for as long as the page shows that epoch. They come from
two places:

* a quick pure read of a built-in kind goes as a ``LeasedRead``; its value, if immutable, is
  kept;
* while a lock taken through the channel is held, the book records the quick pure reads the
  process makes (up to ``MAX_READS``); the lock proxy keeps that list when it releases, and
  asks for the same reads with its next acquire, whose grant brings their values.

Nothing here can make a read wrong: a lease answers only while the server has bumped nothing
since the grant, and anything else goes to the server. What is learned only decides what is
asked for next time (a read not made again costs the server one quick read at the grant).
"""

from __future__ import annotations

import mmap
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .._leases import (
    LEASABLE,
    MAX_LEASES,
    MAX_READS,
    PAGE_WORDS,
    leasable_args,
    leasable_value,
    magic_for,
    slot_of,
    waiting_of,
)
from .._pages import map_page

__all__ = [
    "ALIVE_FOR",
    "COLD_READS",
    "DECLINED",
    "MISS",
    "UNLEASED",
    "LeaseBook",
    "LeaseView",
    "Read",
    "book_for",
    "quiet_check",
]

#: One read: (object id, method, arguments).
Read = tuple[int, str, tuple[Any, ...]]

#: What :meth:`LeaseBook.read` returns when no lease answers: ask with a lease, or plainly.
MISS: Final = object()
UNLEASED: Final = object()
#: What :meth:`LeaseBook.took` returns for a ``LeasedRead`` the server declined (read plainly).
DECLINED: Final = object()
#: Plain reads of a key whose lease ended unused, before it is leased again.
COLD_READS: Final = 16
#: Seconds a check that the connection is alive vouches for. (A lease answering after the
#: server died returns the last value it had, which no write can have changed since: what must
#: not happen is answering for ever, where a round trip would raise.)
ALIVE_FOR: Final = 0.005

_monotonic = time.monotonic


def book_for(fd: int, info: dict[str, Any], broken: Callable[[], bool]) -> LeaseBook | None:
    """The lease book of a connection (``fd``, what its replies are read from, or -1 if the
    server is elsewhere; its handshake ``info``), or ``None``: leases need the same machine
    and a server that offers its page."""
    if fd < 0:
        return None
    view = LeaseView.open(info)
    return None if view is None else LeaseBook(view, quiet_check(fd, broken))


def quiet_check(fd: int, broken: Callable[[], bool]) -> Callable[[], bool]:
    """A check that the connection on ``fd`` is up with nothing to read (no end-of-file
    either): what :class:`LeaseBook` asks before it answers. ``False`` too while another
    thread is asking (a poll object may not be polled by two threads at once)."""
    peek = select.poll()
    peek.register(fd, select.POLLIN)
    poll = peek.poll

    def quiet() -> bool:
        try:
            return not broken() and not poll(0)
        except RuntimeError:  # "concurrent poll() invocation"
            return False

    return quiet


class LeaseView:
    """A read-only view of the server's page: the epochs of the objects."""

    __slots__ = ("_map", "epochs")

    def __init__(self, mapped: mmap.mmap) -> None:
        self._map = mapped
        #: the counters, by slot (``slot_of``)
        self.epochs = memoryview(mapped).cast("Q")

    @classmethod
    def open(cls, info: dict[str, Any]) -> LeaseView | None:
        """Map the page a server's handshake ``info`` offers, or ``None`` (no leases).

        The magic number proves that it is this server's page: the path of another machine's
        server, or of one in another pid namespace, may name some other file here.
        """
        path, instance = info.get("leases"), info.get("instance")
        if type(path) is not str or type(instance) is not str:
            return None
        try:
            magic = magic_for(instance)
        except ValueError:
            return None
        mapped = map_page(path, PAGE_WORDS * 8, magic, writable=False)
        return None if mapped is None else cls(mapped)


class LeaseBook:
    """A channel's leases and the reads recorded while one of its locks is held.

    Each lease is ``(slot, epoch, value)``: it answers its read while the page shows ``epoch``
    in ``slot``, its object's counter. Asking for a lease costs the server a little (a change
    of a leased object bumps its counter). Reads that are not made again would pay that for
    nothing: a read is leased from its second time on (a scan of many keys leases none), and a
    read whose lease ended unused (``v.value += 1``: a change before the read came again) is
    made plainly for the next ``COLD_READS`` times, then leased again.
    """

    __slots__ = (
        "_alive_until",
        "_cold",
        "_leases",
        "_lock",
        "_seen",
        "_used",
        "alive",
        "epochs",
        "holding",
        "recording",
        "writing",
    )

    def __init__(self, view: LeaseView, alive: Callable[[], bool]) -> None:
        self.epochs = view.epochs
        #: whether the connection shows nothing to read: a dead server's page stays mapped
        #: with its last epochs, so a lease answers only while this held within ``ALIVE_FOR``
        #: (``.._leases``)
        self.alive = alive
        self._alive_until = 0.0
        #: held while a write is posted and the lease it keeps is updated (``wrote``)
        self.writing = threading.Lock()
        #: reads made since a lock was granted, or None when no lock is held
        self.recording: list[Read] | None = None
        self._lock = 0  # the lock whose grant started the recording
        #: the lock this process holds by the server's last grant, not lent (0: none known):
        #: what a post bound to a lock checks (``Channel.post``)
        self.holding = 0
        #: read -> (slot, epoch, value); each entry is one tuple, so a thread never sees a
        #: value with another lease's epoch
        self._leases: dict[Read, tuple[int, int, Any]] = {}
        #: reads whose current lease answered at least once
        self._used: set[Read] = set()
        #: reads whose last lease ended unused: how many more to make plainly
        self._cold: dict[Read, int] = {}
        #: reads made once: the next one asks for a lease
        self._seen: set[Read] = set()

    def waiting(self, obj_id: int) -> bool:
        """Whether queue ``obj_id`` has a getter parked (``.._leases.waiting_of``)."""
        return self.epochs[waiting_of(obj_id)] != 0

    def vouched(self) -> bool:
        """Whether the connection showed nothing to read (nor its end) within ``ALIVE_FOR``:
        what a value answered here, or a lock taken here (``_loans``), asks first."""
        now = _monotonic()
        if now >= self._alive_until:
            if not self.alive():
                return False
            self._alive_until = now + ALIVE_FOR
        return True

    def granted(
        self, lock_id: int, asked: tuple[Read, ...], reply: Any, lent: bool = False
    ) -> None:
        """Lock ``lock_id`` was granted; ``reply`` is a leasing acquire's answer,
        ``(True, {index: (epoch, value)})`` (``None`` after a plain acquire): start
        recording, and keep the values it brought. ``lent``: it came as a loan (its
        releases are then made here, without the server: ``holding`` does not count it)."""
        if reply is not None:
            for i, (epoch, value) in reply[1].items():
                self.add(epoch, asked[i], value)
        self._lock = lock_id
        self.recording = []
        self.holding = 0 if lent else lock_id

    def released(self, lock_id: int) -> tuple[Read, ...] | None:
        """Lock ``lock_id`` is being released: the reads to ask for with its next grant
        (``None`` if the recording is another lock's). The leases stay: each lasts until its
        object changes, lock or no lock (or, bound to the lock, until its next grant)."""
        if self.holding == lock_id:
            self.holding = 0
        recording = self.recording
        if recording is None or lock_id != self._lock:
            return None
        self.recording = None
        return tuple(recording)

    def read_under_lock(self, obj_id: int) -> bool:
        """Whether this process read object ``obj_id`` since the lock it holds was granted
        (a write to it is then posted bound to that lock, or not posted: ``BaseProxy._posted``)."""
        recording = self.recording
        if recording:
            for key in recording:
                if key[0] == obj_id:
                    return True
        return False

    def took(self, key: Read, reply: Any) -> Any:
        """The value a ``LeasedRead`` of ``key`` brought, kept if it came with a lease; ``DECLINED``
        where the server declined (not the kind the proxy takes it for)."""
        if reply is None:
            return DECLINED
        epoch, value = reply
        if epoch is not None:
            self.add(epoch, key, value)
        return value

    def wrote(self, key: Read, value: Any) -> None:
        """This process wrote ``value`` where ``key`` reads, by a post the server applies
        without ending this process's lease (it is the object's only poster, ``.._leases``):
        the lease, if any, answers ``value`` from now on (while its epoch holds: another
        writer ends it). Called under ``writing``, with the post: in the posts' order."""
        lease = self._leases.get(key)
        if lease is None:
            return
        if leasable_value(value):
            self._leases[key] = (lease[0], lease[1], value)
        else:
            self._leases.pop(key, None)

    def add(self, epoch: int, key: Read, value: Any) -> None:
        """Keep ``value``, leased at ``epoch``, to answer ``key`` while that holds."""
        leases = self._leases
        if len(leases) >= MAX_LEASES and key not in leases:
            leases.clear()  # (full: start again)
            self._used.clear()
        leases[key] = (slot_of(key[0]), epoch, value)
        self._used.discard(key)

    @staticmethod
    def leasable(kind: str | None, method: str, args: tuple[Any, ...]) -> bool:
        """Whether this read may be leased (and answered by a lease)."""
        # ``(k, 0) == (k, False)``: a lease of ``d.get(k, 0)`` must not answer
        # ``d.get(k, False)``, so the arguments' types are checked too (``leasable_args``).
        return kind is not None and method in LEASABLE.get(kind, ()) and leasable_args(args)

    def read(self, obj_id: int, method: str, args: tuple[Any, ...]) -> Any:
        """What answers this (leasable) read: the leased value; else ``MISS`` (ask with a
        lease) or ``UNLEASED`` (ask plainly: its last lease ended unused). Records the read
        while a lock is held."""
        key = (obj_id, method, args)
        recording = self.recording
        if recording is not None and len(recording) < MAX_READS and key not in recording:
            recording.append(key)
        lease = self._leases.get(key)
        cold = self._cold
        if lease is not None:
            slot, epoch, value = lease
            if self.epochs[slot] == epoch:
                if not self.vouched():
                    return MISS  # something to read first (perhaps the end)
                self._used.add(key)
                return value
            self._leases.pop(key, None)  # ended: counted once
            if key in self._used:
                self._used.discard(key)
            else:
                if len(cold) >= MAX_LEASES:
                    cold.clear()
                cold[key] = COLD_READS
        skip = cold.get(key)
        if skip is None:
            seen = self._seen
            if key in seen:
                return MISS
            if len(seen) >= MAX_LEASES:
                seen.clear()
            seen.add(key)  # a read made once (a scan) is not worth a lease
            return UNLEASED
        if skip > 1:
            cold[key] = skip - 1
        else:
            del cold[key]
        return UNLEASED
