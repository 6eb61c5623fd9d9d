"""Watching: change events pushed to the sessions that subscribed to an object (``watch()``).

Each change of a watched object is pushed to its watchers, in the order changes are applied,
as ``(obj_id, version, op, args, kwargs, result)``. A watcher whose connection is not keeping
up (more than ``backlog`` bytes waiting to be sent) misses events instead of growing the
server's memory; they are counted and reported as one ``"overflow"`` event once it has caught
up (half the backlog). A disposed object's watchers get ``"dispose"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._session import Session
    from ._table import Entry

__all__ = ["Subscription", "Watching"]


class Subscription:
    """A session watching an object: change events are pushed to it as ``sub_id``."""

    __slots__ = ("entry_id", "missed", "session", "sub_id")

    def __init__(self, session: Session, sub_id: int, entry_id: int) -> None:
        self.session = session
        self.sub_id = sub_id
        self.entry_id = entry_id
        #: events not sent because the session's backlog was full (reported as "overflow")
        self.missed = 0


class Watching:
    """The subscriptions of one object table (``objects``); ``push(session, sub_id, event)``
    sends an unrequested message (the core's)."""

    def __init__(
        self,
        objects: dict[int, Entry],
        push: Callable[[Session, int, Any], None],
        backlog: int,
    ) -> None:
        self.objects = objects
        self.push = push
        self.backlog = backlog
        #: sessions that missed events, to be told once they catch up
        self.overflowing: set[Session] = set()

    def subscribe(self, session: Session, sub_id: int, entry: Entry) -> None:
        sub = Subscription(session, sub_id, entry.id)
        if entry.watchers is None:
            entry.watchers = []
        entry.watchers.append(sub)
        session.subscriptions[sub_id] = sub

    def unsubscribe(self, session: Session, sub_id: int) -> bool:
        """End ``session``'s subscription ``sub_id``; whether there was one."""
        sub = session.subscriptions.pop(sub_id, None)
        if sub is None:
            return False
        self._drop(sub)
        return True

    def session_closed(self, session: Session) -> None:
        for sub in session.subscriptions.values():
            self._drop(sub)
        session.subscriptions.clear()
        self.overflowing.discard(session)

    def disposed(self, entry: Entry) -> None:
        """``entry`` left the table: tell its watchers (a watch normally keeps the object
        alive through its proxy; this only happens if that proxy was dropped)."""
        if not entry.watchers:
            return
        self.publish(entry, "dispose", (), None, None)
        for sub in entry.watchers:
            sub.session.subscriptions.pop(sub.sub_id, None)
        entry.watchers = None

    def publish(
        self,
        entry: Entry,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        result: Any,
    ) -> None:
        """Push one change of ``entry`` to its watchers, in the order changes are applied."""
        event = (entry.id, entry.version, op, args, kwargs, result)
        limit = self.backlog
        for sub in entry.watchers or ():
            session = sub.session
            if sub.missed or session.queued + session.backlog > limit:
                # This watcher is not keeping up: drop, count, report once it has caught up.
                sub.missed += 1
                self.overflowing.add(session)
                continue
            self.push(session, sub.sub_id, event)

    def report_overflows(self) -> None:
        """Tell watchers that caught up how many events they missed."""
        half = self.backlog // 2
        for session in list(self.overflowing):
            if session.closed:
                self.overflowing.discard(session)
                continue
            if session.queued + session.backlog > half:
                continue
            self.overflowing.discard(session)
            for sub in session.subscriptions.values():
                if sub.missed:
                    entry = self.objects.get(sub.entry_id)
                    version = entry.version if entry is not None else -1
                    event = (sub.entry_id, version, "overflow", (sub.missed,), None, None)
                    sub.missed = 0
                    self.push(session, sub.sub_id, event)

    def _drop(self, sub: Subscription) -> None:
        entry = self.objects.get(sub.entry_id)
        if entry is not None and entry.watchers:
            entry.watchers = [w for w in entry.watchers if w is not sub] or None
