"""Server-side implementations of the built-in kinds listed in ``_kinds.KINDS``.

Containers (dict, list, set, Namespace, Value, Array) are plain Python objects: the server runs
one operation at a time, so each method is atomic without a lock of its own. Synchronization
primitives never block a thread: an operation that cannot complete now parks a ``Waiter`` and
returns ``PARKED``; the operation that satisfies it later answers the parked request through
the host.

Ownership (the rule the reliability guarantees rest on): a Lock, an RLock (with its count), a
Condition's lock, and a Semaphore/BoundedSemaphore slot is held by the *session* (connection)
that acquired it, under the owner tag of the acquiring thread or task. When a session closes
(its process exited, was killed, or dropped the connection), everything it holds is released
and the next waiter is served; its parked requests are withdrawn; a Barrier it was waiting at
breaks. A semaphore stops tracking slots (becomes a plain counter) the first time it is released
by a session holding none of its slots: it is being used for signalling, where giving slots
back on exit would invent signals.

Each handler is ``fn(referent, *args, **kwargs)``, or ``fn(referent, ctx, *args, **kwargs)``
for methods the kind table marks blocking or owner-scoped (``ctx`` is a ``CallContext``).
"""

from __future__ import annotations

import array
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from .._errors import CallWithdrawn
from .._kinds import KINDS
from .._loans import MAX_LOANS
from ._host import PARKED, CallContext, Host, Primitive
from ._waiters import Waiter, WaitQueue

if TYPE_CHECKING:
    from .._loans import Loan, LoanPage
    from ._session import Session

__all__ = [
    "FACTORIES",
    "HANDLERS",
    "Array",
    "Namespace",
    "Value",
    "make_referent",
]


Handler = tuple[Callable[..., Any], bool]  # (function, takes a CallContext)


# -- the referent classes users may meet (same names and behaviour as the stdlib's) ------------


class Namespace:
    """A bag of attributes, like ``multiprocessing.managers.Namespace``."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        items = sorted(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({', '.join(items)})"


class Value:
    """A single value with a typecode, like ``multiprocessing.managers.Value``."""

    def __init__(self, typecode: Any, value: Any, lock: Any = True) -> None:
        self._typecode = typecode
        self._value = value

    def get(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value

    def increment(self, by: Any = 1) -> Any:
        """Add ``by`` and return the new value (atomic on the server)."""
        self._value = self._value + by
        return self._value

    def compare_and_set(self, expected: Any, new: Any) -> bool:
        """Set ``new`` if the value equals ``expected``; whether it was set."""
        if self._value == expected:
            self._value = new
            return True
        return False

    def swap(self, new: Any) -> Any:
        """Set ``new``; return the value it replaced."""
        old, self._value = self._value, new
        return old

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._typecode!r}, {self._value!r})"

    value = property(get, set)


def Array(typecode: str, sequence: Iterable[Any], lock: Any = True) -> array.array[Any]:  # noqa: N802
    """A typed array, like ``multiprocessing.managers.Array``."""
    return array.array(typecode, sequence)


# -- argument checks shared by the primitives (same messages as threading/queue) ----------------


def _acquire_timeout(blocking: Any, timeout: Any) -> float | None:
    """Validate threading's (blocking, timeout) pair; return the wait in seconds or None."""
    if timeout is None:
        timeout = -1
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
    return None if timeout == -1 else float(timeout)


def _queue_timeout(block: Any, timeout: Any) -> float | None:
    if not block or timeout is None:
        return None
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


def _wait_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
    return max(0.0, float(timeout))


# -- primitives ----------------------------------------------------------------------------------


def _owner_desc(session: Session, tag: int) -> dict[str, Any]:
    return {"session": session.id, "pid": session.pid, "name": session.name, "owner": tag}


def _waiters_desc(waiters: WaitQueue) -> list[dict[str, Any]]:
    return [_owner_desc(w.session, w.owner) for w in waiters]


#: How long a released lock with waiters stays free for whoever asks first (at most: the
#: server's busy-poll window bounds it too, see ``Server``). A process that releases and takes
#: the lock again at once is back within ~15-25 µs.
LOCK_WINDOW: Final = 50e-6
#: A waiter parked this long is handed the lock at the next release (no barging past it).
FAIR_AFTER: Final = 1e-3
#: After a window that nobody used, this many releases hand over at once (1, 2, 4, ... 64).
_MAX_SKIP_SHIFT: Final = 6


class Lock(Primitive):
    """A mutex. Waiter data is ``(count, answer, track)``: what to restore, what to reply, and
    whether the grant is tracked until it reaches its caller (an acquire's; ``Host.track``).

    Hand-over (eventual fairness, as Go's ``sync.Mutex`` and Rust's parking_lot do it): a
    ``release()`` with waiters leaves the lock free for a moment (``Host.lock_window``,
    ``LOCK_WINDOW``) and whoever asks first takes it: most often the releaser itself, coming
    back for its next turn. Handing the lock to a waiter instead means waking a sleeping
    process, ~20 µs on the critical path of every hand-over, in which nobody holds the lock.
    Nobody starves: once the first waiter has waited ``FAIR_AFTER`` (1 ms) the lock is handed
    to it at release, as it is whenever the window passes unused; a lock whose windows go
    unused (its releasers do not come back soon) hands over at once for its next 2, 4, ... 64
    releases. A holder that dies or waits on a Condition hands over at once, and so does every
    release with no window (``Manager(fair_locks=True)``, or a server that does not busy-poll).
    (``threading.Lock``, and so the stdlib Manager's, promises no order at all.)

    Lending (``.._loans``): a lock that one process takes twice in a row, with nobody waiting,
    may be lent to it (``lend``); its threads then take and free it in shared memory, and
    every other use here recalls it first (``_recall``), after which this object decides.
    """

    kind = "Lock"
    reentrant = False

    def __init__(self) -> None:
        self.holder: tuple[Session, int] | None = None
        self.count = 0
        self.waiters = WaitQueue()
        self._open_until = 0.0  # free for whoever asks first until then (0: not open)
        self._misses = 0  # windows in a row that nobody used
        self._skips = 0  # releases left that hand over at once
        #: freed because its holder's process ended: the one release() the stdlib would
        #: still accept (its lock stays held by the gone process) is accepted, and does nothing
        self._orphaned = False
        #: its loan out (recalled or not: given back yet or not), and whether it is lent now
        #: (not recalled: who holds it is in the borrower's slot, not here)
        self.loan: Loan | None = None
        self.lent = False
        #: a Condition uses it: never lent (its waits and notifies need it here)
        self.lendable = True
        #: the sessions of its last grant and of the one before (lent at a second in a row)
        self.taker: Session | None = None
        self.before: Session | None = None
        #: Values leased at its last grant while processes post to them bound to this lock
        #: (``Entry.bound``): those leases end at its next grant, before its new holder can post
        self.bound_leases: list[Any] | None = None
        #: released once by a process that did not hold it: a process may then believe it
        #: holds it when it does not, so its grants lease nothing posted to (``_leasing``)
        self.crossed = False
        #: taken back from a loan since its last grant: what its borrower posted while it
        #: held it may be unread (``Core._reads_at_grant``)
        self.recalled = False

    # owner-scoped API
    def acquire(self, ctx: CallContext, blocking: Any = True, timeout: Any = -1) -> Any:
        if self.lent:
            self._recall()
        if self.holder is None and blocking is True and (timeout == -1 or timeout is None):
            # The usual acquire: free, the defaults (``acquire_answering`` written out).
            session = ctx.session
            if self._open_until or self.bound_leases:
                self._grant(ctx.host, (session, ctx.owner), 1)
            else:
                self.holder = (session, ctx.owner)
                self.count = 1
                self.before, self.taker = self.taker, session
                session.hold(self, 1)
            ctx.track(self, 1)
            return True
        return self.acquire_answering(ctx, blocking, timeout, True)

    def acquire_answering(self, ctx: CallContext, blocking: Any, timeout: Any, answer: Any) -> Any:
        """``acquire``, answering ``answer`` instead of ``True`` once granted (a leasing acquire
        passes its request, which the core turns into the reads it asked for)."""
        if self.lent:
            self._recall()
        wait = _acquire_timeout(blocking, timeout)
        me = (ctx.session, ctx.owner)
        if self.holder is None:
            self._grant(ctx.host, me, 1)
            ctx.track(self, 1)
            return answer
        if self.reentrant and self.holder == me:
            self.count += 1
            ctx.session.hold(self, 1)
            ctx.track(self, 1)
            return answer
        if not blocking or wait == 0:
            return False
        ctx.park(self.waiters, wait, data=(1, answer, True), on_timeout=_answer_false)
        return PARKED

    def release(self, ctx: CallContext) -> None:
        if self.lent:
            self._recall()
        holder = self.holder
        if (
            holder is not None
            and holder[0] is ctx.session
            and not self.waiters.live
            and not self.reentrant
            and not self._orphaned
        ):
            self.holder = None  # the usual release: its holder's, nobody waits (``_free``)
            self.count = 0
            ctx.session.unhold(self, 1)
            return
        mine = holder == (ctx.session, ctx.owner)
        if holder is not None and holder[0] is not ctx.session:
            self.crossed = True
        if self._orphaned and not mine and not self.reentrant:
            # (The stdlib's lock would still be held by the process that ended: this release
            # frees it there, and the lock ends as ours already is.)
            self._orphaned = False
            return
        if self.holder is None:
            raise RuntimeError(
                "cannot release un-acquired lock" if self.reentrant else "release unlocked lock"
            )
        self._orphaned = False  # (used again since: a late release of the gone one is an error)
        if self.reentrant:
            if not mine:
                raise RuntimeError("cannot release un-acquired lock")
            self.count -= 1
            ctx.session.unhold(self, 1)
            if self.count:
                return
        else:
            self.holder[0].unhold(self, 1)
        self._free(ctx.host, ctx.now)

    def locked(self) -> bool:
        if self.lent:
            return self.loan.holder() != 0  # type: ignore[union-attr]
        return self.holder is not None

    def _is_owned(self, ctx: CallContext) -> bool:
        if self.lent:
            self._recall()
        return self.holder == (ctx.session, ctx.owner)

    def state(self) -> tuple[tuple[Session, int] | None, int]:
        """``(holder, count)`` now, lent or not (a look: it recalls nothing)."""
        loan = self.loan
        if self.lent and loan is not None:
            owner = loan.holder()
            return ((loan.session, owner), loan.count()) if owner else (None, 0)
        return self.holder, self.count

    # lending (see ``.._loans``)
    def lend(self, page: LoanPage, session: Session) -> Loan | None:
        """Lend the lock just granted to ``session``, if it may be: its loan, or ``None``."""
        holder = self.holder
        if (
            self.loan is not None
            or not self.lendable
            or self.waiters
            or self._orphaned
            or holder is None
            or holder[0] is not session
            or self.before is not session
            or len(session.loans) >= MAX_LOANS
        ):
            return None
        loan = page.lend(self, session, holder[1], self.count)
        if loan is None:
            return None
        session.unhold(self, self.count)
        self.holder = None
        self.count = 0
        self.loan = loan
        self.lent = True
        return loan

    def _recall(self) -> None:
        """Take the lock back from its borrower: from now on this object decides who holds
        it, and a holder the recall finds holds it here until it gives the loan back."""
        loan = self.loan
        assert loan is not None
        self.lent = False
        self.recalled = True
        owner, count = loan.recall()
        if owner:
            self.holder = (loan.session, owner)
            self.count = max(count, 1)
            loan.session.hold(self, self.count)

    def return_loan(
        self, ctx: CallContext, number: Any, owner: Any, count: Any, released: Any
    ) -> None:
        """``#loan``: the borrower gives loan ``number`` back, holding the lock ``count``
        times under ``owner`` (0: not at all), then releases it once if ``released`` (the
        release that found the recall). A loan it no longer has out changes nothing."""
        session = ctx.session
        loan = session.loans.get(number) if type(number) is int else None
        if loan is not None and loan.lock is self:
            ctx.host.count("loans given back")
            if self.lent and self.loan is loan:
                self._recall()  # (given back before the borrower saw a recall)
            loan.end()
            if self.loan is loan:
                self.loan = None
            found = loan.owner
            if found and self.holder == (session, found):
                # Held when recalled: now as its borrower says (a back-out frees it).
                session.unhold(self, self.count)
                if type(owner) is int and owner and type(count) is int and count > 0:
                    self.holder = (session, owner)
                    self.count = count
                    session.hold(self, count)
                else:
                    self._free(ctx.host, ctx.now)
        if released:
            self.release(ctx)

    def borrower_gone(self, loan: Loan) -> None:
        """The session ``loan`` was lent to ended: a lock it held is free (as any lock whose
        holder's process ended); one recalled from it is freed with its holdings."""
        if self.lent and self.loan is loan:
            self.lent = False
            if loan.holder():
                self._orphaned = True
        if self.loan is loan:
            self.loan = None
        loan.end()

    def disposed(self) -> None:
        """Nobody refers to it any more: its loan's slot is free (nobody can touch it)."""
        if self.loan is not None:
            self.lent = False
            self.loan.end()
            self.loan = None

    # used by Condition
    def owned_by(self, session: Session, owner: int) -> bool:
        """Whether a Condition may wait/notify: an RLock must be the caller's, a plain Lock
        only locked (threading.Condition's rule)."""
        if self.lent:
            self._recall()
        if self.reentrant:
            return self.holder == (session, owner)
        return self.holder is not None

    def release_save(self, host: Host) -> int:
        """Release completely; return the count to restore later."""
        if self.lent:
            self._recall()
        holder, count = self.holder, self.count
        if holder is None:
            raise RuntimeError("cannot release un-acquired lock")
        holder[0].unhold(self, count)
        self._free(host)
        return count

    def acquire_restore(self, host: Host, waiter: Waiter, count: int, answer: Any) -> None:
        """Give the lock to ``waiter`` (with ``count``) and answer it, now or when free."""
        waiter.deadline = None
        waiter.data = (count, answer, False)  # (a Condition's: its caller keeps the lock)
        if self.lent:
            self._recall()
        if self.holder is None:
            self._grant(host, (waiter.session, waiter.owner), count)
            host.answer(waiter, answer)
        else:
            self.waiters.park(waiter)

    def window_closed(self, host: Host, until: float) -> None:
        """The window opened by a release until ``until`` passed (``Host.open_window``)."""
        if self._open_until != until:
            return  # taken meanwhile (and perhaps released and opened again)
        self._open_until = 0.0
        if self.waiters:
            self._misses = min(self._misses + 1, _MAX_SKIP_SHIFT)
            self._skips = 1 << self._misses
            self._pass_on(host)

    # internals
    def _keep_open(self, host: Host, now: float) -> bool:
        """Whether to leave the just released lock free for a moment (see the class)."""
        window = host.lock_window
        if not window or not self.waiters:
            return False  # (a skip counts only releases that hand over)
        if self._skips:
            self._skips -= 1
            return False
        first = self.waiters.first()
        if first is None or now - first.since >= FAIR_AFTER:
            return False
        self._open_until = until = now + window
        host.open_window(self, until)
        return True

    def _grant(self, host: Host, owner: tuple[Session, int], count: int) -> None:
        if self._open_until:  # taken within a release's window
            self._open_until = 0.0
            self._misses = 0
            host.count("lock barges")
        if self.bound_leases:
            # (the new holder may post to them once it has its grant: end them before)
            host.end_leases(self.bound_leases)
            self.bound_leases = None
        self.holder = owner
        self.count = count
        self.before, self.taker = self.taker, owner[0]
        owner[0].hold(self, count)

    def _free(self, host: Host, released_at: float | None = None) -> None:
        """Unlock and pass it to the next waiter, or, for a ``release()`` (``released_at``),
        perhaps leave it free a moment for whoever asks first (see the class). (The leases
        granted with it stay: like any lease, each lasts until its object changes.)"""
        self.holder = None
        self.count = 0
        if released_at is None or not self._keep_open(host, released_at):
            self._pass_on(host)

    def _pass_on(self, host: Host) -> None:
        while self.holder is None:
            waiter = self.waiters.pop()
            if waiter is None:
                return
            if not host.deliverable(waiter.session):
                continue
            count, answer, track = waiter.data
            self._grant(host, (waiter.session, waiter.owner), count)
            if track:
                host.track(waiter.session, waiter.req_id, waiter.owner, self, count)
            host.answer(waiter, answer)

    def drop_session(self, host: Host, session: Session, held: int) -> None:
        if self.lent:
            self._recall()
        if self.holder is not None and self.holder[0] is session:
            self._orphaned = True
            self._free(host)

    def give_back(self, host: Host, session: Session, owner: int, what: Any) -> None:
        if self.lent:
            self._recall()
        if self.holder != (session, owner):
            return  # (released meanwhile)
        if self.count > what:
            self.count -= what
            session.unhold(self, what)
            return
        session.unhold(self, self.count)
        self._free(host)

    def describe(self) -> dict[str, Any]:
        holder, count = self.state()
        return {
            "locked": holder is not None,
            "holder": None if holder is None else _owner_desc(*holder),
            "count": count,
            "waiters": _waiters_desc(self.waiters),
            "lent": self.lent,
        }


class RLock(Lock):
    """A reentrant mutex: the same owner may acquire it again; each release undoes one."""

    kind = "RLock"
    reentrant = True


class Semaphore(Primitive):
    """A counting semaphore; slots are held per session until it is used for signalling."""

    kind = "Semaphore"
    bounded = False

    def __init__(self, value: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"semaphore value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.value = value
        self.initial = value
        self.tracking = True
        self.holders: dict[Session, int] = {}
        self.waiters = WaitQueue()
        #: slots given back because their holders' processes ended: as many release() calls
        #: by others, which the stdlib's semaphore would count (its slots stay taken by the gone
        #: processes), are accepted and change nothing
        self._orphaned = 0

    def acquire(self, ctx: CallContext, blocking: Any = True, timeout: Any = None) -> Any:
        if timeout is not None and not blocking:
            raise ValueError("can't specify timeout for non-blocking acquire")
        wait = None if timeout is None else max(0.0, float(timeout))
        if self.value > 0 and not self.waiters:
            self.value -= 1
            self._take(ctx.session)
            ctx.track(self, 1)
            return True
        if not blocking or wait == 0:
            return False
        ctx.park(self.waiters, wait, on_timeout=_answer_false)
        return PARKED

    def release(self, ctx: CallContext, n: int = 1) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError("n must be one or more")
        mine = self.holders.get(ctx.session, 0)
        if self._orphaned and mine < n:
            settled = min(n, self._orphaned)  # (see __init__)
            self._orphaned -= settled
            n -= settled
            if not n:
                return
        if self.bounded and self.value + n > self.initial:
            raise ValueError("Semaphore released too many times")
        if self.tracking:
            if mine >= n:
                self._give_back(ctx.session, n)
            else:
                # Released by a session that holds no slot: a signal, not a slot returned.
                self.tracking = False
                for session, held in self.holders.items():
                    session.unhold(self, held)
                self.holders.clear()
        self.value += n
        self._pass_on(ctx.host)

    def get_value(self) -> int:
        return self.value

    def _take(self, session: Session) -> None:
        if self.tracking:
            self.holders[session] = self.holders.get(session, 0) + 1
            session.hold(self, 1)

    def _give_back(self, session: Session, n: int) -> None:
        left = self.holders[session] - n
        if left:
            self.holders[session] = left
        else:
            del self.holders[session]
        session.unhold(self, n)

    def _pass_on(self, host: Host) -> None:
        while self.value > 0:
            waiter = self.waiters.pop()
            if waiter is None:
                return
            if not host.deliverable(waiter.session):
                continue
            self.value -= 1
            self._take(waiter.session)
            host.track(waiter.session, waiter.req_id, waiter.owner, self, 1)
            host.answer(waiter, True)

    def drop_session(self, host: Host, session: Session, held: int) -> None:
        slots = self.holders.pop(session, 0)
        if slots:
            self.value += slots
            self._orphaned += slots
            self._pass_on(host)

    def give_back(self, host: Host, session: Session, owner: int, what: Any) -> None:
        if self.tracking and self.holders.get(session, 0) >= what:
            self._give_back(session, what)
        self.value += what
        self._pass_on(host)

    def describe(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "tracking_slots": self.tracking,
            "holders": [dict(_owner_desc(s, 0), slots=n) for s, n in self.holders.items()],
            "waiters": _waiters_desc(self.waiters),
        }


class BoundedSemaphore(Semaphore):
    """A semaphore that refuses to be released above its initial value."""

    kind = "BoundedSemaphore"
    bounded = True


class Condition(Primitive):
    """A condition variable over a shared Lock or RLock (a new RLock by default).

    Waiter data while waiting for a notify: the lock count to restore.
    """

    kind = "Condition"

    def __init__(self, lock: Lock | None = None, lock_ref: Any = None) -> None:
        self._lock_ref = lock_ref  # the proxy the lock came as: keeps the shared lock alive
        self.lock: Lock = RLock() if lock is None else lock
        self.lock.lendable = False  # (its waits and notifies need it here: ``.._loans``)
        if self.lock.lent:
            self.lock._recall()
        self.waiters = WaitQueue()

    def acquire(self, ctx: CallContext, blocking: Any = True, timeout: Any = -1) -> Any:
        return self.lock.acquire(ctx, blocking, timeout)

    def release(self, ctx: CallContext) -> None:
        self.lock.release(ctx)

    def wait(self, ctx: CallContext, timeout: Any = None) -> Any:
        if not self.lock.owned_by(ctx.session, ctx.owner):
            raise RuntimeError("cannot wait on un-acquired lock")
        wait = _wait_timeout(timeout)
        count = self.lock.release_save(ctx.host)
        ctx.park(
            self.waiters, wait, data=count, on_timeout=self._timed_out, on_withdraw=self._timed_out
        )
        return PARKED

    def notify(self, ctx: CallContext, n: int = 1) -> None:
        if not self.lock.owned_by(ctx.session, ctx.owner):
            raise RuntimeError("cannot notify on un-acquired lock")
        for _ in range(n):
            waiter = self.waiters.pop()
            if waiter is None:
                break
            self.lock.acquire_restore(ctx.host, waiter, waiter.data, True)

    def notify_all(self, ctx: CallContext) -> None:
        self.notify(ctx, len(self.waiters))

    def _timed_out(self, host: Host, waiter: Waiter) -> None:
        """Its timeout passed, or its caller abandoned it: as ``threading``'s, the wait ends
        holding the lock again (answered ``False``: not notified) once it is free. A waiter
        notified already waits for the lock (``acquire_restore``): abandoned, it goes on
        waiting for it, and its caller gets it (and its ``True``) before it stops."""
        if waiter.queue is not self.waiters:
            return
        self.waiters.remove(waiter)
        self.lock.acquire_restore(host, waiter, waiter.data, False)

    def describe(self) -> dict[str, Any]:
        return {"lock": self.lock.describe(), "waiters": _waiters_desc(self.waiters)}


def _make_condition(resolve: Callable[[Any], Any], lock: Any = None) -> Condition:
    if lock is None:
        return Condition()
    target = resolve(lock)
    if not isinstance(target, Lock):
        raise TypeError(
            "Condition(lock) needs a Lock or RLock created by the same manager, "
            f"not {type(lock).__name__}"
        )
    return Condition(target, lock)


class Event(Primitive):
    """An event flag; ``wait`` parks until it is set."""

    kind = "Event"

    def __init__(self) -> None:
        self.flag = False
        self.waiters = WaitQueue()

    def is_set(self) -> bool:
        return self.flag

    def set(self, ctx: CallContext) -> None:
        self.flag = True
        for waiter in self.waiters.pop_all():
            ctx.host.answer(waiter, True)

    def clear(self) -> None:
        self.flag = False

    def wait(self, ctx: CallContext, timeout: Any = None) -> Any:
        if self.flag:
            return True
        wait = _wait_timeout(timeout)
        if wait == 0:
            return False
        ctx.park(self.waiters, wait, on_timeout=_answer_false)
        return PARKED

    def describe(self) -> dict[str, Any]:
        return {"set": self.flag, "waiters": _waiters_desc(self.waiters)}


class Barrier(Primitive):
    """A barrier for ``parties`` callers; breaks on timeout, abort, or a waiting party's death.

    Waiter data: the arrival index to answer with.
    """

    kind = "Barrier"

    def __init__(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: Any = None
    ) -> None:
        if not isinstance(parties, int) or parties < 1:
            raise ValueError("parties must be >= 1")
        self.parties = parties
        self.action = action
        self.default_timeout = timeout
        self.broken = False
        self.waiters = WaitQueue()
        #: the last party of the round whose action runs now (``None``: none runs)
        self._tripping: Waiter | None = None
        #: parties that arrived while it ran
        self._next_round = WaitQueue()

    @property
    def n_waiting(self) -> int:
        return len(self.waiters)

    def wait(self, ctx: CallContext, timeout: Any = None) -> Any:
        if timeout is None:
            timeout = self.default_timeout
        if self.broken:
            raise threading.BrokenBarrierError
        if self._tripping is not None:
            # The action runs (on a worker): arrivals wait for the next round, as
            # threading.Barrier's wait for its lock while the action holds it.
            ctx.park(
                self._next_round,
                _wait_timeout(timeout),
                on_timeout=self._timed_out,
                on_cancel=self._party_gone,
            )
            return PARKED
        index = len(self.waiters)
        if index + 1 < self.parties:
            ctx.park(
                self.waiters,
                _wait_timeout(timeout),
                data=index,
                on_timeout=self._timed_out,
                on_cancel=self._party_gone,
                on_withdraw=self._party_left,
            )
            return PARKED
        if self.action is not None:
            # The action is user code, which may call shared objects (proxies): it runs on a
            # worker thread, as a custom method does; the last party waits for it with the rest.
            last = ctx.park(self.waiters, None, data=index, on_cancel=self._party_gone)
            self._tripping = last
            ctx.host.run_job(ctx.session, ctx.req_id, self.action, self._action_ran)
            return PARKED
        for waiter in self.waiters.pop_all():
            ctx.host.answer(waiter, waiter.data)
        return index

    def _action_ran(self, host: Host, ok: bool, value: Any) -> None:
        """The action ended (on the loop thread): release the round, or break the barrier,
        the last party getting what the action raised; then let in the next round."""
        last, self._tripping = self._tripping, None
        if self.broken:  # (a party died, or abort(), meanwhile: all were answered)
            pass
        elif ok:
            for waiter in self.waiters.pop_all():
                host.answer(waiter, waiter.data)
        else:
            if last is not None and last.parked:
                self.waiters.remove(last)
                error = value if isinstance(value, Exception) else None
                host.answer_error(last, error or threading.BrokenBarrierError())
            self._break(host)
        for waiter in self._next_round.pop_all():
            self._arrive(host, waiter)

    def _arrive(self, host: Host, waiter: Waiter) -> None:
        """A party of the next round, which waited while the action ran, arrives now."""
        if self.broken:
            host.answer_error(waiter, threading.BrokenBarrierError())
            return
        if self._tripping is not None:
            self._next_round.park(waiter)
            return
        waiter.data = index = len(self.waiters)
        waiter.on_withdraw = self._party_left
        self.waiters.park(waiter)
        if index + 1 < self.parties:
            return
        if self.action is not None:
            self._tripping = waiter
            waiter.deadline = None  # (its wait is over: the action runs; the heap drops it)
            host.run_job(waiter.session, waiter.req_id, self.action, self._action_ran)
            return
        for ready in self.waiters.pop_all():
            host.answer(ready, ready.data)

    def abort(self, ctx: CallContext) -> None:
        self._break(ctx.host)

    def reset(self, ctx: CallContext) -> None:
        self._break(ctx.host)
        self.broken = False

    def remote_attribute(self, name: str) -> Any:
        if name not in ("parties", "n_waiting", "broken"):
            raise AttributeError(f"Barrier attribute {name!r} is not exposed")
        return getattr(self, name)

    def _break(self, host: Host) -> None:
        self.broken = True
        for waiter in self.waiters.pop_all():
            host.answer_error(waiter, threading.BrokenBarrierError())
        if self._tripping is None:
            for waiter in self._next_round.pop_all():
                host.answer_error(waiter, threading.BrokenBarrierError())

    def _timed_out(self, host: Host, waiter: Waiter) -> None:
        if waiter.queue is not None:
            waiter.queue.remove(waiter)
        host.answer_error(waiter, threading.BrokenBarrierError())
        self._break(host)

    def _party_gone(self, host: Host, waiter: Waiter) -> None:
        self._break(host)

    def _party_left(self, host: Host, waiter: Waiter) -> None:
        """A waiting party abandoned its wait (it lives on, and may wait again): the others
        wait for one party more, arrival indices stay 0, 1, 2, ..."""
        self.waiters.remove(waiter)
        for index, other in enumerate(self.waiters):
            other.data = index
        host.answer_error(waiter, _withdrawn())

    def describe(self) -> dict[str, Any]:
        return {
            "parties": self.parties,
            "broken": self.broken,
            "waiters": _waiters_desc(self.waiters),
        }


class Queue(Primitive):
    """A FIFO queue with queue.Queue's API, including task_done/join.

    Nothing is lost to a consumer that is killed: an item on its way to it (handed over, not
    yet shown to have arrived: ``Host.track``) goes back to the front. Task accounting
    survives deaths: the server counts, per session, items taken and not yet marked done;
    when a session goes away its count is settled, so ``join()`` cannot hang on a dead
    consumer. A JoinableQueue goes further: the unfinished items of a consumer that was
    killed (not one that exited, which said ``Goodbye``) go back to the front, to be done by
    another. Both are *at least once* for killed consumers; ``redeliver=False`` makes a queue
    *at most once*, as the stdlib's (what a killed consumer took is lost with it).
    """

    kind = "Queue"
    #: a JoinableQueue keeps the items taken, to deliver again the unfinished ones
    keeps_taken = False

    def __init__(self, maxsize: int = 0, *, redeliver: bool = True) -> None:
        if not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        self.redeliver = bool(redeliver)
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        self.getters = WaitQueue()
        self.putters = WaitQueue()  # waiter data: the item to put
        self.joiners = WaitQueue()
        self.unfinished = 0
        self.taken: dict[Session, deque[Any]] = {}  # items handed out, not yet task_done
        #: says in the lease page whether a getter is parked (``.._leases.waiting_of``): a
        #: put is posted only while none is (the core sets it: ``None`` without a page)
        self.publish: Callable[[bool], None] | None = None
        self._flagged = False

    def _full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)

    def qsize(self) -> int:
        return len(self.items)

    def empty(self) -> bool:
        return not self.items

    def full(self) -> bool:
        return self._full()

    def put(self, ctx: CallContext, item: Any, block: Any = True, timeout: Any = None) -> Any:
        if self.maxsize <= 0 and not self.getters.live and block is True and timeout is None:
            self.unfinished += 1  # the usual put: unbounded, nobody waiting (``_enqueue``)
            self.items.append(item)
            if self._flagged:
                self._flag()  # (its getters timed out or went: posts may go on)
            return None
        wait = _queue_timeout(block, timeout)
        if not self._full() and not self.putters:
            self._enqueue(ctx.host, item)
            return None
        if not block:
            raise queue.Full
        ctx.park(self.putters, wait, data=item, on_timeout=_answer_full)
        return PARKED

    def put_nowait(self, ctx: CallContext, item: Any) -> Any:
        return self.put(ctx, item, False)

    def get(self, ctx: CallContext, block: Any = True, timeout: Any = None) -> Any:
        wait = None if block is True and timeout is None else _queue_timeout(block, timeout)
        if self.items:
            item = self.items.popleft()
            self._hand_out(ctx.session, item)
            ctx.track(self, item)
            if self.putters.live:
                self._admit_putters(ctx.host)
            return item
        if not block:
            raise queue.Empty
        ctx.park(self.getters, wait, on_timeout=_answer_empty)
        self._flag()
        return PARKED

    def get_nowait(self, ctx: CallContext) -> Any:
        return self.get(ctx, False)

    def task_done(self, ctx: CallContext) -> None:
        if self.unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._settle(ctx.host, ctx.session, 1)

    def join(self, ctx: CallContext) -> Any:
        if self.unfinished == 0:
            return None
        ctx.park(self.joiners, None)
        return PARKED

    # internals
    def _enqueue(self, host: Host, item: Any) -> None:
        self.unfinished += 1
        while True:
            getter = self.getters.pop()
            if getter is None:
                self.items.append(item)
                return
            if host.deliverable(getter.session):
                self._hand_out(getter.session, item)
                host.track(getter.session, getter.req_id, getter.owner, self, item)
                host.answer(getter, item)
                self._flag()
                return

    def _flag(self) -> None:
        """Publish whether a getter is parked, where that changed (``publish``)."""
        waiting = bool(self.getters.live)
        if waiting != self._flagged and self.publish is not None:
            self._flagged = waiting
            self.publish(waiting)

    def _hand_out(self, session: Session, item: Any) -> None:
        taken = self.taken.get(session)
        if taken is None:
            taken = self.taken[session] = deque()
            session.hold(self, 1)  # so the session's end settles its accounting here
        # A plain Queue remembers only how many; a JoinableQueue keeps the items to put back.
        taken.append(item if self.keeps_taken and self.redeliver else None)

    def _admit_putters(self, host: Host) -> None:
        while not self._full():
            putter = self.putters.pop()
            if putter is None:
                return
            self._enqueue(host, putter.data)
            host.answer(putter, None)

    def _settle(self, host: Host, session: Session, n: int) -> None:
        """Mark ``n`` tasks done, charging them to ``session``'s taken items first."""
        for _ in range(n):
            taken = self.taken.get(session)
            if not taken:
                # Done by someone other than the taker: retire the oldest outstanding item.
                session = next((s for s, t in self.taken.items() if t), session)
                taken = self.taken.get(session)
            if taken:
                taken.popleft()
                if not taken:
                    del self.taken[session]
                    session.unhold(self, 1)
                _arrived_from(session, self)  # (its task is done: it must not come back)
            self.unfinished -= 1
        if self.unfinished == 0:
            for joiner in self.joiners.pop_all():
                host.answer(joiner, None)

    def drop_session(self, host: Host, session: Session, held: int) -> None:
        taken = self.taken.pop(session, None)
        if not taken:
            return
        if self.keeps_taken and self.redeliver and not session.said_goodbye:
            # Put the dead consumer's unfinished items back at the front, oldest first.
            self.unfinished -= len(taken)
            for item in reversed(taken):
                self.items.appendleft(item)
                self.unfinished += 1
            self._redeliver(host)
        else:
            self.unfinished -= len(taken)
            if self.unfinished == 0:
                for joiner in self.joiners.pop_all():
                    host.answer(joiner, None)

    def _redeliver(self, host: Host) -> None:
        while self.items:
            getter = self.getters.pop()
            if getter is None:
                return
            if host.deliverable(getter.session):
                item = self.items.popleft()
                self._hand_out(getter.session, item)
                host.track(getter.session, getter.req_id, getter.owner, self, item)
                host.answer(getter, item)

    def lost(self, host: Host, session: Session, owner: int, what: Any) -> None:
        """An item on its way to a consumer that ended first goes back (nothing is lost;
        a consumer killed as it arrived may have seen it: at least once, then)."""
        if self.redeliver:
            self.give_back(host, session, owner, what)

    def give_back(self, host: Host, session: Session, owner: int, what: Any) -> None:
        """Put an item its taker never received back at the front (nothing is lost): it was
        not taken, so no task was started either."""
        taken = self.taken.get(session)
        if taken:
            if self.keeps_taken and self.redeliver:
                for i in range(len(taken) - 1, -1, -1):
                    if taken[i] is what:
                        del taken[i]
                        break
            else:
                taken.pop()
            if not taken:
                del self.taken[session]
                session.unhold(self, 1)
        self.items.appendleft(what)
        self._redeliver(host)

    def describe(self) -> dict[str, Any]:
        return {
            "size": len(self.items),
            "maxsize": self.maxsize,
            "redeliver": self.redeliver,
            "unfinished": self.unfinished,
            "getters": _waiters_desc(self.getters),
            "putters": _waiters_desc(self.putters),
            "joiners": _waiters_desc(self.joiners),
        }


class JoinableQueue(Queue):
    """A Queue whose items taken by a consumer that is killed before ``task_done`` are
    delivered again (see ``Queue``)."""

    kind = "JoinableQueue"
    keeps_taken = True


# -- waiter callbacks shared by several primitives ----------------------------------------------


def _arrived_from(session: Session, prim: Primitive) -> None:
    """Forget the oldest thing ``prim`` has on its way to ``session`` (it arrived)."""
    for rid, record in session.in_flight.items():
        if record[0] is prim:
            del session.in_flight[rid]
            return


def _withdrawn() -> CallWithdrawn:
    return CallWithdrawn("withdrawn: its caller abandoned it")


def _answer_false(host: Host, waiter: Waiter) -> None:
    if waiter.queue is not None:
        waiter.queue.remove(waiter)
    host.answer(waiter, False)


def _answer_full(host: Host, waiter: Waiter) -> None:
    if waiter.queue is not None:
        waiter.queue.remove(waiter)
    host.answer_error(waiter, queue.Full())


def _answer_empty(host: Host, waiter: Waiter) -> None:
    if waiter.queue is not None:
        waiter.queue.remove(waiter)
    host.answer_error(waiter, queue.Empty())


# -- handler tables --------------------------------------------------------------------------


def _plain(fn: Callable[..., Any]) -> Handler:
    return (fn, False)


def _ctx(fn: Callable[..., Any]) -> Handler:
    return (fn, True)


def _returns_none(fn: Callable[..., Any]) -> Callable[..., None]:
    def call(obj: Any, *args: Any, **kwargs: Any) -> None:
        fn(obj, *args, **kwargs)

    call.__name__ = fn.__name__
    return call


def _container_handlers(cls: type, kind: str, special: dict[str, Handler]) -> dict[str, Handler]:
    """Handlers of a built-in container: every method ``_kinds.py`` exposes for ``kind`` is the
    class's own, except the ``special`` ones."""
    handlers = dict(special)
    for name in KINDS[kind].exposed:
        if name not in handlers:
            handlers[name] = _plain(getattr(cls, name))
    return handlers


def _dict_handlers() -> dict[str, Handler]:
    return _container_handlers(
        dict,
        "dict",
        {
            "keys": _plain(list),
            "__iter__": _plain(iter),  # the core turns it into a LiveIterator object
            "values": _plain(lambda d: list(d.values())),
            "items": _plain(lambda d: list(d.items())),
            "__reversed__": _plain(lambda d: list(reversed(d))),
            "__or__": _plain(lambda d, other: d | other),
            "__ror__": _plain(lambda d, other: other | d),
            "__ior__": _plain(_returns_none(dict.update)),
            "increment": _plain(_dict_increment),
            "compare_and_set": _plain(_dict_compare_and_set),
        },
    )


def _dict_increment(d: dict[Any, Any], key: Any, by: Any = 1, default: Any = 0) -> Any:
    """``d[key] = d.get(key, default) + by``, atomically; the new value."""
    value = d.get(key, default) + by
    d[key] = value
    return value


def _dict_compare_and_set(d: dict[Any, Any], key: Any, expected: Any, new: Any) -> bool:
    """``d[key] = new`` if ``d[key] == expected``, atomically; whether it was set.

    Raises KeyError if ``key`` is absent (``setdefault`` inserts when absent).
    """
    if d[key] == expected:
        d[key] = new
        return True
    return False


def _list_handlers() -> dict[str, Handler]:
    return _container_handlers(
        list,
        "list",
        {
            "__reversed__": _plain(lambda lst: lst[::-1]),
            "__iadd__": _plain(_returns_none(list.extend)),
            "__imul__": _plain(_returns_none(list.__imul__)),
        },
    )


def _set_handlers() -> dict[str, Handler]:
    # __iter__: the core turns the iterator into a LiveIterator object
    return _container_handlers(set, "set", {"__iter__": _plain(iter)})


def _ns_getattr(ns: Namespace, name: str) -> Any:
    _check_attr_name(name)
    return getattr(ns, name)


def _ns_setattr(ns: Namespace, name: str, value: Any) -> None:
    _check_attr_name(name)
    setattr(ns, name, value)


def _ns_delattr(ns: Namespace, name: str) -> None:
    _check_attr_name(name)
    delattr(ns, name)


def _check_attr_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"attribute name must be a string, not {type(name).__name__}")
    if name.startswith("__"):
        raise AttributeError(f"attribute {name!r} of a shared Namespace is not accessible")


def _namespace_handlers() -> dict[str, Handler]:
    return _container_handlers(
        Namespace,
        "Namespace",
        {
            "__getattribute__": _plain(_ns_getattr),
            "__setattr__": _plain(_ns_setattr),
            "__delattr__": _plain(_ns_delattr),
            "_asdict": _plain(lambda ns: {k: v for k, v in vars(ns).items()}),
        },
    )


def _value_handlers() -> dict[str, Handler]:
    return _container_handlers(Value, "Value", {})


def _array_handlers() -> dict[str, Handler]:
    return _container_handlers(array.array, "Array", {})


def _live_iterator_handlers() -> dict[str, Handler]:
    return {
        "__next__": _plain(next),
        "__repr__": _plain(lambda it: f"<live iterator over a shared {_source(it)}>"),
        "__str__": _plain(lambda it: f"<live iterator over a shared {_source(it)}>"),
    }


def _source(it: Any) -> str:
    return "set" if "set" in type(it).__name__ else "dict"


def _primitive_handlers(cls: type[Primitive]) -> dict[str, Handler]:
    kind = KINDS[cls.kind]
    h: dict[str, Handler] = {
        "__repr__": _plain(_primitive_repr),
        "__str__": _plain(_primitive_repr),
    }
    for name, method in kind.methods.items():
        if name in h:
            continue
        if name == "__getattribute__":
            h[name] = _plain(cls.remote_attribute)  # type: ignore[attr-defined]
            continue
        fn = getattr(cls, name)
        h[name] = _ctx(fn) if (method.blocks or method.owner or _needs_ctx(fn)) else _plain(fn)
    if issubclass(cls, Lock):
        h["#loan"] = _ctx(cls.return_loan)  # (a borrower's, ``.._loans``: no proxy method)
    return h


def _needs_ctx(fn: Callable[..., Any]) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_argcount > 1 and code.co_varnames[1] == "ctx"


def _primitive_repr(obj: Primitive) -> str:
    """The referent's repr in the standard library's words (its manager holds threading and
    queue objects, and ``print(proxy)`` shows theirs)."""
    at = f"at {id(obj):#x}"
    if isinstance(obj, Lock):
        holder, count = obj.state()
        state = "locked" if holder is not None else "unlocked"
        if obj.reentrant:
            owner = holder[1] if holder is not None else 0
            return f"<{state} _thread.RLock object owner={owner} count={count} {at}>"
        return f"<{state} _thread.lock object {at}>"
    if isinstance(obj, Semaphore):
        if obj.bounded:
            return f"<threading.BoundedSemaphore {at}: value={obj.value}/{obj.initial}>"
        return f"<threading.Semaphore {at}: value={obj.value}>"
    if isinstance(obj, Condition):
        return f"<Condition({_primitive_repr(obj.lock)}, {len(obj.waiters)})>"
    if isinstance(obj, Event):
        return f"<threading.Event {at}: {'set' if obj.flag else 'unset'}>"
    if isinstance(obj, Barrier):
        if obj.broken:
            return f"<threading.Barrier {at}: broken>"
        return f"<threading.Barrier {at}: waiters={obj.n_waiting}/{obj.parties}>"
    if isinstance(obj, Queue):
        return f"<queue.Queue object {at}>"
    return f"<{obj.kind} {at}>"


def make_referent(
    kind: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    resolve: Callable[[Any], Any],
) -> Any:
    """Create the referent of a built-in kind from the arguments a proxy factory was given.

    ``resolve`` maps a proxy received as an argument to the referent it stands for on this
    server (a Condition built over a shared Lock), or ``None``.
    """
    if kind == "Condition":
        return _make_condition(resolve, *args, **kwargs)
    if kind in ("dict", "list", "set") and args:
        # m.dict(proxy): a copy of what it stands for, as the stdlib's (whose server iterates
        # the proxy; ours reads the referent, here on the loop thread that serves proxies)
        referent = resolve(args[0])
        if referent is not None:
            args = (referent, *args[1:])
    return FACTORIES[kind](*args, **kwargs)


#: What makes each built-in kind's referent (a Condition, over its lock: ``make_referent``);
#: the manager registers these callables, and knows its own kinds by them.
FACTORIES: Final[dict[str, Callable[..., Any]]] = {
    "dict": dict,
    "list": list,
    "set": set,
    "Namespace": Namespace,
    "Value": Value,
    "Array": Array,
    "Lock": Lock,
    "RLock": RLock,
    "Semaphore": Semaphore,
    "BoundedSemaphore": BoundedSemaphore,
    "Event": Event,
    "Barrier": Barrier,
    "Queue": Queue,
    "JoinableQueue": JoinableQueue,
    "Condition": Condition,
}

#: Handlers of every built-in kind: ``HANDLERS[kind][method] = (function, takes_ctx)``.
HANDLERS: Final[dict[str, dict[str, Handler]]] = {
    "dict": _dict_handlers(),
    "list": _list_handlers(),
    "set": _set_handlers(),
    "Namespace": _namespace_handlers(),
    "Value": _value_handlers(),
    "Array": _array_handlers(),
    "LiveIterator": _live_iterator_handlers(),
    **{
        cls.kind: _primitive_handlers(cls)
        for cls in (
            Lock,
            RLock,
            Semaphore,
            BoundedSemaphore,
            Condition,
            Event,
            Barrier,
            Queue,
            JoinableQueue,
        )
    },
}
