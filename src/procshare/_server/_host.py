"""The host interface: what a shared primitive may ask of the server that holds it.

The primitives (``_objects``: Lock, Semaphore, Condition, Event, Barrier, Queue) park callers,
answer them later, and record what each session holds. They do it through :class:`Host`, a
handful of operations that the server core implements, and a test can implement with a fake
(``tests/server/test_primitives.py``); they never reach into the core's tables. A handler gets
a :class:`CallContext`: its caller (session, request, owner tag) and the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._errors import ProcshareError
from ._waiters import Waiter, WaitQueue

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["PARKED", "CallContext", "Host", "PipelineContext", "Primitive"]


class Host(Protocol):
    """What the server does for the primitives it holds (all on its one loop thread)."""

    #: how long a released lock with waiters stays free for whoever asks first (0: handed
    #: over at once; see ``Lock``)
    @property
    def lock_window(self) -> float: ...

    def answer(self, waiter: Waiter, value: Any) -> None:
        """Answer a parked request with ``value``."""

    def answer_error(self, waiter: Waiter, error: BaseException) -> None:
        """Answer a parked request with ``error``."""

    def deliverable(self, session: Session) -> bool:
        """Whether something handed to ``session`` now can reach it (its peer is alive)."""
        ...

    def track(self, session: Session, req_id: int, owner: int, prim: Primitive, what: Any) -> None:
        """``prim`` handed ``what`` to that request: give it back (``Primitive.give_back``)
        if the caller abandons the request, or its connection ends, before it arrives."""

    def add_deadline(self, waiter: Waiter) -> None:
        """Time ``waiter`` out at ``waiter.deadline`` (its ``on_timeout`` answers it)."""

    def open_window(self, prim: Primitive, until: float) -> None:
        """Call ``prim.window_closed(host, until)`` once ``until`` has passed."""

    def run_job(
        self,
        session: Session,
        req_id: int,
        fn: Callable[[], Any],
        done: Callable[[Host, bool, Any], None],
    ) -> None:
        """Run ``fn()`` (user code: a Barrier's action) on a worker thread, then
        ``done(host, ok, value_or_exception)`` on the loop thread."""

    def count(self, counter: str) -> None:
        """Add one to the server's counter ``counter`` (``stats()["counters"]``)."""

    def end_leases(self, entries: list[Any]) -> None:
        """End the leases out on these objects (``Lock.bound_leases``)."""


class _Parked:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PARKED"


#: Returned by a handler that parked its caller: the reply comes later.
PARKED: Final = _Parked()


class Primitive:
    """Base of the objects that park callers and may be held by sessions."""

    kind: str = ""

    def drop_session(self, host: Host, session: Session, held: int) -> None:
        """Release what ``session`` held (``held`` units) when it goes away."""

    def give_back(self, host: Host, session: Session, owner: int, what: Any) -> None:
        """Take back ``what`` (tracked by ``CallContext.track``) from ``session``'s ``owner``,
        which never received it: its caller abandoned the request (``Cancel``)."""

    def lost(self, host: Host, session: Session, owner: int, what: Any) -> None:
        """``what`` was on its way to ``session`` when the session ended (perhaps received,
        perhaps not). A lock's grant or a slot needs nothing: ``drop_session`` frees what
        the session held."""

    def window_closed(self, host: Host, until: float) -> None:
        """The moment ``until`` asked for with ``Host.open_window`` has passed."""

    def describe(self) -> dict[str, Any]:
        """State for ``stats``/``top``: holders and waiters."""
        return {}


class CallContext:
    """What a blocking or owner-scoped handler gets to know about its caller."""

    __slots__ = ("host", "now", "owner", "req_id", "session")

    def __init__(self, host: Host, session: Session, req_id: int, owner: int, now: float):
        self.host = host
        self.session = session
        self.req_id = req_id
        self.owner = owner
        self.now = now

    def track(self, prim: Primitive, what: Any) -> None:
        """``prim`` hands ``what`` to this call's caller: see ``Host.track``."""
        self.host.track(self.session, self.req_id, self.owner, prim, what)

    def park(
        self,
        queue: WaitQueue,
        timeout: float | None,
        *,
        data: Any = None,
        on_timeout: Callable[[Host, Waiter], None] | None = None,
        on_cancel: Callable[[Host, Waiter], None] | None = None,
        on_withdraw: Callable[[Host, Waiter], None] | None = None,
    ) -> Waiter:
        """Park the caller in ``queue``; answer it via ``on_timeout`` after ``timeout`` s."""
        waiter = Waiter(
            self.session,
            self.req_id,
            self.owner,
            since=self.now,
            deadline=None if timeout is None else self.now + timeout,
            data=data,
            on_timeout=on_timeout,
            on_cancel=on_cancel,
            on_withdraw=on_withdraw,
        )
        queue.park(waiter)
        self.session.waiters.add(waiter)
        if waiter.deadline is not None:
            self.host.add_deadline(waiter)
        return waiter


class PipelineContext(CallContext):
    """The context of a call inside a pipeline: it may not park (and what it takes is not
    tracked: a pipeline's calls never wait, so none is abandoned while it waits)."""

    __slots__ = ()

    def track(self, prim: Primitive, what: Any) -> None:
        pass

    def park(self, queue: WaitQueue, timeout: float | None, **kwargs: Any) -> Waiter:
        raise ProcshareError(
            "this call would have to wait, which a pipeline does not do "
            "(the object was locked, empty or full at that point of the pipeline)"
        )
