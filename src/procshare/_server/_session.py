"""A client connection as the server sees it: what it owns, what it is owed, where it is served.

A :class:`Session` is plain state, shared by the core (which opens and closes it), the
primitives (which record what it holds) and the transport (which sends its output). Everything
it owns is let go when it closes: references, held primitives, parked waiters, subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._loans import Loan
    from .._protocol import ServerProtocol
    from ._host import Primitive
    from ._table import Entry
    from ._waiters import Waiter
    from ._watching import Subscription

__all__ = ["Home", "Session", "log_session_end"]

log = logging.getLogger("procshare.server")


class Home:
    """Where sessions are served from (one of the transport's threads, by ``index``): the
    flags their replies carry (the server's advice and CPU, ``Flag``), kept by the transport."""

    __slots__ = ("flags", "index")

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.flags = 0


class Session:
    """The core's view of one client connection.

    Holds the protocol end used to encode replies, the output not yet sent, and everything the
    connection owns: references, held primitives and parked waiters. All of it is let go when
    the session closes.
    """

    __slots__ = (
        "backlog",
        "calls",
        "closed",
        "dead",
        "holdings",
        "home",
        "host",
        "id",
        "in_flight",
        "info",
        "loans",
        "may_post",
        "name",
        "out",
        "pid",
        "posting_to",
        "probe",
        "protocol",
        "queued",
        "refs",
        "said_goodbye",
        "started",
        "subscriptions",
        "waiters",
    )

    def __init__(self, sid: int, protocol: ServerProtocol, info: Mapping[str, Any], now: float):
        self.id = sid
        self.protocol = protocol
        self.info = dict(info)
        pid = self.info.get("pid")
        self.pid: int | None = pid if isinstance(pid, int) else None
        name = self.info.get("name")
        self.name = name if isinstance(name, str) else ""
        #: where it connects from (the transport sets it): "" for this machine
        self.host = ""
        self.out: list[bytes] = []
        #: the flags of its replies (the transport gives it the home it is served from)
        self.home = Home()
        self.closed = False
        self.dead = False
        self.refs: dict[int, int] = {}
        self.holdings: dict[Primitive, int] = {}
        self.waiters: set[Waiter] = set()
        self.probe: Callable[[], bool] = _always_alive
        self.started = now
        self.calls = 0
        self.subscriptions: dict[int, Subscription] = {}
        #: what was handed to it and may not have reached its caller yet: request id ->
        #: (primitive, owner, what): taken back if the caller abandons the request or the
        #: connection ends first; its caller's next request means it arrived (``Core.track``)
        self.in_flight: dict[int, tuple[Primitive, int, Any]] = {}
        #: whether it said it is closing on purpose (``Goodbye``): not killed
        self.said_goodbye = False
        #: whether it may send ``Post`` messages (a client on this machine): what it posted may
        #: still be in its connection, unread, when another request must see it (``catch_up``)
        self.may_post = False
        #: the objects it registered to post to (``Entry.posters``)
        self.posting_to: set[Entry] = set()
        #: bytes written by the core and not yet handed to the transport, and bytes the
        #: transport has not managed to send (it keeps ``backlog`` up to date)
        self.queued = 0
        self.backlog = 0
        #: the locks lent to it (``.._loans``), by loan number
        self.loans: dict[int, Loan] = {}

    def hold(self, prim: Primitive, n: int) -> None:
        """Record that this session holds ``n`` more units of ``prim``."""
        self.holdings[prim] = self.holdings.get(prim, 0) + n

    def unhold(self, prim: Primitive, n: int) -> None:
        """Record that this session gave back ``n`` units of ``prim``."""
        left = self.holdings.get(prim, 0) - n
        if left > 0:
            self.holdings[prim] = left
        else:
            self.holdings.pop(prim, None)

    def __repr__(self) -> str:
        return f"<Session {self.id} pid={self.pid} {'closed' if self.closed else 'open'}>"


def _always_alive() -> bool:
    return True


def log_session_end(
    session: Session, held: list[str], taken_back: int, waiting: int, refs: int
) -> None:
    """One line for a client that went away, and what that freed (a warning when a process
    that did not say goodbye held something: it died holding it)."""
    died_holding = not session.said_goodbye and bool(held or taken_back)
    level = logging.WARNING if died_holding else logging.INFO
    if not log.isEnabledFor(level):
        return
    who = f"pid {session.pid} ({session.name})" if session.name else f"pid {session.pid}"
    how = "closed its connection" if session.said_goodbye else "is gone"
    freed = []
    if held:
        freed.append("released what it held: " + ", ".join(sorted(held)))
    if taken_back:
        freed.append(f"took back {taken_back} hand-over(s) it had not confirmed")
    if waiting:
        freed.append(f"withdrew {waiting} waiting call(s)")
    if refs:
        freed.append(f"dropped its references to {refs} object(s)")
    text = f"client {who} {how}" + (": " + "; ".join(freed) if freed else "")
    log.log(level, "%s", text)
