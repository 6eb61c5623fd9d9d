"""What keeps a shared object alive: reference counts, lent references, the cycle collector.

Each session counts the references it holds (one per proxy its process holds, see ``_client``),
and each proxy stored *inside* another shared object (an internal reference) counts one. An
object whose count drops to zero is disposed of after ``release_delay`` seconds unless someone
takes a reference again: a proxy passed to a process that has not yet announced itself must not
vanish in between.

Cycles (a shared list that contains itself, two dicts holding each other) never reach zero, so
the core also knows *which* shared object holds each internal reference: the object the message
that carried it was addressed to. ``collect_cycles`` marks everything reachable from objects
held by sessions (or by holders it cannot attribute, or waiting out their release delay) and
frees what stays unreachable on two passes in a row. An unattributed reference always counts as
a root, so the collector can leak a rare cycle but never free a live object.

A reply that carries a proxy *lends* the receiving session a reference while it is encoded
(``lending``/``lend``/``settle``): if the reply cannot be encoded, the reference is given back.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ObjectNotFound

if TYPE_CHECKING:
    from ._session import Session
    from ._table import Entry

__all__ = ["References"]


class References:
    """The reference counts of one object table (``objects``), on the server's loop thread
    (``disown`` alone may be called from any thread).

    ``dispose(obj_id)`` is the core's: it takes an object out of the table, with whatever
    else refers to it (leases, watchers, names).
    """

    def __init__(
        self,
        objects: dict[int, Entry],
        *,
        release_delay: float,
        on_loop_thread: Callable[[], bool],
        dispose: Callable[[int], None],
    ) -> None:
        self.objects = objects
        self.release_delay = release_delay
        self._on_loop_thread = on_loop_thread
        self._dispose = dispose
        #: (when, obj_id): objects whose count reached zero, disposed of at ``when``
        self.disposals: list[tuple[float, int]] = []
        #: internal references dropped, from any thread: (target id, holder id or None)
        self.disowned: deque[tuple[int, int | None]] = deque()
        #: internal proxies rebuilt for the message being decoded (``adopted``)
        self.fresh: list[Any] = []
        self._suspects: set[int] = set()  # unreachable on the last cycle collection
        self.next_collection = 0.0
        #: the session whose message is being encoded: proxies pickled into it are lent to it
        self.outgoing: Session | None = None
        #: references lent while encoding messages, ever (a snapshot with none is reusable)
        self.lends = 0
        #: what the message being encoded lent: id(object pickled) -> obj_id
        self.lent: dict[int, int] = {}

    # -- lending, while a message is encoded --------------------------------------------------

    def lend(self, obj_id: int, by: object) -> bool:
        """Count a reference for the session whose message is being encoded, if any.

        ``by`` is the object being pickled (a proxy or a handle): the same object pickled
        again while encoding the same message (a serializer's second attempt) is counted once.
        """
        session = self.outgoing
        if session is None or not self._on_loop_thread():
            return False
        key = id(by)  # alive: it is part of the value being encoded
        if key in self.lent:
            return True
        entry = self.objects.get(obj_id)
        if entry is None:
            return False
        entry.refs += 1
        session.refs[obj_id] = session.refs.get(obj_id, 0) + 1
        self.lends += 1
        self.lent[key] = obj_id
        return True

    def encode_for(
        self, session: Session, encode: Callable[[], bytes], now: float, *, lending: bool = True
    ) -> bytes:
        """``encode()`` a message for ``session``, lending it the proxies the message carries;
        if it could not be encoded (``b""`` or an exception), give them back. With
        ``lending=False`` a message that would lend anything is not made (``b""``)."""
        self.outgoing = session
        data = b""
        try:
            data = encode()
        finally:
            self.outgoing = None
            if self.lent:
                if not lending:
                    data = b""
                self.settle(session, bool(data), now)
        return data

    def settle(self, session: Session, sent: bool, now: float) -> None:
        """The message for ``session`` that lent references is encoded: forget what it lent,
        or, if it could not be encoded (it will not reach the client, and no proxy with it),
        give the references back."""
        lent = self.lent
        if not sent:
            for obj_id in lent.values():
                held = session.refs.get(obj_id, 0)
                if held <= 1:
                    session.refs.pop(obj_id, None)
                else:
                    session.refs[obj_id] = held - 1
                self.unref(obj_id, 1, now)
        lent.clear()

    # -- internal references (proxies held by the server's own objects) ----------------------

    def adopt(self, obj_id: int) -> None:
        """Count an internal reference (a proxy rebuilt inside this server)."""
        entry = self.objects.get(obj_id)
        if entry is None:
            raise ObjectNotFound.of(obj_id)
        entry.refs += 1

    def adopted(self, proxy: Any) -> None:
        """Remember an internal proxy rebuilt while decoding; its holder is set on dispatch."""
        self.fresh.append(proxy)

    def disown(self, obj_id: int, holder: int | None = None) -> None:
        """Drop an internal reference; safe from any thread (applied on the loop)."""
        self.disowned.append((obj_id, holder))

    def claim_fresh(self, holder: Entry | None, only: list[Any] | None = None) -> None:
        """Record ``holder`` as the holder of the internal proxies just rebuilt (or ``only``)."""
        fresh = self.fresh if only is None else only
        if only is None:
            self.fresh = []
        if holder is None:
            return  # unknown holder: the reference stays a root for the cycle collector
        holds = holder.holds
        if holds is None:
            holds = holder.holds = {}
        for proxy in fresh:
            target = self.objects.get(proxy._id)
            if target is None:
                continue
            proxy._held_by = holder.id
            target.held += 1
            holds[proxy._id] = holds.get(proxy._id, 0) + 1

    def apply_disowned(self, now: float) -> None:
        disowned = self.disowned
        objects = self.objects
        while disowned:
            obj_id, holder_id = disowned.popleft()
            if holder_id is not None:
                holder = objects.get(holder_id)
                if holder is not None and holder.holds:
                    left = holder.holds.get(obj_id, 0) - 1
                    if left > 0:
                        holder.holds[obj_id] = left
                    else:
                        holder.holds.pop(obj_id, None)
                target = objects.get(obj_id)
                if target is not None and target.held > 0:
                    target.held -= 1
            self.unref(obj_id, 1, now)

    # -- the sessions' references --------------------------------------------------------------

    def retain(self, session: Session, obj_ids: tuple[int, ...]) -> None:
        for obj_id in obj_ids:
            entry = self.objects.get(obj_id)
            if entry is None:
                continue  # gone already: the proxy's next call reports it
            entry.refs += 1
            session.refs[obj_id] = session.refs.get(obj_id, 0) + 1

    def release(self, session: Session, obj_ids: tuple[int, ...], now: float) -> None:
        for obj_id in obj_ids:
            held = session.refs.get(obj_id, 0)
            if held <= 0:
                continue  # never counted (or already released): ignore, do not go negative
            if held == 1:
                del session.refs[obj_id]
            else:
                session.refs[obj_id] = held - 1
            self.unref(obj_id, 1, now)

    def unref(self, obj_id: int, count: int, now: float) -> None:
        entry = self.objects.get(obj_id)
        if entry is None:
            return
        entry.refs -= count
        if entry.refs <= 0:
            entry.refs = 0
            self.dispose_later(obj_id, now)

    def dispose_later(self, obj_id: int, now: float) -> None:
        """Dispose of ``obj_id`` one release delay from ``now`` unless it is referenced again."""
        heapq.heappush(self.disposals, (now + self.release_delay, obj_id))

    # -- disposal ------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the next disposal is due, or ``None``."""
        return self.disposals[0][0] if self.disposals else None

    def dispose_due(self, now: float) -> None:
        disposals = self.disposals
        while disposals and disposals[0][0] <= now:
            _, obj_id = heapq.heappop(disposals)
            entry = self.objects.get(obj_id)
            if entry is not None and entry.refs <= 0:
                self._dispose(obj_id)

    def collect_cycles(self) -> int:
        """Free shared objects reachable only from each other; return how many were freed.

        Roots: objects with references not attributed to a holder (sessions, unknown holders)
        and objects waiting out their release delay. An object is freed only when it was
        unreachable on the previous collection too (a grace period as long as the interval).
        """
        objects = self.objects
        marked: set[int] = set()
        stack = [e.id for e in objects.values() if e.refs <= 0 or e.refs > e.held]
        while stack:
            obj_id = stack.pop()
            if obj_id in marked:
                continue
            marked.add(obj_id)
            entry = objects.get(obj_id)
            if entry is not None and entry.holds:
                stack.extend(entry.holds)
        unreachable = {obj_id for obj_id in objects if obj_id not in marked}
        garbage = unreachable & self._suspects
        self._suspects = unreachable - garbage
        for obj_id in garbage:
            self._dispose(obj_id)
        return len(garbage)
