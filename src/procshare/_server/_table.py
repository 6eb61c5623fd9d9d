"""The object table's records: what the server knows of a registered type and of each object.

An :class:`Entry` is one shared object: its referent, its handlers (a built-in kind's, from
``_objects.HANDLERS``) or none (a custom type's methods run as jobs), its reference counts
(``_references``), its version and change log (watchers, whole-object reads), its watchers
(``_watching``) and whether a lease on it may be out (``_leasing``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .._kinds import KINDS
from ._objects import HANDLERS, Handler

if TYPE_CHECKING:
    from ._changelog import ChangeLog
    from ._session import Session
    from ._watching import Subscription

__all__ = ["PLAIN_HANDLERS", "SNAPSHOTS", "Entry", "ServerType"]

# Whole-object reads without arguments whose encoded reply may be reused while the object is
# unchanged (a reader that snapshots a large dict over and over skips re-serializing it).
SNAPSHOTS: Final = frozenset(
    {"copy", "keys", "values", "items", "#GETVALUE", "tolist", "__repr__", "__str__"}
)
#: per kind, the handlers of ``HANDLERS`` that a plain call may go straight to
PLAIN_HANDLERS: Final = {
    kind: {m: h for m, h in handlers.items() if m not in SNAPSHOTS}
    for kind, handlers in HANDLERS.items()
}


class ServerType(NamedTuple):
    """What the server knows of one registered typeid.

    Attributes:
        typeid: the name it is registered under.
        kind: the built-in kind implementing it natively, or ``None`` for a custom callable.
        factory: the callable creating the referent (custom types); ``None`` when the type only
            describes objects returned by methods (``method_to_typeid``) or is built in.
        exposed: method names proxies may call; ``None``: the referent's public methods.
        method_to_typeid: methods whose result is shared (returned as a proxy of that typeid).
        proxytype: the client proxy class, passed along in tokens.
        watched: for custom types that opt in to ``watch()``, the methods that change them.
    """

    typeid: str
    kind: str | None
    factory: Callable[..., Any] | None
    exposed: tuple[str, ...] | None
    method_to_typeid: Mapping[str, str] | None
    proxytype: Any
    #: methods of a custom type whose calls change the object: watchers are told of them
    watched: frozenset[str] = frozenset()


class Entry:
    """One shared object in the table."""

    __slots__ = (
        "bound",
        "created",
        "exposed",
        "handlers",
        "held",
        "holds",
        "id",
        "leased",
        "log",
        "method_to_typeid",
        "mutators",
        "plain",
        "postable",
        "posters",
        "proxytype",
        "referent",
        "refs",
        "returning",
        "snapshot",
        "spec",
        "typeid",
        "version",
        "watched",
        "watchers",
    )

    def __init__(
        self,
        obj_id: int,
        stype: ServerType,
        referent: Any,
        exposed: tuple[str, ...],
        now: float,
    ) -> None:
        self.id = obj_id
        self.typeid = stype.typeid
        self.referent = referent
        self.proxytype = stype.proxytype
        self.method_to_typeid = stype.method_to_typeid or {}
        self.handlers: dict[str, Handler] | None = (
            HANDLERS[stype.kind] if stype.kind is not None else None
        )
        #: the handlers a plain call may go straight to (``_call``): all but whole-object reads
        self.plain: dict[str, Handler] | None = (
            PLAIN_HANDLERS[stype.kind] if stype.kind is not None else None
        )
        kind = KINDS[stype.kind] if stype.kind is not None else None
        #: the built-in kind's description, or None for a custom type
        self.spec = kind
        self.mutators = kind.mutators if kind is not None else frozenset()
        #: methods its clients may post (``Kind.postable``)
        self.postable = kind.postable if kind is not None else frozenset()
        #: methods of a built-in kind whose result becomes a new shared object
        self.returning = kind.returning if kind is not None else {}
        self.exposed = exposed
        self.refs = 0
        self.version = 0
        self.created = now
        #: (version, method, serializer, payload) of the last large snapshot read, or None
        self.snapshot: tuple[int, str, str, bytes] | None = None
        #: the latest changes, once a client re-reads this object whole (``ReadSince``)
        self.log: ChangeLog | None = None
        #: internal references this object's referent holds: target id -> count
        self.holds: dict[int, int] | None = None
        #: how many of ``refs`` are internal references held by a known shared object
        self.held = 0
        #: methods whose calls are published to watchers (empty: not watchable)
        self.watched: frozenset[str] = (
            (kind.mutators if kind.watchable else frozenset())
            if kind is not None
            else stype.watched
        )
        self.watchers: list[Subscription] | None = None
        #: whether a lease on it may be out (``_leases``): its next change bumps its epoch
        self.leased = False
        #: the sessions registered to post to it (an unbounded queue's producers): a request
        #: of anyone else first catches up with them (``Core._call``), or None
        self.posters: set[Session] | None = None
        #: posters that post only while they hold a lock (a Value's read-modify-write under
        #: it): poster -> that lock. The lock's grants may then lease the Value (``_leasing``)
        self.bound: dict[Session, Any] | None = None
