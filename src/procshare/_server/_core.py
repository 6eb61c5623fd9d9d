"""The server core: the object table, the sessions, and dispatch, one operation at a time.

Everything that reads or changes shared state happens here, on the server's loop thread, one
operation after another: each operation is atomic without a lock per object. Blocking operations
park a waiter and return; the operation that satisfies them answers later. Methods of custom
(registered) classes run user code that may block or call back into the server, so they are
handed out as :class:`Job` objects for the transport's worker threads and finished here.

The core never touches a socket or a clock. The transport feeds it decoded messages together
with the current monotonic time (``now``) and sends what the core wrote into each session's
outbox (``Session.out``; the sessions with output are listed in ``Core.dirty``). Tests drive
the core directly with a fake clock.

What keeps an object alive (reference counts, the cycle collector) is ``_references``.

Posts (``Post``): a client on this machine sends some calls without waiting for their answer
(a release by a lock's holder; a put on an unbounded queue it registered to post to). Such a
call is done for its sender once it is written, so it may still sit unread in the sender's
connection when a request of another process, which the sender told through some other
channel, reaches the same object. So before a request touches an object that others post to
(``Entry.posters``), or a lock whose holder may post its release, the core asks its host to
``catch_up`` with them: their connections are read and what they sent first is applied. A
request whose caller waits for its answer catches up with everything (nothing can have been
caused by it yet); a post catches up only with posts stamped before it (the stamps are
``CLOCK_MONOTONIC``, taken as each was written: one that another process wrote after learning
of this one is stamped later). Posters never post while they wait for an answer of their own,
so nothing they posted waits behind a request decoded off the loop.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from .._errors import (
    CallWithdrawn,
    ErrorNotRebuildable,
    MemoryLimitError,
    MethodNotExposed,
    NameTakenError,
    ObjectNotFound,
    ProcshareError,
    ProtocolError,
    RemoteError,
    ResultNotSerializable,
    SerializationError,
)
from .._kinds import KINDS, REPLAYABLE_KINDS, REPLAYABLE_READS
from .._leases import (
    ALONG,
    BOUND,
    LeaseRequest,
    leasable_args,
    parse_reads,
)
from .._loans import LoanPage
from .._protocol import (
    BadRequest,
    Batch,
    Call,
    Cancel,
    Control,
    Create,
    Goodbye,
    LeaseAcquire,
    LeasedRead,
    Post,
    ReadSince,
    Release,
    Retain,
    ServerProtocol,
    Unwatch,
    Watch,
)
from .._token import Token
from ._changelog import ChangeLog
from ._controls import CONTROLS
from ._host import PARKED, CallContext, Host, PipelineContext, Primitive
from ._leasing import Leasing
from ._memory import ADDING, MemoryGuard
from ._objects import Lock, Queue, Value, make_referent
from ._references import References
from ._session import Session, log_session_end
from ._table import SNAPSHOTS, Entry, ServerType
from ._waiters import DeadlineHeap, Waiter
from ._watching import Watching

log = logging.getLogger("procshare.server")

__all__ = ["Core", "Job"]

_FALLBACKS: Final = ("__repr__", "__str__", "#GETVALUE")

_SNAPSHOT_MIN: Final = 8 * 1024  # smaller payloads are cheap to encode again
_SNAPSHOT_MAX: Final = 16 * 1024 * 1024


class Job:
    """User code to run on a worker thread: a custom method call, or a custom constructor."""

    __slots__ = (
        "args",
        "done",
        "entry",
        "fn",
        "fresh",
        "kwargs",
        "method",
        "name",
        "ok",
        "published_args",
        "req_id",
        "session",
        "stype",
        "value",
    )

    def __init__(
        self,
        session: Session,
        req_id: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        *,
        entry: Entry | None = None,
        method: str = "",
        stype: ServerType | None = None,
        done: Callable[[Host, bool, Any], None] | None = None,
    ) -> None:
        self.session = session
        self.req_id = req_id
        #: called on the loop thread once it ran, in place of replying (a Barrier's action)
        self.done = done
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.entry = entry
        self.method = method
        #: for a constructor: the name the object gets (``named``), if any
        self.name: str | None = None
        self.stype = stype
        self.ok = False
        self.value: Any = None
        self.fresh: list[Any] = []
        #: the call's arguments, kept for watchers (``run`` lets go of ``args``)
        self.published_args: tuple[Any, ...] = (
            args if entry is not None and method in (entry.watched) else ()
        )

    def run(self) -> None:
        """Run the user code (on a worker thread). Never raises."""
        try:
            self.value = self.fn(*self.args, **(self.kwargs or {}))
            self.ok = True
        except BaseException as exc:
            self.value = exc
            self.ok = False
        finally:
            self.args = ()
            self.kwargs = None


class Handle:
    """A reference to a table entry inside a reply: pickles as a proxy for the receiving session.

    Pickling it counts one reference for the session the reply is being encoded for, which the
    proxy rebuilt on the other side owns.
    """

    __slots__ = ("core", "entry", "stype")
    #: sent as its token by the data serializers (``_data``)
    _shares_as_proxy_ = True

    def __init__(self, core: Core, entry: Entry, stype: ServerType | None = None) -> None:
        self.core = core
        self.entry = entry
        #: the typeid it is shared as, if not its first (one object returned by two methods
        #: under two typeids: each proxy gets its own typeid's methods)
        self.stype = stype

    def __reduce__(self) -> tuple[Any, ...]:
        core, entry, stype = self.core, self.entry, self.stype
        owned = core.references.lend(entry.id, self)
        if stype is None or stype.typeid == entry.typeid:
            kwds = {"exposed": entry.exposed, "owned": owned}
            token = Token(entry.typeid, core.address, entry.id)
            return (core.rebuild, (entry.proxytype, token, "pickle", kwds))
        kwds = {"exposed": _exposed_for(stype, entry.referent), "owned": owned}
        token = Token(stype.typeid, core.address, entry.id)
        return (core.rebuild, (stype.proxytype, token, "pickle", kwds))


class Core:
    """The object table and everything that changes it.

    Args:
        types: the registered typeids.
        address: the server's address, as it appears in tokens.
        rebuild: the function proxies are rebuilt with when unpickled (``RebuildProxy``).
        release_delay: seconds an object with no references is kept before it is disposed of.
        watch_backlog: bytes a session may have waiting to be sent before the change events
            of its subscriptions are dropped (and counted, then reported as "overflow").
    """

    def __init__(
        self,
        types: Mapping[str, ServerType],
        *,
        address: Any,
        rebuild: Callable[..., Any],
        release_delay: float = 5.0,
        watch_backlog: int = 8 * 1024 * 1024,
    ) -> None:
        self.types = dict(types)
        self.address = address
        self.rebuild = rebuild
        self.objects: dict[int, Entry] = {}
        self.watching = Watching(self.objects, self.push, watch_backlog)
        self.references = References(
            self.objects,
            release_delay=release_delay,
            on_loop_thread=self.on_loop_thread,
            dispose=self._dispose,
        )
        #: named objects (``m.named(name)``): each name holds one reference until ``delete``
        self.names: dict[str, int] = {}
        self.sessions: dict[int, Session] = {}
        self.deadlines = DeadlineHeap()
        #: How long a released lock with waiters stays free for whoever asks first, before
        #: its first waiter is handed it (``Lock.release``); 0 hands it over at once. The
        #: transport sets its busy-poll window: the loop notices the deadline while it polls.
        self.lock_window = 0.0
        #: locks released within the last ``lock_window``: (until, lock), oldest first
        self.open_locks: deque[tuple[float, Primitive]] = deque()
        self.dirty: list[Session] = []
        #: sessions in ``dirty`` given the answer to a parked request since the last flush
        self.answered: set[Session] = set()
        #: sessions closed since the transport last looked (it closes their sockets)
        self.ended: list[Session] = []
        self.jobs: deque[Job] = deque()
        self.shutdown_requested = False
        #: the server is closing every connection (nobody's death to report)
        self.closing = False
        self._ids = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._by_pyid: dict[int, int] = {}  # custom referents: id(referent) -> object id
        self.started = time.monotonic()  # (the transport's clock)
        self._to_close: list[Session] = []
        self._loop_thread = threading.get_ident()
        self._now = 0.0
        self.leasing = Leasing(self.objects, self.count)
        #: the page of the locks lent to local clients (``.._loans``): set by the transport
        self.loans: LoanPage | None = None
        #: ``max_memory`` (``_memory``; set by the transport)
        self.memory: MemoryGuard | None = None
        #: reads and applies what sessions (but the busy ones) sent and was not read yet
        #: (``catch_up``): the transport's; nothing to do where nobody posts (tests' cores)
        self.read_unread: Callable[
            [Collection[Session], float | None, Collection[Session]], None
        ] = _nothing_unread
        #: the session whose request is being applied, and those further up (``catch_up``)
        self._serving: Session | None = None
        self._busy: set[Session] = set()
        self.stats_counters = {
            "calls": 0,
            "creates": 0,
            "errors": 0,
            "sessions": 0,
            # values sent with a lease (a leased read, a lock's grant); changes ending leases
            "leased": 0,
            "lease ends": 0,
            # locks taken by a process while others waited (see ``Lock.release``)
            "lock barges": 0,
            # locks lent to a process that kept taking them, and loans it gave back when
            # another process asked (``.._loans``)
            "locks lent": 0,
            "loans given back": 0,
            # requests decoded on a worker thread: decoding them ran code they named
            "decoded aside": 0,
            # calls posted (sent without waiting for their answer), and catch-ups that
            # found something of another poster's to apply first
            "posted": 0,
            "caught up": 0,
            # posts that needed no catch-up: made under the lock every poster of their object
            # posts under (``_posts_under_held_lock``)
            "posts under their lock": 0,
            # connections moved to the reactor that had a reply for them, rather than waking
            # theirs to write it (``Server._take_over``)
            "taken over": 0,
        }

    # -- sessions ---------------------------------------------------------------------------

    def bind_loop_thread(self) -> None:
        """Declare the calling thread the loop (the only one allowed to change the table)."""
        self._loop_thread = threading.get_ident()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def new_session_id(self) -> int:
        return next(self._session_ids)

    def open_session(
        self, sid: int, protocol: ServerProtocol, info: Mapping[str, Any], now: float
    ) -> Session:
        """Register an authenticated connection."""
        session = Session(sid, protocol, info, now)
        self.sessions[sid] = session
        self.stats_counters["sessions"] += 1
        return session

    def close_session(self, session: Session, now: float) -> None:
        """Let go of everything ``session`` held: waiters, primitives, references."""
        if session.closed:
            return
        self._now = now
        session.closed = True
        self.ended.append(session)
        session.out.clear()
        self.sessions.pop(session.id, None)
        for waiter in list(session.waiters):
            if waiter.parked and waiter.queue is not None:
                waiter.queue.remove(waiter)
                if waiter.on_cancel is not None:
                    waiter.on_cancel(self, waiter)
        waiting = len(session.waiters)
        session.waiters.clear()
        # What was on its way to it when it ended never arrived: take it back first (a
        # killed consumer's item goes back to the front of its queue).
        in_flight, session.in_flight = session.in_flight, {}
        for prim, owner, what in in_flight.values():
            prim.lost(self, session, owner, what)
        for loan in list(session.loans.values()):
            loan.lock.borrower_gone(loan)  # (before the holdings: a recalled one is there)
        held = [type(p).__name__ for p in session.holdings]
        for prim, count in list(session.holdings.items()):
            prim.drop_session(self, session, count)
        session.holdings.clear()
        for obj_id, count in session.refs.items():
            self.references.unref(obj_id, count, now)
        if not self.closing:
            log_session_end(session, held, len(in_flight), waiting, len(session.refs))
        session.refs.clear()
        self.watching.session_closed(session)
        for entry in list(session.posting_to):
            self.unregister_poster(entry, session)
        self._close_pending(now)

    def deliverable(self, session: Session) -> bool:
        """Whether handing something to ``session`` now can reach it.

        A session whose peer is known (or probed) to be gone is marked dead and closed right
        after the current operation, so a queue item is never given to a consumer that died.
        """
        if session.closed or session.dead:
            return False
        if not session.probe():
            session.dead = True
            self._to_close.append(session)
            return False
        return True

    def _close_pending(self, now: float) -> None:
        while self._to_close:
            self.close_session(self._to_close.pop(), now)

    # -- replies ------------------------------------------------------------------------------

    def _write(self, session: Session, data: bytes) -> None:
        if not session.out:
            self.dirty.append(session)
        session.out.append(data)
        session.queued += len(data)

    def reply(self, session: Session, req_id: int, value: Any) -> None:
        """Send ``value`` as the result of ``req_id`` (no-op if the session is gone, or for a
        post: request id 0)."""
        if session.closed or not req_id:
            return
        if value is None:
            data = session.protocol.encode_result(req_id, None, session.home.flags)
        else:
            # (references.encode_for, inlined: proxies pickled into the reply are lent to it)
            references = self.references
            references.outgoing = session
            data = b""
            try:
                data = session.protocol.encode_result(req_id, value, session.home.flags)
            finally:
                references.outgoing = None
                if references.lent:
                    sent = bool(data) and not ServerProtocol.is_failure(data)
                    references.settle(session, sent, self._now)
        # _write, inlined: every reply passes here
        out = session.out
        if not out:
            self.dirty.append(session)
        out.append(data)
        session.queued += len(data)

    def fail(self, session: Session, req_id: int, error: BaseException) -> None:
        """Send ``error`` as the outcome of ``req_id`` (no-op if the session is gone).

        What is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, raised by a
        shared object's code) travels as a ``RemoteError``: raised as itself it would end
        the client, where it cost the server only this request.
        """
        if session.closed:
            return
        if self.memory is not None and (
            isinstance(error, MemoryError) or isinstance(error.__cause__, MemoryError)
        ):
            if not isinstance(error, MemoryLimitError):
                error = self.memory.refused()  # the kernel refused it at the limit
        elif not isinstance(error, Exception):
            error = RemoteError(
                f"the shared object's code raised {error!r}", format_exception(error)
            )
        self.stats_counters["errors"] += 1
        if not req_id:  # (a post's: its client raises it at its next request, if it makes one)
            log.warning("a call posted by %s failed: %s: %s", session, type(error).__name__, error)
        self._write(session, session.protocol.encode_failure(req_id, error, session.home.flags))

    def push(self, session: Session, sub_id: int, payload: Any) -> None:
        """Send an unrequested message on ``session``."""
        if session.closed:
            return
        data = self.references.encode_for(
            session, lambda: session.protocol.encode_push(sub_id, payload), self._now
        )
        self._write(session, data)

    def answer(self, waiter: Waiter, value: Any) -> None:
        """Answer a parked request with ``value`` (a lease request: with the reads it asks)."""
        waiter.session.waiters.discard(waiter)
        if type(value) is LeaseRequest:
            value = self._reads_at_grant(value)
        self.reply(waiter.session, waiter.req_id, value)
        self.answered.add(waiter.session)

    def _reads_at_grant(self, request: LeaseRequest) -> tuple[bool, dict[int, tuple[int, Any]]]:
        """``Leasing.reads_at_grant``; first, where the lock was just taken back from a loan
        (``Lock.recalled``), the posts its borrower sent to what is read bound to it, while it
        held it: written before it freed the lock in shared memory, they may be unread."""
        lock = request.lock
        if lock is not None and lock.recalled:
            lock.recalled = False
            posters: set[Session] = set()
            for obj_id, _, _ in request.reads:
                entry = self.objects.get(obj_id)
                if entry is not None and entry.bound is not None:
                    posters.update(entry.bound)
            posters.discard(request.session)
            if posters:
                self.catch_up(posters, self._now)
        return self.leasing.reads_at_grant(request)

    def answer_error(self, waiter: Waiter, error: BaseException) -> None:
        """Answer a parked request with ``error``."""
        waiter.session.waiters.discard(waiter)
        self.fail(waiter.session, waiter.req_id, error)
        self.answered.add(waiter.session)

    # -- the rest of the primitives' host interface (``_host.Host``) -----------------------------

    def add_deadline(self, waiter: Waiter) -> None:
        """Time ``waiter`` out at its deadline (``tick``)."""
        self.deadlines.add(waiter)

    def open_window(self, prim: Primitive, until: float) -> None:
        """``prim`` (a released lock) stays free for whoever asks first until ``until``
        (``tick`` closes the window)."""
        self.open_locks.append((until, prim))

    def count(self, counter: str) -> None:
        """One more of ``counter`` in ``stats()["counters"]``."""
        self.stats_counters[counter] += 1

    def end_leases(self, entries: list[Any]) -> None:
        """See ``Host.end_leases``."""
        for entry in entries:
            if entry.leased:
                self.leasing.end(entry)

    # -- what was handed over, until it arrives ---------------------------------------------------

    def track(self, session: Session, req_id: int, owner: int, prim: Primitive, what: Any) -> None:
        """``prim`` handed ``what`` (a queue item, a lock's grant, a semaphore's slot) to the
        request ``req_id`` of ``session``'s ``owner``. Until the answer has reached the caller,
        ``what`` is taken back if the caller abandons the request (``Cancel``: a signal
        interrupted its wait) or its connection ends first (a consumer killed as an item was
        on its way: the item goes back to the front, never lost). The caller's next call
        means it arrived (calls of one owner come one after the other; ``Goodbye``, that
        everything did)."""
        if req_id:
            session.in_flight[req_id] = (prim, owner, what)

    def _arrived(self, session: Session, owner: int) -> None:
        """``owner`` called again: whatever was handed to it before has reached it."""
        in_flight = session.in_flight
        if len(in_flight) == 1:  # the usual case: one grant or item, to the caller
            (record,) = in_flight.values()
            if record[1] == owner:
                in_flight.clear()
            return
        for rid in [rid for rid, record in in_flight.items() if record[1] == owner]:
            del in_flight[rid]

    def _cancel(self, session: Session, target: int) -> None:
        """``session`` abandons its request ``target`` (see ``Cancel``)."""
        for waiter in session.waiters:
            if waiter.req_id == target and waiter.parked:
                if waiter.on_withdraw is not None:
                    waiter.on_withdraw(self, waiter)
                else:
                    if waiter.queue is not None:
                        waiter.queue.remove(waiter)
                    self.answer_error(waiter, CallWithdrawn("withdrawn: its caller abandoned it"))
                return
        record = session.in_flight.pop(target, None)
        if record is not None:
            prim, owner, what = record
            prim.give_back(self, session, owner, what)

    # -- the table ---------------------------------------------------------------------------

    def referent(self, obj_id: int) -> Any:
        entry = self.objects.get(obj_id)
        if entry is None:
            raise ObjectNotFound.of(obj_id)
        return entry.referent

    def _dispose(self, obj_id: int) -> None:
        entry = self.objects.pop(obj_id, None)
        if entry is None:
            return
        if entry.leased:  # a read of it must now fail, not be answered locally
            self.leasing.end(entry)
        self.watching.disposed(entry)  # (tells its watchers, if any)
        if isinstance(entry.referent, Lock):
            entry.referent.disposed()  # (its loan's slot)
        if entry.handlers is None:
            self._by_pyid.pop(id(entry.referent), None)
        entry.referent = (
            None  # drops its internal references: they queue in ``references.disowned``
        )

    # -- the clock ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do, or ``None``."""
        # (asked on every turn of the loop: the heaps are peeked at here, not through calls)
        references = self.references
        if references.disowned:
            return self._now  # dropped internal references (freed by the GC, say): due now
        heap = self.deadlines.heap
        open_locks = self.open_locks
        disposals = references.disposals
        if not (heap or open_locks or disposals):
            return None  # the usual case with nothing parked on a timeout
        due = self.deadlines.next_deadline() if heap else None
        if open_locks:
            until = open_locks[0][0]
            due = until if due is None or until < due else due
        if disposals:
            disposal = disposals[0][0]  # (``references.next_due``)
            due = disposal if due is None or disposal < due else due
        return due

    def tick(self, now: float) -> None:
        """Hand over locks whose window passed, time out expired waiters, apply dropped
        references, dispose of unreferenced objects."""
        self._now = now
        self._serving = None  # (no request is being applied: ``catch_up``)
        open_locks = self.open_locks
        while open_locks and open_locks[0][0] <= now:
            until, lock = open_locks.popleft()
            lock.window_closed(self, until)
        references = self.references
        disposals = references.disposals
        if not (
            references.disowned
            or self.watching.overflowing
            or self._to_close
            or now >= references.next_collection
            or (disposals and disposals[0][0] <= now)
            or (self.deadlines.heap and self.deadlines.due(now))
        ):
            return  # the usual case, on every turn of the loop: cheap
        for waiter in self.deadlines.pop_expired(now):
            # (one timing out may catch up with a poster, which may answer another)
            if waiter.on_timeout is not None and waiter.parked:
                waiter.on_timeout(self, waiter)
        references.apply_disowned(now)
        references.dispose_due(now)
        if self.watching.overflowing:
            self.watching.report_overflows()
        if now >= references.next_collection:
            references.next_collection = now + max(2.0, 2 * references.release_delay)
            references.collect_cycles()
        self._close_pending(now)
        # What was just disposed of let go of the objects it held: start their release delay
        # now, not whenever a message next wakes the loop.
        references.apply_disowned(now)

    # -- dispatch -----------------------------------------------------------------------------

    def dispatch(self, session: Session, msg: Any, now: float) -> None:
        """Apply one message from ``session``."""
        self._now = now
        self._serving = session
        session.calls += 1
        kind = type(msg)
        if kind is Call:
            self._call(session, msg, now)
        elif kind is Post:
            self._post(session, msg, now)
        elif kind is LeaseAcquire or kind is LeasedRead or kind is ReadSince:
            self._addressed(session, msg, now)
        elif kind is Create:
            self._create(session, msg, now)
        elif kind is Release:
            self.references.release(session, msg.obj_ids, now)
        elif kind is Retain:
            self.references.retain(session, msg.obj_ids)
        elif kind is Control:
            self._control(session, msg, now)
        elif kind is Batch:
            self._batch(session, msg, now)
        elif kind is BadRequest:
            self.fail(session, msg.req_id, msg.error)
        elif kind is Watch:
            self._watch(session, msg)
        elif kind is Unwatch:
            self._unwatch(session, msg)
        elif kind is Cancel:
            self._cancel(session, msg.target)
        elif kind is Goodbye:
            session.said_goodbye = True
            session.in_flight.clear()  # all of it arrived
        else:
            raise TypeError(f"not a request: {kind.__name__}")
        if self.references.fresh:  # nobody known holds them: roots for the cycle collector
            self.references.claim_fresh(None)
        if self._to_close:
            self._close_pending(now)

    def _call(self, session: Session, msg: Call, now: float, before: float | None = None) -> None:
        self.stats_counters["calls"] += 1
        # (one unpacking, not eight)
        req_id, obj_id, method, args, kwargs, owner, versioned, posting = msg
        if session.in_flight:
            self._arrived(session, owner)
        entry = self.objects.get(obj_id)
        if entry is None:
            self.fail(session, req_id, ObjectNotFound.of(obj_id))
            return
        posters = entry.posters
        if posters is not None and (len(posters) > 1 or session not in posters):
            self._catch_up_posters(entry, session, before)
        if self.references.fresh:  # proxies passed to a method end up held by its object
            self.references.claim_fresh(entry)
        memory = self.memory
        if memory is not None and memory.full and _adds(entry, method):
            self.fail(session, req_id, memory.refusal())
            return
        plain = entry.plain
        if plain is not None and not kwargs and not versioned and not posting:
            handler = plain.get(method)
            if handler is not None:
                # The usual call: a built-in kind's method, no keywords, not a whole-object
                # read (``_apply`` and the end of this method, written out for it).
                fn, takes_ctx = handler
                try:
                    if takes_ctx:
                        result = fn(
                            entry.referent, CallContext(self, session, req_id, owner, now), *args
                        )
                        if result is PARKED:
                            return  # answered when the waiter is satisfied (or times out)
                    else:
                        result = fn(entry.referent, *args)
                except BaseException as exc:
                    if method in entry.spec.partial_mutators:  # type: ignore[union-attr]
                        self._changed(entry, method, args, None, None)  # (see _apply)
                    self.fail(session, req_id, exc)
                    return
                if method in entry.mutators:
                    self._changed(entry, method, args, None, result)
                returned = entry.returning.get(method)
                if returned is not None:
                    try:
                        result = self._share(returned, result, now)
                    except BaseException as exc:
                        self.fail(session, req_id, exc)
                        return
                self.reply(session, req_id, result)
                return
        if entry.handlers is None:
            self._call_custom(session, msg, entry)
            return
        if versioned and method == "#GETVALUE" and not isinstance(entry.referent, Primitive):
            self.reply(session, req_id, (entry.referent, entry.version))  # for replicas
            return
        if method in SNAPSHOTS and not kwargs and not versioned and not args:
            self._snapshot_read(session, req_id, entry, method, None)
            return
        try:
            result = self._apply(
                entry, session, req_id, method, args, kwargs, owner, now, CallContext
            )
            if result is PARKED:
                return  # answered when the waiter is satisfied (or times out)
            returned = entry.returning.get(method)
            if returned is not None:
                result = self._share(returned, result, now)
        except BaseException as exc:
            self.fail(session, req_id, exc)
            return
        if versioned:
            result = (result, entry.version)
        elif posting:
            result = (result, self._register_poster(entry, session, method))
        self.reply(session, req_id, result)

    def _post(self, session: Session, msg: Post, now: float) -> None:
        """Apply a call nobody waits for: a failure is sent with request id 0 (its client
        raises it at its next request). Only the kinds' postable methods (``Kind.postable``)
        are taken, a queue's ``put`` from a registered poster only."""
        self.stats_counters["posted"] += 1
        obj_id, method, args, owner, stamp = msg
        entry = self.objects.get(obj_id)
        if entry is None:
            self.fail(session, 0, ObjectNotFound.of(obj_id))
            return
        posters = entry.posters
        registered = posters is not None and session in posters
        if (
            not session.may_post
            or method not in entry.postable
            or (not registered and _posts_need_registration(entry.referent))
        ):
            refusal = ProtocolError(f"{entry.typeid}.{method}() may not be posted here")
            self._post_failed(session, entry, refusal)
            return
        # (``_call``, written out for what may be posted: a mutator of a built-in kind that
        # takes its caller's context, gets plain data and parks nobody)
        self.stats_counters["calls"] += 1
        if session.in_flight:
            self._arrived(session, owner)
        if posters is not None and (len(posters) > 1 or not registered):
            if _posts_under_held_lock(entry, session):
                self.stats_counters["posts under their lock"] += 1
            else:
                self._catch_up_posters(entry, session, stamp)
        memory = self.memory
        if memory is not None and memory.full and _adds(entry, method):
            self._post_failed(session, entry, memory.refusal())
            return
        fn, takes_ctx = entry.handlers[method]  # type: ignore[index]
        try:
            if takes_ctx:
                fn(entry.referent, CallContext(self, session, 0, owner, now), *args)
            else:
                fn(entry.referent, *args)
        except BaseException as exc:
            self._post_failed(session, entry, exc)
            return
        # (its only poster's lease stays: the poster knows what it wrote, ``_leasing``)
        keep = entry.leased and self.leasing.self_leased(entry, session, method)
        self._changed(entry, method, args, None, None, keep)

    def _post_failed(self, session: Session, entry: Entry, error: BaseException) -> None:
        """A post that was not applied: its poster learns at its next request, and a lease it
        kept with what it posted (``Leasing.self_leased``) ends now."""
        if entry.leased:
            self.leasing.end(entry)
        self.fail(session, 0, error)

    def catch_up(self, sessions: Collection[Session], before: float | None = None) -> None:
        """See ``Host.catch_up`` (the transport reads the connections: ``read_unread``).

        Never with a session whose request is being applied, further up: its next requests
        come after that one (what is caught up may itself catch up with others)."""
        serving = self._serving
        busy = self._busy
        mark = serving if serving is not None and serving not in busy else None
        if mark is not None:
            busy.add(mark)
        try:
            self.read_unread(sessions, before, busy)
        finally:
            if mark is not None:
                busy.discard(mark)
            self._serving = serving

    def _catch_up_posters(self, entry: Entry, session: Session, before: float | None) -> None:
        """Before ``session``'s request on ``entry``: apply what its other posters sent."""
        posters = entry.posters
        if posters is not None and (len(posters) > 1 or session not in posters):
            self.catch_up(posters, before)  # (never with ``session``: it is being served)

    def unregister_poster(self, entry: Entry, session: Session) -> None:
        """``session`` posts to ``entry`` no more (it ended, or it said so: ``unpost``); an
        object nobody posts to may be leased again."""
        posters = entry.posters
        if posters is not None:
            posters.discard(session)
            if not posters:
                entry.posters = None
        _unbind(entry, session)
        session.posting_to.discard(entry)

    def _register_poster(self, entry: Entry, session: Session, method: str) -> bool | str:
        """Let ``session`` post ``method``'s calls on ``entry`` from now on; whether it may:
        ``True``, ``ALONG`` (sent along with the requests: a Condition's notify, a queue's
        put), or ``BOUND``: only while it holds the one lock it holds now (a Value's set under
        a lock, ``Entry.bound``). Not on an object somebody watches (a post is applied once
        its sender sleeps, or its time slice ends: the watcher would wait for it). An object
        posted to is leased to nobody from then on (a lease would answer while a post is on
        its way), but by the grants of the lock its posters are bound to: the leases
        out on it end now, before the answer."""
        referent = entry.referent
        if not session.may_post or method not in entry.postable or entry.watchers:
            return False
        if isinstance(referent, Queue) and (referent.maxsize > 0 or referent.publish is None):
            return False  # (a put that may wait for room; or nobody to say a getter waits)
        if not _posts_need_registration(referent):  # (a Condition's notify by its holder)
            return ALONG
        if entry.posters is None:
            entry.posters = set()
        entry.posters.add(session)
        session.posting_to.add(entry)
        if entry.leased:
            self.leasing.end(entry)
        lock = _lock_held_alone(session) if isinstance(referent, Value) else None
        if lock is None:
            _unbind(entry, session)  # (bound no more, if it was)
            return ALONG if isinstance(referent, Queue) else True
        if entry.bound is None:
            entry.bound = {}
        entry.bound[session] = lock
        return BOUND

    def _apply(
        self,
        entry: Entry,
        session: Session,
        req_id: int,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        owner: int,
        now: float,
        context: type[CallContext],
    ) -> Any:
        """Run a built-in kind's method on ``entry`` and account for it (``_changed``).
        Returns the result (or ``PARKED``); raises what the method raised."""
        handler = entry.handlers.get(method)  # type: ignore[union-attr]
        if handler is None:
            raise _not_exposed(entry, method)
        fn, takes_ctx = handler
        try:
            if takes_ctx:
                ctx = context(self, session, req_id, owner, now)
                result = fn(entry.referent, ctx, *args, **(kwargs or {}))
            elif kwargs:
                result = fn(entry.referent, *args, **kwargs)
            else:
                result = fn(entry.referent, *args)
        except BaseException:
            if entry.spec is not None and method in entry.spec.partial_mutators:
                # It may have changed the object before raising: readers must not trust what
                # they hold (replaying the call fails the same way, so they read it afresh).
                self._changed(entry, method, args, kwargs, None)
            raise
        if result is not PARKED and method in entry.mutators:
            self._changed(entry, method, args, kwargs, result)
        return result

    def _changed(
        self,
        entry: Entry,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        result: Any,
        keep_leases: bool = False,
    ) -> None:
        """Account for a change of ``entry``: a new version, no cached snapshot, the end of
        the leases on it (unless ``keep_leases``: its only holder made it, and knows),
        one more entry in its change log, and an event for its watchers."""
        entry.version += 1
        entry.snapshot = None
        if entry.leased and not keep_leases:
            self.leasing.end(entry)
        if entry.log is not None:
            entry.log.record(method, args, kwargs, result)
        if entry.watchers:
            self.watching.publish(entry, method, args, kwargs, result)

    # -- leases (see _leases) ------------------------------------------------------------------

    def _addressed(self, session: Session, msg: Any, now: float) -> None:
        """A request for one object other than a plain call: ``ReadSince``, ``LeaseAcquire``,
        ``LeasedRead``. On an object of a custom type (no versions, no leases) it is declined
        (``False`` / ``None``): the caller reads or acquires plainly."""
        self.stats_counters["calls"] += 1
        if session.in_flight:
            self._arrived(session, msg.owner)
        entry = self.objects.get(msg.obj_id)
        if entry is None:
            self.fail(session, msg.req_id, ObjectNotFound.of(msg.obj_id))
            return
        if entry.posters is not None:
            self._catch_up_posters(entry, session, None)
        kind = type(msg)
        if entry.handlers is None:
            self.reply(session, msg.req_id, False if kind is ReadSince else None)
        elif kind is ReadSince:
            self._since(session, msg, entry)
        elif kind is LeaseAcquire:
            self._acquire_leasing(session, msg, entry, now)
        else:
            self._read_leasing(session, msg, entry, now)

    def _acquire_leasing(
        self, session: Session, msg: LeaseAcquire, entry: Entry, now: float
    ) -> None:
        """Acquire a Lock or RLock, answering ``(True, {index: (epoch, value)})`` with the
        reads made at the grant; ``None`` (and no acquire) where leases are off or the object
        is no lock: the caller acquires plainly."""
        lock = entry.referent
        if self.leasing.page is None or not isinstance(lock, Lock):
            self.reply(session, msg.req_id, None)
            return
        blocking, timeout = msg.blocking, msg.timeout
        try:
            request = LeaseRequest(parse_reads(msg.reads), lock, session)
            ctx = CallContext(self, session, msg.req_id, msg.owner, now)
            result = lock.acquire_answering(ctx, blocking, timeout, request)
        except BaseException as exc:
            self.fail(session, msg.req_id, exc)
            return
        if result is PARKED:
            return  # answered by the grant (Core.answer makes the reads then)
        self._changed(entry, "acquire", (blocking, timeout), None, result is request)
        if type(result) is LeaseRequest:
            result = self._reads_at_grant(result)
            loans = self.loans
            if msg.borrow is True and loans is not None:
                loan = lock.lend(loans, session)
                if loan is not None:
                    self.stats_counters["locks lent"] += 1
                    result = (*result, (loan.slot, loan.number, lock.reentrant))
        self.reply(session, msg.req_id, result)

    def _read_leasing(self, session: Session, msg: LeasedRead, entry: Entry, now: float) -> None:
        """Make a quick pure read and answer ``(epoch, value)``, the value leased until the
        object changes; ``(None, value)`` where it cannot be leased (a mutable value, leases
        off, or somebody posts to it now); ``None`` (and no read) where it is no leasable read
        of this object's kind: the caller reads plainly from then on. A read that raises
        fails as itself, as the plain call would."""
        req_id, method, args = msg.req_id, msg.method, msg.args
        leasing = self.leasing
        if (
            type(method) is not str
            or not leasing.leasable(entry, method, copies=True)
            or type(args) is not tuple
            or not leasable_args(args)
        ):
            self.reply(session, req_id, None)
            return
        whole = method == "copy"
        if whole and not leasing.unposted(entry):
            self.reply(session, req_id, None)  # (a scan then reads plainly: ``_client._scans``)
            return
        try:
            value = self._apply(
                entry, session, req_id, method, args, None, msg.owner, now, CallContext
            )
        except BaseException as exc:
            self.fail(session, req_id, exc)
            return
        epoch = leasing.epoch(entry, value, whole) if leasing.unposted(entry, session) else None
        self.reply(session, req_id, (epoch, value))

    # -- watching ------------------------------------------------------------------------------

    def _watch(self, session: Session, msg: Watch) -> None:
        entry = self.objects.get(msg.obj_id)
        if entry is not None and entry.posters is not None:
            self._catch_up_posters(entry, session, None)
        self._subscribe(session, msg)

    def _subscribe(self, session: Session, msg: Watch) -> None:
        entry = self.objects.get(msg.obj_id)
        if entry is None:
            self.fail(session, msg.req_id, ObjectNotFound.of(msg.obj_id))
            return
        if not entry.watched:
            self.fail(
                session,
                msg.req_id,
                MethodNotExposed(f"objects of type {entry.typeid!r} cannot be watched"),
            )
            return
        self.watching.subscribe(session, msg.req_id, entry)
        answer: dict[str, Any] = {"version": entry.version}
        if msg.options.get("snapshot"):
            answer["value"] = entry.referent
        self.reply(session, msg.req_id, answer)

    def _unwatch(self, session: Session, msg: Unwatch) -> None:
        self.reply(session, msg.req_id, self.watching.unsubscribe(session, msg.sub_id))

    # -- whole-object reads ------------------------------------------------------------------

    def _share(self, typeid: str, value: Any, now: float) -> Handle:
        """Make ``value`` a new shared object of ``typeid``; return what the reply carries."""
        stype = self.types.get(typeid)
        if stype is None:
            raise RemoteError(f"typeid {typeid!r} is not registered on this server")
        if stype.kind in _MADE_FROM_RESULT:
            # The stdlib calls the typeid's callable on the result: dict(result), a copy.
            # (A custom callable ran already, on the worker: ``_call_custom``.)
            try:
                value = make_referent(stype.kind, (value,), {}, self._resolve_proxy)
            except BaseException as exc:
                raise _creation_failed(typeid, exc) from None
        return Handle(self, self._register(stype, value, now), stype)

    def _since(self, session: Session, msg: ReadSince, entry: Entry) -> None:
        """A whole-object read by a caller holding an older result (``ReadSince``)."""
        if type(msg.read) is not str or type(msg.known) is not int:
            self.fail(session, msg.req_id, TypeError("ReadSince takes (read: str, known: int)"))
        elif msg.read not in SNAPSHOTS:
            self.fail(session, msg.req_id, TypeError(f"{msg.read!r} is not a whole-object read"))
        else:
            self._snapshot_read(session, msg.req_id, entry, msg.read, msg.known)

    def _encode_without_proxies(self, session: Session, value: Any) -> bytes | None:
        """``value`` serialized for ``session``, or ``None`` if it holds shared objects (or
        cannot be encoded). Changes kept in a log may name objects freed since: they are never
        sent; the reader gets the whole object instead."""
        try:
            payload = self.references.encode_for(
                session, lambda: session.protocol.serialize(value), self._now, lending=False
            )
        except SerializationError:
            return None
        return payload or None

    def _snapshot_read(
        self, session: Session, req_id: int, entry: Entry, method: str, known: int | None
    ) -> None:
        """Answer a whole-object read, reusing the encoded payload while nothing changed.

        With ``known`` (a ``ReadSince``) the answer is ``None`` when the object is still at
        version ``known``, the changes since when they are few (a dict, list or set copy),
        ``(result, version)`` otherwise.
        """
        referent = entry.referent
        if method == "#GETVALUE":
            if isinstance(referent, Primitive):
                self.fail(session, req_id, _not_exposed(entry, method))
                return
            handler = None
        else:
            handler = entry.handlers.get(method) if entry.handlers is not None else None
            if handler is None or handler[1]:
                self.fail(session, req_id, _not_exposed(entry, method))
                return
        if known is not None:
            if known == entry.version:
                self.reply(session, req_id, None)
                return
            if (
                method in REPLAYABLE_READS
                and entry.spec is not None
                and entry.spec.name in REPLAYABLE_KINDS
            ):
                changes = _changes_since(entry, known)
                if changes is not None:
                    delta = self._encode_without_proxies(session, (changes, entry.version, True))
                    if delta is not None:
                        frame = session.protocol.encode_serialized(
                            req_id, delta, session.home.flags
                        )
                        self._write(session, frame)
                        return
                if entry.log is None:
                    entry.log = ChangeLog()
            method = f"since {method}"  # its own cached payload: the pair, not the bare value
        protocol = session.protocol
        serializer = protocol.serializer.name if protocol.serializer is not None else ""
        cached = entry.snapshot
        if (
            cached is not None
            and cached[0] == entry.version
            and cached[1] == method
            and cached[2] == serializer
        ):
            self._write(session, protocol.encode_serialized(req_id, cached[3], session.home.flags))
            return
        if handler is None:
            result = referent
        else:
            try:
                result = handler[0](referent)
            except BaseException as exc:
                self.fail(session, req_id, exc)
                return
        if known is not None:
            result = (result, entry.version)
        elif result is None:
            self.reply(session, req_id, None)
            return
        references = self.references
        lends = references.lends
        try:
            payload = references.encode_for(session, lambda: protocol.serialize(result), self._now)
        except SerializationError as exc:
            self.fail(
                session, req_id, ResultNotSerializable(f"the result could not be serialized: {exc}")
            )
            return
        # Replies that carried proxies counted references for this session: never reuse them.
        if references.lends == lends and _SNAPSHOT_MIN <= len(payload) <= _SNAPSHOT_MAX:
            entry.snapshot = (entry.version, method, serializer, payload)
        self._write(session, protocol.encode_serialized(req_id, payload, session.home.flags))

    def _call_custom(self, session: Session, msg: Call, entry: Entry) -> None:
        method = msg.method
        if method not in entry.exposed and method not in _FALLBACKS:
            self.fail(session, msg.req_id, _not_exposed(entry, method))
            return
        if method == "#GETVALUE":
            self.reply(session, msg.req_id, entry.referent)
            return
        referent = entry.referent
        fn: Callable[..., Any]
        if method in ("__repr__", "__str__") and method not in entry.exposed:
            fn = repr if method == "__repr__" else str
            args: tuple[Any, ...] = (referent,)
        else:
            fn = _bound(referent, method)
            args = msg.args
            typeid = entry.method_to_typeid.get(method)
            target = self.types.get(typeid) if typeid is not None else None
            if target is not None and target.kind is None and target.factory is not None:
                fn = _then(fn, target.factory)  # the stdlib calls it on the result
        self.jobs.append(Job(session, msg.req_id, fn, args, msg.kwargs, entry=entry, method=method))

    def _create(self, session: Session, msg: Create, now: float, name: str | None = None) -> None:
        """Create a shared object and reply with it; with ``name``, get the object of that
        name, or create it and give it the name (the arguments are used only then)."""
        self.stats_counters["creates"] += 1
        if name is not None:
            named = self.objects.get(self.names.get(name, -1))
            if named is not None:
                self.references.claim_fresh(None)
                if named.typeid != msg.typeid:
                    self.fail(session, msg.req_id, _name_taken(name, named.typeid, msg.typeid))
                else:
                    self.reply(session, msg.req_id, Handle(self, named))
                return
        if self.memory is not None and self.memory.full:
            self.fail(session, msg.req_id, self.memory.refusal())
            return
        stype = self.types.get(msg.typeid)
        if stype is None:
            self.fail(session, msg.req_id, RemoteError(f"unknown typeid {msg.typeid!r}"))
            return
        if stype.kind is not None:
            try:
                referent = make_referent(
                    stype.kind, msg.args, msg.kwargs or {}, self._resolve_proxy
                )
            except BaseException as exc:
                self.fail(session, msg.req_id, _creation_failed(msg.typeid, exc))
                return
            entry = self._register(stype, referent, now)
            self.references.claim_fresh(entry)
            self._reply_created(session, msg.req_id, entry, name)
            return
        if stype.factory is None:
            if msg.kwargs or len(msg.args) != 1:
                self.fail(
                    session,
                    msg.req_id,
                    ValueError("Without callable, must have one non-keyword argument"),
                )
                return
            entry = self._register(stype, msg.args[0], now)
            self.references.claim_fresh(entry)
            self._reply_created(session, msg.req_id, entry, name)
            return
        job = Job(session, msg.req_id, stype.factory, msg.args, msg.kwargs, stype=stype)
        job.name = name
        job.fresh, self.references.fresh = (
            self.references.fresh,
            [],
        )  # claimed by the object once it exists
        self.jobs.append(job)

    def _reply_created(self, session: Session, req_id: int, entry: Entry, name: str | None) -> None:
        """Reply with a new object, giving it ``name`` first: if the name was taken
        meanwhile (a constructor on a worker), the object that has it is the answer."""
        if name is not None:
            named = self.objects.get(self.names.get(name, -1))
            if named is not None and named.typeid != entry.typeid:
                self.fail(session, req_id, _name_taken(name, named.typeid, entry.typeid))
                return
            if named is None:
                self.names[name] = entry.id
                entry.refs += 1  # the name's own reference
            else:
                entry = named  # (the new one has no reference: disposed of in due course)
        self.reply(session, req_id, Handle(self, entry))

    def delete_name(self, name: str, now: float) -> None:
        """Forget ``name``; its object then lives as long as proxies to it do."""
        obj_id = self.names.pop(name, None)
        if obj_id is None:
            raise KeyError(name)
        self.references.unref(obj_id, 1, now)

    def _register(self, stype: ServerType, referent: Any, now: float) -> Entry:
        """Add ``referent`` to the table (custom referents already there keep their id)."""
        if stype.kind is None:
            known = self._by_pyid.get(id(referent))
            if known is not None and known in self.objects:
                entry = self.objects[known]
                if stype.typeid != entry.typeid:  # shared as another typeid too: its methods
                    more = _exposed_for(stype, referent)
                    entry.exposed = tuple(dict.fromkeys((*entry.exposed, *more)))
                    if stype.method_to_typeid:
                        entry.method_to_typeid = {
                            **stype.method_to_typeid,
                            **entry.method_to_typeid,
                        }
                return entry
        exposed = _exposed_for(stype, referent)
        obj_id = next(self._ids)
        entry = Entry(obj_id, stype, referent, exposed, now)
        self.objects[obj_id] = entry
        if isinstance(referent, Queue) and self.leasing.page is not None:
            referent.publish = self.leasing.page.flag_waiting(obj_id)  # (its puts may post)
        if stype.kind is None:
            self._by_pyid[id(referent)] = obj_id
        # Nobody holds it until the reply carrying it is encoded (Handle.__reduce__ lends it).
        self.references.dispose_later(obj_id, now)
        return entry

    def _resolve_proxy(self, obj: Any) -> Any:
        token = getattr(obj, "_token", None)
        if isinstance(token, Token) and token.id in self.objects:
            return self.objects[token.id].referent
        return None

    def run_job(
        self,
        session: Session,
        req_id: int,
        fn: Callable[[], Any],
        done: Callable[[Host, bool, Any], None],
    ) -> None:
        """Run ``fn()`` (user code) on a worker thread, then ``done(core, ok, value)`` on the
        loop thread: code that may call shared objects must not run on the loop thread,
        which serves those calls."""
        self.jobs.append(Job(session, req_id, fn, (), None, done=done))

    def finish(self, job: Job, now: float) -> None:
        """Reply to a job the transport ran (on the loop thread)."""
        self._now = now
        session = job.session
        if job.done is not None:
            job.done(self, job.ok, job.value)
            return
        if not job.ok:
            if job.stype is not None:  # a constructor failed: the stdlib reports RemoteError
                self.fail(session, job.req_id, _creation_failed(job.stype.typeid, job.value))
            elif isinstance(job.value, Exception):
                self.fail(session, job.req_id, job.value)
            else:
                self.fail(session, job.req_id, RemoteError(repr(job.value)))
            return
        if job.stype is not None:  # a custom constructor
            created = self._register(job.stype, job.value, now)
            self.references.claim_fresh(created, job.fresh)
            self._reply_created(session, job.req_id, created, job.name)
            return
        entry = job.entry
        if entry is not None and job.method in entry.watched:
            entry.version += 1
            if entry.watchers:
                self.watching.publish(entry, job.method, job.published_args, job.kwargs, job.value)
        typeid = entry.method_to_typeid.get(job.method) if entry is not None else None
        if typeid is None:
            self.reply(session, job.req_id, job.value)
            return
        try:
            shared = self._share(typeid, job.value, now)
        except RemoteError as exc:
            self.fail(session, job.req_id, exc)
            return
        self.reply(session, job.req_id, shared)

    def _batch(self, session: Session, msg: Batch, now: float) -> None:
        """Apply a pipeline's calls in order, as one step (no other request in between).

        The reply is ``(values, errors)``: one value per call (``None`` where it failed) and
        ``{index: exception}`` for the calls that failed. A call that would have to wait (a
        held lock, an empty queue) fails instead of waiting; methods of custom classes are
        refused (they run user code on worker threads); each with its own error.
        """
        if self.references.fresh:
            self._claim_batch(msg.calls)
        objects = self.objects
        self._catch_up_for_batch(session, msg.calls)
        values: list[Any] = []
        errors: dict[int, BaseException] = {}
        append = values.append
        for index, (obj_id, method, args, kwargs, owner) in enumerate(msg.calls):
            entry = objects.get(obj_id)
            try:
                if entry is None:
                    raise ObjectNotFound.of(obj_id)
                if entry.handlers is None:
                    raise ProcshareError(
                        f"methods of {entry.typeid!r} objects run user code: "
                        "not allowed in a pipeline"
                    )
                result = self._apply(
                    entry, session, msg.req_id, method, args, kwargs, owner, now, PipelineContext
                )
                returned = entry.returning.get(method)
                append(self._share(returned, result, now) if returned is not None else result)
            except BaseException as exc:
                append(None)
                errors[index] = _travelling(exc)
        self.reply(session, msg.req_id, (values, errors))

    def _catch_up_for_batch(self, session: Session, calls: Any) -> None:
        """A pipeline is one step: catch up before it with everyone who posted to its objects
        and may not have been read yet (posters, locks' holders), not in its middle."""
        others: set[Session] = set()
        for obj_id, *_rest in calls:
            entry = self.objects.get(obj_id)
            if entry is None:
                continue
            if entry.posters is not None:
                others.update(entry.posters)
            holder = getattr(entry.referent, "holder", None)
            if type(holder) is tuple and holder[0].may_post:
                others.add(holder[0])
        others.discard(session)
        if others:
            self.catch_up(others, None)

    def _claim_batch(self, calls: Any) -> None:
        """Attribute the proxies of a batch to the object each call addressed."""
        fresh = {id(p): p for p in self.references.fresh}
        self.references.fresh = []
        for obj_id, _method, args, kwargs, _owner in calls:
            inside = _ids_within((args, kwargs))
            found = [fresh.pop(pid) for pid in inside if pid in fresh]
            if found:
                self.references.claim_fresh(self.objects.get(obj_id), found)
        # any left over (nested too deep to find) stay unattributed: roots, never freed wrongly

    def _control(self, session: Session, msg: Control, now: float) -> None:
        if msg.command == "named":  # a create, answered when the object exists
            self._named(session, msg, now)
            return
        command = CONTROLS.get(msg.command)
        if command is None:
            self.fail(session, msg.req_id, ProcshareError(f"unknown command {msg.command!r}"))
            return
        try:
            result = command(self, session, now, *msg.args)
        except BaseException as exc:
            self.fail(session, msg.req_id, exc)
            return
        self.reply(session, msg.req_id, result)

    def _named(self, session: Session, msg: Control, now: float) -> None:
        try:
            name, typeid, args, kwargs = msg.args
            if type(name) is not str or not name:
                raise ValueError(f"a name is a non-empty str, not {name!r}")
            if type(typeid) is not str or not isinstance(args, (tuple, list)):
                raise ProtocolError("named: (name, typeid, args, kwargs)")
            if kwargs is not None and not (
                type(kwargs) is dict and all(type(k) is str for k in kwargs)
            ):
                raise ProtocolError("named: keyword arguments must be a dict of str keys")
        except (ValueError, ProtocolError) as exc:
            self.references.claim_fresh(None)
            self.fail(session, msg.req_id, exc)
            return
        self._create(session, Create(msg.req_id, typeid, tuple(args), kwargs, 0), now, name)


#: kinds whose typeid, named in ``method_to_typeid``, makes its object from the result (the
#: stdlib calls the registered callable on it: ``dict(result)``); the others share the result
_MADE_FROM_RESULT: Final = frozenset({"dict", "list", "set"})


_tuple_new: Final = tuple.__new__


def _unbind(entry: Entry, session: Session) -> None:
    """``session``'s posts to ``entry`` are bound to no lock (``Entry.bound``)."""
    bound = entry.bound
    if bound is not None:
        bound.pop(session, None)
        if not bound:
            entry.bound = None


def _lock_held_alone(session: Session) -> Lock | None:
    """The one lock ``session`` holds, if it holds one and no other (here, or lent to it and
    held in shared memory); not one a process that did not hold it released once
    (``Lock.crossed``)."""
    found = None
    for prim in session.holdings:
        if isinstance(prim, Lock):
            if found is not None:
                return None
            found = prim
    for loan in session.loans.values():
        lock = loan.lock
        if lock.lent and lock.loan is loan and loan.holder():
            if found is not None and found is not lock:
                return None
            found = lock
    if found is None or found.crossed:
        return None
    return found


def _posts_need_registration(referent: Any) -> bool:
    """Whether only sessions registered as posters may post to ``referent``: its other
    clients catch up with them (``Entry.posters``). A container's writers and a queue's
    putters; not a Condition's notifier (it holds the lock, whose release, which waits, comes
    after)."""
    return not isinstance(referent, Primitive) or isinstance(referent, Queue)


def _nothing_unread(
    sessions: Collection[Session], before: float | None, busy: Collection[Session]
) -> None:
    """``Core.catch_up`` without a transport: every request was read as it came."""


def _exposed_for(stype: ServerType, referent: Any) -> tuple[str, ...]:
    """The methods a proxy of ``referent`` as ``stype`` may call."""
    if stype.kind is not None:
        exposed = KINDS[stype.kind].exposed if stype.exposed is None else stype.exposed
    else:
        exposed = tuple(stype.exposed) if stype.exposed is not None else _public(referent)
    if stype.method_to_typeid:
        exposed = tuple(dict.fromkeys((*exposed, *stype.method_to_typeid)))
    return tuple(exposed)


def _posts_under_held_lock(entry: Entry, session: Session) -> bool:
    """Whether ``session`` posts to ``entry`` bound to a lock the server granted it and has not
    lent since, and the others post bound to it too (``Leasing.posted_under``): then none of
    them can have a post to it on its way, and a post needs no catch-up (a bound post is
    written while its process holds the lock, ``Channel.post``). Not while a loan is out or
    not yet given back: a borrower's posts precede only its ``#loan``, which may be unread
    (``Lock.return_loan``)."""
    lock = None if entry.bound is None else entry.bound.get(session)
    if lock is None or lock.lent or lock.loan is not None:
        return False
    holder = lock.holder
    if holder is None or holder[0] is not session:
        return False
    return Leasing.posted_under(entry, lock, session)


def _adds(entry: Entry, method: str) -> bool:
    """Whether calling ``method`` on ``entry`` may add data (refused while the server is
    full): a built-in kind's adding methods (an Array's size is fixed)."""
    return entry.spec is not None and method in ADDING and entry.spec.name != "Array"


def _then(fn: Callable[..., Any], then: Callable[[Any], Any]) -> Callable[..., Any]:
    """``then(fn(...))``, both on the worker thread."""

    def both(*args: Any, **kwargs: Any) -> Any:
        return then(fn(*args, **kwargs))

    return both


def _travelling(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RemoteError with its text (one bad error must
    not cost a whole pipeline its reply)."""
    try:
        data = pickle.dumps(exc)
    except BaseException:
        return RemoteError(f"{type(exc).__name__}: {exc}", format_exception(exc))
    try:
        pickle.loads(data)
    except BaseException:  # (the stdlib's client fails to unpickle it: a TypeError, mostly)
        return ErrorNotRebuildable(f"{type(exc).__name__}: {exc}", format_exception(exc))
    return exc


def _ids_within(value: Any, depth: int = 3) -> list[int]:
    """``id()`` of every object inside the plain containers of ``value``, ``depth`` deep."""
    found = [id(value)]
    if depth and isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            found.extend(_ids_within(item, depth - 1))
    elif depth and isinstance(value, dict):
        for key, item in value.items():
            found.extend(_ids_within(key, depth - 1))
            found.extend(_ids_within(item, depth - 1))
    return found


def _bound(referent: Any, method: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(referent, method)(*args, **kwargs)

    return call


def _public(referent: Any) -> tuple[str, ...]:
    names = []
    for name in dir(referent):
        if name[0] == "_":
            continue
        try:
            if callable(getattr(referent, name)):
                names.append(name)
        except BaseException:  # noqa: S112 - an attribute that fails to load is not exposed
            continue
    return tuple(names)


def _name_taken(name: str, has: str, wanted: str) -> NameTakenError:
    return NameTakenError(f"the name {name!r} belongs to a {has!r} object, not a {wanted!r}")


def _creation_failed(typeid: str, exc: BaseException) -> RemoteError:
    return RemoteError(
        f"creating a shared {typeid!r} object failed: {type(exc).__name__}: {exc}",
        format_exception(exc),
    )


def _changes_since(entry: Entry, known: int) -> list[tuple[str, Any, Any, Any]] | None:
    """The changes from version ``known`` to the current one, if all are logged and replaying
    them is cheaper than sending the object (they weigh less than an eighth of it)."""
    if entry.log is None or known < 0:
        return None
    return entry.log.last(entry.version - known, max(16, len(entry.referent) // 8))


def _not_exposed(entry: Entry, method: str) -> MethodNotExposed:
    return MethodNotExposed(
        f"method {method!r} of {entry.typeid!r} object is not in exposed={entry.exposed!r}"
    )


def format_exception(exc: BaseException) -> str:
    """The traceback text of ``exc`` (for errors that cannot travel as themselves)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
