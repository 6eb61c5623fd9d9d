"""The server transport: sockets and a few reactor threads feeding the core; threads for user code.

Why several reactors (measured on these 2-CPU machines; docs/performance.md, "Speed on a busy
machine"): a request is cheapest when the server thread that serves it runs on its client's
CPU, where the client's send wakes it and the client's sleep gives it the CPU; a thread on
another CPU is woken through an inter-processor interrupt, and its reply wakes the client the
same way (a dict set cost the server 26 us of CPU instead of 9 when two working clients shared
one server thread). So each connection belongs to one of up to one reactor per CPU (the least
loaded when it connects); an idle reactor is pulled to its clients' CPU by the scheduler. Each
reactor is an epoll loop, so many clients are served in batches (one thread per connection, as
the standard library does, loses 2-3x of throughput to the GIL passing from thread to thread).

A reactor only moves bytes: it decodes frames with the sans-IO protocol, hands messages to the
core, and sends what the core wrote. The core runs one operation at a time under ``core_lock``
(each reactor takes it once per turn). Reactor 0 also accepts connections, keeps the clock
(deadlines, housekeeping) and finishes the jobs of the worker threads that run user code
(methods of registered classes, which may block or call back into this server).

Invariants: the core is touched only under ``core_lock``; a connection is never given a
session before it has authenticated; pre-authentication connections are dropped after
``handshake_timeout``; a connection whose unsent output exceeds ``max_backlog`` bytes is dropped
rather than letting one slow reader grow the server without bound.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import logging
import os
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final

from .._address import Address, describe, family, private_unix_path
from .._context import register_server, unregister_server
from .._errors import AuthenticationError, ProtocolError
from .._leases import LeasePage
from .._loans import LoanPage
from .._protocol import (
    DEFAULT_MAX_FRAME,
    NEED_DATA,
    Authenticated,
    ConnectionClosed,
    Deferred,
    Drain,
    Flag,
    ServerProtocol,
    busy_frame,
)
from .._sched import LoadGauge, TaskStates, available_cpus, configured_spin, current_cpu
from ._core import Core, Job
from ._memory import MemoryGuard, parse_size
from ._objects import LOCK_WINDOW
from ._poller import IN, OUT, Poller
from ._post_pipes import Resting, keeps_up, open_post_pipe, read_post_pipe
from ._session import Home, Session
from ._table import ServerType

__all__ = ["Server"]

log = logging.getLogger("procshare.server")

_POLL_DEAD: Final = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
#: the most tasks whose states ``_advise`` reads (each ~1 us, at each reading of the load)
_MOST_TASKS_READ: Final = 12
_RUNNING_WINDOW: Final = 0.002  # seconds: a client answered within this window counts as running
#: poll() sleeps whole milliseconds, rounding a shorter timeout up (epoll's resolution)
_SLEEP_RESOLUTION: Final = 0.001
#: reactors by default: one per CPU, at most this many (each is a thread taking turns on the GIL)
MAX_REACTORS: Final = 8
#: requests in a row that show a client belongs on another reactor before it moves there
_PLACE_AFTER: Final = 4
#: seconds a connection placed on a reactor for its requests stays there (``_take_over``)
_PLACED_FOR: Final = 0.05
#: seconds a reactor's answer to "which CPU do I run on" stands (asked again after activity)
_CPU_KNOWN_FOR: Final = 0.0005
#: rounds of reading the post pipes at most in one ``_apply_posts`` (a round leaves the posts
#: written while it read: rarely any)
_POST_ROUNDS: Final = 4
#: no session (``_flush``'s answered ones, on a turn that answered no parked request)
_NOBODY: Final[frozenset[Session]] = frozenset()


def poll_timeout(deadline: float | None, now: float) -> float:
    """How long the loop may sleep in poll(): up to ``deadline`` (at most a second), in the
    whole milliseconds poll() can sleep, or 0 when it is nearer than that (then the loop
    sleeps the rest in ``Poller.sleep``, at the microsecond, or busy-polls while spinning)."""
    if deadline is None:
        return 1.0
    left = deadline - now
    if left >= 1.0:
        return 1.0  # (the usual deadline: an object's disposal, seconds away)
    if left < _SLEEP_RESOLUTION:
        return 0.0
    return min(1.0, _SLEEP_RESOLUTION * int(left / _SLEEP_RESOLUTION))


class _CoreLock:
    """The lock every reactor and worker takes to touch the core; it tells the core which
    thread is inside (``Core.on_loop_thread``: proxies rebuilt or pickled there are the
    server's own)."""

    __slots__ = ("_core", "lock")

    def __init__(self, core: Core) -> None:
        self.lock = threading.Lock()
        self._core = core

    def __enter__(self) -> None:
        self.lock.acquire()
        self._core._loop_thread = threading.get_ident()

    def __exit__(self, *exc: object) -> None:
        self._core._loop_thread = 0
        self.lock.release()


class _Conn:
    """One client socket, its protocol end, its reactor, and (once authenticated) its session."""

    __slots__ = (
        "accepted",
        "closed",
        "decoding",
        "fd",
        "mask",
        "out",
        "paused",
        "placed",
        "post_armed",
        "post_fd",
        "proto",
        "reactor",
        "recv",
        "send",
        "session",
        "sid",
        "sock",
        "stalled",
        "streak",
        "wfd",
        "writing",
    )

    def __init__(
        self, sock: socket.socket, proto: ServerProtocol, sid: int, now: float, reactor: _Reactor
    ) -> None:
        self.sid = sid
        self.sock = sock
        #: what requests are read from and replies written to: the socket, or once the client
        #: has its pipes (``Server._to_pipes``) one pipe each way
        self.fd = self.wfd = sock.fileno()
        self.recv: Callable[[int], bytes] = sock.recv
        self.send: Callable[[Any], int] = sock.send
        self.proto = proto
        self.reactor = reactor
        self.session: Session | None = None
        self.out = bytearray()
        self.writing = False
        self.accepted = now
        #: requests in a row that did not fit its reactor (``Server._placed``), and when it
        #: was last moved for that (``_take_over`` leaves it there a while)
        self.streak = 0
        self.placed = 0.0
        #: a request of its is being decoded off the reactor (``Server._defer``), and whether
        #: it is not read meanwhile (its descriptor out of its reactor's poller)
        self.decoding = False
        self.paused = False
        #: what its descriptor is registered for in its reactor's poller (0: not)
        self.mask = 0
        #: closed (``Server._close``): what was collected for it is not sent
        self.closed = False
        #: the pipe its client writes its posts into (-1: none), and whether its reactor
        #: waits on it now, or rests it (``_post_pipes``)
        self.post_fd = -1
        self.post_armed = False
        #: a write to it was cut short: the rest is on its way to ``out`` (``_send_out``), and
        #: nothing else may be written to it before (set under its reactor's ``send_lock``)
        self.stalled = False


class _Decoding:
    """A request of ``conn`` to decode on a worker thread (``Server._defer``)."""

    __slots__ = ("conn", "message", "request")

    def __init__(self, conn: _Conn, request: Deferred) -> None:
        self.conn = conn
        self.request = request
        self.message: Any = None

    def run(self) -> None:
        """Decode it (never raises: a payload that will not decode is a ``BadRequest``)."""
        self.message = self.conn.proto.decode_deferred(self.request)
        self.request = None  # type: ignore[assignment]


class _Workers:
    """Threads that run user code (custom methods and constructors), grown on demand."""

    def __init__(
        self,
        done: deque[Job | _Decoding],
        wake: Callable[[], None],
        limit: int,
        memory: MemoryGuard | None = None,
    ) -> None:
        self._memory = memory  # (its limit makes room for each thread's stack)
        self._jobs: queue.SimpleQueue[Job | _Decoding | None] = queue.SimpleQueue()
        self._done = done
        self._wake = wake
        self._limit = limit
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: set[threading.Thread] = set()

    def submit(self, job: Job | _Decoding) -> None:
        with self._lock:
            grow = self._idle == 0 and len(self._threads) < self._limit
            if grow:
                thread = threading.Thread(target=self._work, name="procshare-worker", daemon=True)
                self._threads.add(thread)
            else:
                self._idle -= 1
        if grow:
            if self._memory is not None:
                self._memory.thread_starting()
            try:
                thread.start()
            except BaseException:
                with self._lock:
                    self._threads.discard(thread)
                if self._memory is not None:
                    self._memory.thread_ended()
                raise
        self._jobs.put(job)

    def _work(self) -> None:
        try:
            self._serve_jobs()
        finally:
            if self._memory is not None:
                self._memory.thread_ended()

    def _serve_jobs(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                job = self._jobs.get(timeout=30.0)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                continue  # a job was promised to this idle thread: keep waiting for it
            if job is None:
                with self._lock:
                    self._threads.discard(me)
                return
            job.run()
            self._done.append(job)
            self._wake()
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)


class _Reactor:
    """One server thread: an epoll loop over its share of the connections.

    Its ``home`` holds the flags of its sessions' replies: its CPU (clients compare it with
    theirs, ``_sched``) and ``Flag.SHARED`` (it serves other running clients too).
    """

    def __init__(self, server: Server, index: int) -> None:
        self.server = server
        self.index = index
        self.poller = Poller()
        self.conns: dict[int, _Conn] = {}
        self.home = Home(index)
        #: its clients that sent something lately and are not parked: sid -> when
        self.recent: dict[int, float] = {}
        self.sleeping = False
        #: when it means to wake at the latest (reactor 0 keeps the clock: others wake it
        #: when they create an earlier deadline)
        self.sleep_until = 0.0
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.thread: threading.Thread | None = None
        #: the thread that runs it, as the kernel names it (once it runs)
        self.native_id = 0
        #: replies to its connections, collected under the core lock and written after it
        #: (``Server._send_out``), and the lock held while they are written: who closes one
        #: of its connections takes it, so that no write lands on a descriptor closed (and
        #: perhaps reused) meanwhile
        self.sends: list[tuple[_Conn, bytes]] = []
        self.send_lock = threading.Lock()
        #: its connections' post pipes, waited on or resting (``_post_pipes``), by descriptor
        self.post_conns: dict[int, _Conn] = {}
        self.resting: Resting[_Conn] = Resting()

    def open(self) -> None:
        self.poller.open()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller.register(self._wake_r.fileno())

    def wake(self, force: bool = False) -> None:
        wake = self._wake_w
        if wake is not None and (self.sleeping or force):
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def close(self) -> None:
        self.poller.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def run(self) -> None:
        """The loop: sleep until a descriptor is ready (busy-poll a moment first after
        activity, while a CPU is free), then serve what is ready under the core lock."""
        self.native_id = threading.get_native_id()
        states = TaskStates()  # (what _advise reads of ours, for this thread alone)
        server = self.server
        core = server.core
        core_lock = server.core_lock
        take_core, leave_core = core_lock.lock.acquire, core_lock.lock.release
        me = threading.get_ident()
        poll = self.poller.waiter()
        fine_sleep = self.poller.sleep
        conns = self.conns
        post_conns = self.post_conns
        resting = self.resting
        keeps_clock = self.index == 0
        clock_reactor = server._reactors[0]
        wake_r = self._wake_r
        if wake_r is None:
            raise RuntimeError("the reactor is not open")
        wake_fd = wake_r.fileno()
        listener_fd = server.listener.fileno() if keeps_clock else -1
        owner_fd = server._owner_fd if keeps_clock else None
        spin = server._spin
        monotonic = time.monotonic
        perf_counter = time.perf_counter
        sched_yield = os.sched_yield
        with_cpu = Flag.with_cpu
        home = self.home
        done = server._done
        jobs = core.jobs
        last_active = monotonic()
        last_cpu = -2
        cpu_known_until = 0.0  # (monotonic) when to ask which CPU this thread runs on again
        next_housekeeping = last_active
        memory = server._memory
        counters = core.stats_counters
        # whether to busy-poll after the activity just served: only while a CPU is free
        spinning = False
        advise_at = 0.0  # (perf_counter) when to ask ``_advise`` again
        lock_window = server._lock_window
        while not server.stopping:
            now = monotonic()
            if spinning and now - last_active < spin:
                timeout = 0.0
            elif keeps_clock:
                if done:
                    timeout = 0.0
                else:
                    deadline = core.next_deadline()
                    timeout = 1.0 if deadline is None else poll_timeout(deadline, now)
                    self.sleep_until = now + timeout
                    if timeout == 0.0 and deadline is not None and deadline > now and not spinning:
                        # Due within a millisecond, which poll() cannot sleep: sleep to it in
                        # select(), which can (the poller's own descriptor is readable when one
                        # of its descriptors is), rather than busy-poll a CPU others need.
                        self.sleep_until = deadline
                        self.sleeping = True
                        fine_sleep(deadline - now)
            else:
                timeout = 1.0
            if resting.until < timeout + now:  # (rested post pipes are read again then)
                timeout = max(0.0, resting.until - now)
            self.sleeping = timeout > 0.0
            events = poll(timeout)
            self.sleeping = False
            if not events and timeout == 0.0 and spinning and not done:
                # Busy-polling, in a tight loop of its own until the first event or the end
                # of the window: a whole turn costs ~1 us more, which a request arriving now
                # would wait for. (A deadline falls due at most ``spin`` late.)
                until = last_active + spin
                while True:
                    sched_yield()  # if a client shares our CPU, let it run
                    events = poll(0.0)
                    if events or done or monotonic() >= until:
                        break
            now = monotonic()
            if events:
                last_active = now
                if spin and now >= cpu_known_until:
                    # which CPU answers: clients use it to decide where to run (``_sched``);
                    # a thread seldom moves, so asked at most every ``_CPU_KNOWN_FOR``
                    cpu_known_until = now + _CPU_KNOWN_FOR
                    cpu = current_cpu()
                    if cpu != last_cpu:
                        last_cpu = cpu
                        home.flags = with_cpu(home.flags, cpu)
            # (``with core_lock``, written out: it is taken on every turn)
            take_core()
            core._loop_thread = me
            try:
                if events:
                    # how the loop found its work: by busy-polling, or woken (see "inspect")
                    counters["polled" if timeout == 0.0 else "woken"] += 1
                for fd, mask in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        if mask & ~OUT:  # data, or a hang-up or error that recv reports
                            server._on_readable(conn, now)
                        if mask & OUT and fd in conns:
                            server._send_pending(conn)
                    elif fd in post_conns:
                        server._posts_arrived(post_conns[fd], now)
                    elif fd == wake_fd:
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    elif fd == listener_fd:
                        server._accept(now)
                    elif fd == owner_fd and owner_fd is not None:
                        server._owner_died()
                if server._leftovers:
                    server._serve_leftovers(now)
                if resting.until <= now:
                    server._read_rested(self, now)
                if core.dirty:
                    server._flush(self)  # replies first: the housekeeping can wait a moment
                if keeps_clock:
                    while done:
                        job = done.popleft()
                        if type(job) is _Decoding:
                            server._decoded(job, now)
                        else:
                            core.finish(job, now)  # type: ignore[arg-type]
                core.tick(now)
                if memory is not None and events and now >= memory.next_check:
                    memory.check(now)  # (what calls on any reactor added)
                if keeps_clock:
                    if now - server._running_checked > _RUNNING_WINDOW:
                        server._update_running(now)
                    if now >= next_housekeeping:
                        next_housekeeping = now + 0.5
                        server._housekeeping(now)
                while jobs:
                    server._workers.submit(jobs.popleft())
                if core.dirty or core.ended:
                    server._flush(self)
                if core.shutdown_requested or (server._owner_gone and not core.sessions):
                    server.stop()
                if not keeps_clock and clock_reactor.sleeping:
                    due = core.next_deadline()
                    if due is not None and due < clock_reactor.sleep_until:
                        clock_reactor.wake()  # it sleeps past a deadline we just made
            finally:
                core._loop_thread = 0
                leave_core()
            if self.sends:
                # Written without the core lock: a write wakes the client, which may take
                # this CPU at once (the client computes there) while this thread still holds
                # what it held; with the core lock, every other reactor waited for that client.
                server._send_out(self)
            if events and spinning:
                # The window runs from the end of the turn: a long one (posts applied before
                # a request) must not leave the next request of a client that asks again at
                # once to a sleeping loop.
                last_active = monotonic()
            if events and spin and perf_counter() >= advise_at:
                # Spin after activity only where that takes nobody's CPU (``_advise``). A
                # loaded machine stays loaded a while (``LoadGauge``): ask again only then,
                # not on every turn of a loop that is then all about speed. (Asking less often
                # where clients compute was measured worse with one CPU-bound process.)
                spinning = server._advise(perf_counter(), states)
                core.lock_window = lock_window if spinning else 0.0
                advise_at = 0.0 if spinning else server._gauge.loaded_until
        states.forget()
        with core_lock:
            server._flush()


class Server:
    """A procshare server: a listening socket, a few reactor threads, and the core.

    Args:
        types: the registered typeids.
        address: canonical address to listen on, or ``None`` for a private unix socket.
        authkey: clients must prove they know it.
        rebuild: the proxy-rebuilding function tokens unpickle with (``RebuildProxy``).
        serializers: the serializers clients may choose.
        max_frame: the largest frame a client may send.
        release_delay: seconds an unreferenced object is kept before disposal.
        spin: the longest busy-poll after activity, for the server and its clients alike,
            only while a CPU is free (``_sched``); ``None``: 50 us with two or more CPUs;
            0: never.
        owner_pid: a process whose death (once no client is connected) stops the server.
        handshake_timeout: seconds a new connection has to authenticate.
        max_backlog: unsent bytes after which a client that does not read is dropped.
        max_workers: the most threads running user code at once.
        watch_backlog: unsent bytes after which a session's change events are dropped and
            counted (its watchers are told how many they missed once it catches up).
        leases: offer local clients the lease page (``_leases``); off: every read asks.
        posts: let local clients post the calls that cannot fail (``Post``: a lock's release
            by its holder, a put on an unbounded queue, a dict's item set...); off: every
            call waits for its answer.
        lock_window: seconds a released lock with waiters stays free for whoever asks first
            (``Lock``); default ``LOCK_WINDOW`` within ``spin``; 0: strict arrival order.
        reactors: server threads serving connections (default: one per CPU, at most
            ``MAX_REACTORS``).
        max_memory: bytes of data the server may hold beyond what it used when it started
            serving (an int, or ``"512MiB"``); changes past it are refused with
            ``MemoryLimitError`` (``_memory``). ``None``: no limit.
        tls: an ``ssl.SSLContext`` for the server side: clients on TCP must speak TLS.
        max_connections: connections served at once; one more is refused (``ServerBusy``).
    """

    def __init__(
        self,
        types: Mapping[str, ServerType],
        address: Address | None,
        authkey: bytes,
        *,
        rebuild: Callable[..., Any],
        serializers: tuple[str, ...] = ("pickle",),
        max_frame: int = DEFAULT_MAX_FRAME,
        release_delay: float = 5.0,
        spin: Any = None,
        owner_pid: int | None = None,
        handshake_timeout: float = 10.0,
        max_backlog: int = 256 * 1024 * 1024,
        max_workers: int = 256,
        watch_backlog: int = 8 * 1024 * 1024,
        leases: bool = True,
        lock_window: float | None = None,
        reactors: int | None = None,
        max_memory: int | str | None = None,
        tls: Any = None,
        max_connections: int | None = None,
        posts: bool = True,
    ) -> None:
        if max_connections is not None and (
            not isinstance(max_connections, int) or max_connections < 1
        ):
            raise ValueError(f"max_connections must be a positive int, not {max_connections!r}")
        self._max_connections = max_connections
        self._authkey = bytes(authkey)
        #: an ``ssl.SSLContext`` (server side): TCP connections speak TLS (``_tls``)
        self._tls = tls
        self._memory = None if max_memory is None else MemoryGuard(parse_size(max_memory))
        #: tells clients apart a restarted server at the same address (object ids restart)
        self.instance = os.urandom(8).hex()
        self._serializers = serializers
        self._max_frame = max_frame
        self._cpus = available_cpus()
        # the longest busy-poll after activity; only while a CPU is free (``_sched``)
        self._spin = configured_spin(spin)
        if reactors is None:
            reactors = min(self._cpus, MAX_REACTORS)
        if not isinstance(reactors, int) or reactors < 1:
            raise ValueError(f"reactors must be a positive int, not {reactors!r}")
        self._handshake_timeout = handshake_timeout
        self._leases = leases
        self._posts = posts
        self._max_backlog = max_backlog
        self._owned_dir: str | None = None
        self._connection_file: Any = None
        if address is None:
            address = private_unix_path()
            self._owned_dir = os.path.dirname(address)
        #: the listening socket (``server.listener.close()`` as with the stdlib's server)
        self.listener = self._listen(address)
        bound = self.listener.getsockname()
        # (as the stdlib's Listener: "" binds every interface and reads back as "0.0.0.0")
        self.address: Address = (
            bound if isinstance(address, str) else (address[0] or bound[0], bound[1])
        )
        if not isinstance(address, str) and not _is_loopback(address[0]) and tls is None:
            log.warning(
                "procshare server listening on %s without TLS: other machines can connect and "
                "read the traffic (the authkey is all that keeps them out); bind 127.0.0.1 to "
                "serve this machine only, or give it a certificate (tls_cert/--tls-cert)",
                describe(self.address),
            )
        self.core = Core(
            types,
            address=self.address,
            rebuild=rebuild,
            release_delay=release_delay,
            watch_backlog=watch_backlog,
        )
        self.core_lock = _CoreLock(self.core)
        # A released lock stays free for whoever asks first (``Lock``) no longer than the
        # loop busy-polls after the release: a releaser coming back finds it still polling.
        # (While the loop sleeps instead, under load, locks are handed over at once.)
        self._lock_window = min(self._spin, LOCK_WINDOW) if lock_window is None else lock_window
        self.core.lock_window = self._lock_window
        self._reactors = [_Reactor(self, i) for i in range(reactors)]
        self._by_session: dict[int, _Conn] = {}
        #: catching up with them now (``_read_unread``), and those left with requests read and
        #: not served yet by a catch-up that stopped at a later post (served on this turn)
        self._catching: set[_Conn] = set()
        #: posts are being applied (``_apply_posts``: not again inside), and the connections
        #: whose post pipe was read and not all applied (a post stopped at ``before``, or one
        #: under way)
        self._applying_posts = False
        self._post_backlog: set[_Conn] = set()
        #: every post pipe, never waited on: which hold posts (``_apply_posts``)
        self._post_readiness = Poller()
        self._post_pipes: dict[int, _Conn] = {}
        self._leftovers: dict[_Conn, None] = {}  # (an ordered set)
        self.core.read_unread = self._read_unread
        #: set by ``stop()``; read by the reactors on every turn (a plain attribute: cheaper
        #: than an Event's method, and only ever set)
        self.stopping = False
        self._stopped = threading.Event()
        self._done: deque[Job | _Decoding] = deque()
        self._workers = _Workers(self._done, self._wake_clock, max_workers, self._memory)
        self._owner_pid = owner_pid
        self._owner_fd: int | None = None
        self._owner_gone = False
        #: running clients, all reactors together, and those of them that compute between
        #: calls (see ``_update_running``)
        self.running = 0
        self.thinking = 0
        self._thinking: dict[int, float] = {}
        #: clients that sent something lately, parked or not (a parked one is runnable
        #: the moment what it waits for is handed to it)
        self.active = 0
        self._active: dict[int, float] = {}
        self._running_checked = 0.0
        self._gauge = LoadGauge(self._cpus)
        #: the ``stat`` files of the reactors and the active clients on this machine, whose
        #: states tell ours from others among the runnable tasks (``_advise``); None where
        #: they cannot (a client elsewhere, or too many to read)
        self.ours: tuple[str, ...] | None = ()
        self._serving = False

    # -- ServerHook (see _context) ----------------------------------------------------------

    def on_loop_thread(self) -> bool:
        return self.core.on_loop_thread()

    def adopt(self, obj_id: int) -> None:
        self.core.references.adopt(obj_id)

    def adopted(self, proxy: Any) -> None:
        self.core.references.adopted(proxy)

    def disown(self, obj_id: int, holder: int | None) -> None:
        self.core.references.disown(obj_id, holder)

    def lend(self, obj_id: int, by: object) -> bool:
        return self.core.references.lend(obj_id, by)

    def referent(self, obj_id: int) -> Any:
        return self.core.referent(obj_id)

    # -- life ---------------------------------------------------------------------------------

    @staticmethod
    def _listen(address: Address) -> socket.socket:
        sock = socket.socket(family(address), socket.SOCK_STREAM)
        try:
            if isinstance(address, str):
                with contextlib.suppress(FileNotFoundError):
                    if os.path.exists(address) and _is_stale_socket(address):
                        os.unlink(address)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            if isinstance(address, str):
                os.chmod(address, 0o600)
            sock.listen(512)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def serve_forever(self) -> None:
        """Serve until ``stop()`` or a ``shutdown`` command. The calling thread is reactor 0
        (it keeps the clock); the others run on threads of their own."""
        # Leases need a page that clients map: same machine only.
        if self._leases and isinstance(self.address, str) and self.core.leasing.page is None:
            self.core.leasing.page = LeasePage.create(self.instance)
            self.core.loans = LoanPage.create(self.instance)
        for reactor in self._reactors:
            reactor.open()
        self._post_readiness.open()
        self.core.stats_counters["polled"] = self.core.stats_counters["woken"] = 0
        clock = self._reactors[0]
        clock.poller.register(self.listener.fileno())
        self._watch_owner()
        register_server(self.address, self)
        self._serving = True
        self._write_connection_file()
        log.info("serving at %s (pid %d)", describe(self.address), os.getpid())
        try:
            for reactor in self._reactors[1:]:
                reactor.thread = threading.Thread(
                    target=self._run_reactor,
                    args=(reactor,),
                    name=f"procshare-reactor-{reactor.index}",
                    daemon=True,
                )
                reactor.thread.start()
            if self._memory is not None:
                self._memory.start()  # (counts the reactors' stacks in its base)
                self.core.memory = self._memory
            clock.run()
        finally:
            self.stop()
            for reactor in self._reactors[1:]:
                if reactor.thread is not None:
                    reactor.thread.join(5.0)
            unregister_server(self.address)
            with self.core_lock:
                self._close_everything()
            if self._memory is not None:
                self.core.memory = None
                self._memory.stop()
            log.info("stopped serving at %s", describe(self.address))
            self._stopped.set()

    def _run_reactor(self, reactor: _Reactor) -> None:
        """A reactor's own thread. Its loop failing (a bug) stops the whole server: its
        clients' connections end (``ConnectionLost``) rather than wait on a thread that is
        gone."""
        try:
            reactor.run()
        except BaseException:
            log.critical("reactor %d failed: the server stops", reactor.index, exc_info=True)
            self.stop()

    def _write_connection_file(self) -> None:
        """Tell this user's tools where we are (``_discovery``); a failure only costs that."""
        from .._discovery import ConnectionFile

        try:
            self._connection_file = ConnectionFile(
                self.address,
                self._authkey,
                self._serializers[0],
                self._owned_dir,
                tls=self._tls is not None,
            )
        except OSError as exc:
            log.warning("cannot write the connection file: %s", exc)

    def stop(self) -> None:
        """Ask the loop to stop (from any thread); returns at once."""
        self.stopping = True
        self._wake_all()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the loop has stopped and released its resources."""
        return self._stopped.wait(timeout)

    def _wake_all(self) -> None:
        for reactor in self._reactors:
            reactor.wake(force=True)

    def _wake_clock(self) -> None:
        self._reactors[0].wake()

    def close(self) -> None:
        """Release a server that will not serve (``serve_forever`` releases its own)."""
        if not self._serving:
            self._close_everything()

    def _watch_owner(self) -> None:
        if self._owner_pid is None:
            return
        try:
            fd = os.pidfd_open(self._owner_pid)
        except (AttributeError, OSError):
            return  # polled in _housekeeping instead
        self._owner_fd = fd
        self._reactors[0].poller.register(fd)

    def _housekeeping(self, now: float) -> None:
        for reactor in self._reactors:
            for conn in list(reactor.conns.values()):
                if conn.session is None and now - conn.accepted > self._handshake_timeout:
                    self._close(conn, now)
        if self._owner_pid is not None and self._owner_fd is None and not self._owner_gone:
            try:
                os.kill(self._owner_pid, 0)
            except ProcessLookupError:
                self._owner_died()
            except OSError:
                pass

    def _owner_died(self) -> None:
        self._owner_gone = True
        if self._owner_fd is not None:
            self._reactors[0].poller.unregister(self._owner_fd)
            os.close(self._owner_fd)
            self._owner_fd = None

    def _update_running(self, now: float) -> None:
        """Count the running clients, and those that compute between calls (``THINKS``).

        A client counts as running if it sent something within the window and is not parked
        on the server (a process waiting for a lock sleeps). Tells them whether others run
        too (``Flag.CROWDED``): a lone client on a busy machine moves next to its reactor
        (``_sched``), several must not (they would crowd onto one CPU while another runs
        something else).
        """
        horizon = now - _RUNNING_WINDOW
        sessions = self.core.sessions
        running = 0
        for reactor in self._reactors:
            recent = {
                sid: t
                for sid, t in reactor.recent.items()
                if t >= horizon and (s := sessions.get(sid)) is not None and not s.waiters
            }
            reactor.recent = recent
            running += len(recent)
        self._thinking = {
            sid: t for sid, t in self._thinking.items() if t >= horizon and sid in sessions
        }
        self._active = {
            sid: t for sid, t in self._active.items() if t >= horizon and sid in sessions
        }
        self.active = len(self._active)
        self._watch_ours(sessions)
        self.running = running
        self.thinking = len(self._thinking)
        self._running_checked = now
        crowded = Flag.CROWDED if running > 1 else 0
        for reactor in self._reactors:
            reactor.home.flags = (reactor.home.flags & ~Flag.CROWDED) | crowded

    def _watch_ours(self, sessions: dict[int, Session]) -> None:
        """Which tasks ``ours`` names: the reactors and the active clients on this machine,
        unless they are too many to read at each reading of the load (then none)."""
        me = os.getpid()
        paths = [f"/proc/{me}/task/{r.native_id}/stat" for r in self._reactors if r.native_id]
        for sid in self._active:
            session = sessions.get(sid)
            if session is None or session.pid is None or session.pid == me:
                continue
            if session.host or len(paths) >= _MOST_TASKS_READ:
                paths = []  # (a client elsewhere, or too many: ours cannot be told apart)
                break
            paths.append(f"/proc/{session.pid}/stat")
        ours = tuple(paths) if paths else None
        if ours != self.ours:
            self.ours = ours  # (a new tuple: each reactor's TaskStates follow it, ``_advise``)

    def _advise(self, now: float, states: TaskStates | None = None) -> bool:
        """Whether busy-polling takes nobody's CPU now; told to clients with the replies
        (``Flag.SPIN``), and what the reactors do.

        No while a process that is not ours waits for a CPU (or did a moment ago:
        ``LoadGauge``), and no while a client computes between its calls, unless it is the
        only client running (a spin would hold the CPU it, or the reactor its next call
        wakes, needs; the runnable count cannot show that: it is read before that reactor's
        wake-up lands). ``states``: the calling reactor's reader of the tasks in ``ours``.
        """
        running = self.running
        ours = self.active + 1  # (the reactor itself)
        count = None
        tasks = self.ours
        if states is not None and tasks is not None:
            if states.paths is not tasks:
                states.watch(tasks)  # (the calling reactor's own: no other thread reads it)
            count = states.running
        free = not self._gauge.loaded(now, ours, count) and (not self.thinking or running <= 1)
        advice = Flag.SPIN if free else 0
        for reactor in self._reactors:
            reactor.home.flags = (reactor.home.flags & ~Flag.SPIN) | advice
        return free

    # -- connections (all under the core lock) -------------------------------------------------

    def _accept(self, now: float) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept a connection: %s", exc)
                    return
                raise
            limit = self._max_connections
            if limit is not None and sum(len(r.conns) for r in self._reactors) >= limit:
                self._refuse_busy(sock, limit)
                continue
            sock.setblocking(False)
            tcp = sock.family != socket.AF_UNIX
            if tcp:
                _tune_tcp(sock)
            sid = self.core.new_session_id()
            info: dict[str, Any] = {
                "session": sid,
                "pid": os.getpid(),
                "instance": self.instance,
                "spin": self._spin,  # binds the client's busy-polling too
                "posts": self._posts,
            }
            page = self.core.leasing.page
            if page is not None and sock.family == socket.AF_UNIX:
                info["leases"] = page.path
                if self.core.loans is not None:
                    info["loans"] = self.core.loans.path
            proto = ServerProtocol(
                self._authkey,
                serializers=self._serializers,
                info=info,
                max_frame=self._max_frame,
            )
            # Requests whose decoding may run the sender's code are decoded off the reactor
            # (``_defer``); those holding proxies, here (they are rebuilt inside this server).
            proto.defer = True
            proto.defer_unless = b"RebuildProxy"
            reactor = self._reactors[0]  # until it shows it computes between calls (_ran)
            conn = _Conn(sock, proto, sid, now, reactor)
            if tcp and self._tls is not None:
                from ._tls import TlsWire

                wire = TlsWire(sock, self._tls)
                conn.recv, conn.send = wire.recv, wire.send
            reactor.conns[conn.fd] = conn
            self._interest(conn)
            conn.out += proto.data_to_send()
            self._send_pending(conn)

    def _refuse_busy(self, sock: socket.socket, limit: int) -> None:
        """Tell a connection over the limit why, and close it (in plain text, even on a TLS
        server: the client reads it as a failed handshake and says so)."""
        log.warning("refusing a connection: %d connections, the most allowed", limit)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(busy_frame(f"it serves {limit} connections, the most it allows"))
        sock.close()

    def _on_readable(self, conn: _Conn, now: float) -> None:
        proto = conn.proto
        try:
            data = conn.recv(proto.recv_size())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        session = conn.session
        if session is not None and data:
            try:
                call = proto.take_call(data)  # the usual request: one frame, a call
                if call is not NEED_DATA:
                    if type(call) is Deferred:
                        self._defer(conn, call)
                        return
                    self.core.dispatch(session, call, now)
                    self._ran(conn, session, now)
                    return
            except (Exception, SystemExit):  # noqa: BLE001 - logged by _failed
                self._failed(conn, now)
                return
        proto.receive_data(data)
        self._serve(conn, now)

    def _read_unread(
        self, sessions: Collection[Session], before: float | None, busy: Collection[Session]
    ) -> None:
        """``Core.read_unread``: read what ``sessions``' connections hold (whichever reactor
        serves them: we hold the core lock) and serve it, up to the first request that is not
        a post stamped before ``before`` when it is given. (A connection whose request is
        being decoded aside holds no post: its client does not post while it waits.)

        The reactors' own readiness says which of them hold anything (one ``epoll_wait``
        each): an object many processes post to costs a read of those that wrote, not of
        all of them."""
        wanted = sessions
        now = time.monotonic()
        self._apply_posts(now, before, busy)
        counters = self.core.stats_counters
        leftovers = self._leftovers
        for left in list(leftovers):  # (read earlier, stopped at a later post)
            if (
                left in leftovers  # (not served by a catch-up that an earlier one made)
                and left.session in wanted
                and left.session not in busy
                and left not in self._catching
            ):
                del leftovers[left]
                self._catch_up_with(left, now, before, counters)
        for reactor in self._reactors:
            ready = reactor.poller.ready_now()
            if ready is None:  # (no epoll: ask every connection)
                ready = [(c.fd, IN) for c in reactor.conns.values() if c.session in wanted]
            conns = reactor.conns
            for fd, mask in ready:
                conn = conns.get(fd)
                if (
                    conn is not None
                    and conn.session in wanted
                    and conn.session not in busy
                    and fd == conn.fd
                    and mask & ~OUT
                    and not conn.decoding
                    and conn not in self._catching
                ):
                    self._catch_up_with(conn, now, before, counters, read=True)

    def _apply_posts(
        self, now: float, before: float | None = None, busy: Collection[Session] = ()
    ) -> dict[_Conn, int]:
        """Apply what the post pipes hold, all of them, in the order their posts were written
        (their stamps: a post written after its writer learned of another's is stamped
        later), up to the first stamped at or after ``before`` when it is given; ``busy``:
        sessions whose request is being applied further up (``Core.catch_up``). Returns the
        bytes read from each pipe read.

        The pipes are read one after another, so a pipe read late may hold a post whose cause
        was written into a pipe read earlier, after that read. So a round applies only the
        posts stamped before the moment it began: a post that caused another was written
        before the other was stamped, so before that moment, into a pipe that held it when
        it was looked at. Applied in stamp order, each post finds what the post pipes held
        for it applied: re-entered from a post's catch-up, this returns at once (that
        catch-up still reads the request pipes of the object's other posters, for the posts
        sent along with requests: ``_read_unread``). The posts left are those written while a
        round read, which the next round takes (``_POST_ROUNDS`` at most; then the pipe's
        rest), and those stamped at or after ``before``, which a later call takes. One
        ``epoll_wait`` over all post pipes tells which hold anything (reading every poster's
        pipe cost 0.6x with 64 of them).
        """
        if self._applying_posts:
            return {}
        self._applying_posts = True
        read: dict[_Conn, int] = {}
        backlog = self._post_backlog
        try:
            pipes = self._post_pipes
            for _ in range(_POST_ROUNDS):
                cut = time.monotonic()  # (before the pipes are looked at)
                limit = cut if before is None or before > cut else before
                ready = self._post_readiness.ready_now()
                for fd in list(pipes) if ready is None else [fd for fd, _ in ready]:
                    conn = pipes.get(fd)
                    if conn is not None and conn.session not in busy:
                        read[conn] = read.get(conn, 0) + self._read_posts(conn)
                heap: list[tuple[float, int, _Conn]] = []
                for conn in list(read) + [c for c in backlog if c not in read]:
                    stamp = conn.proto.next_post_stamp()
                    if stamp is not None and conn.session is not None and conn.session not in busy:
                        heap.append((stamp, conn.sid, conn))
                heapq.heapify(heap)
                while heap:
                    stamp, _, conn = heap[0]
                    if stamp >= limit:
                        break
                    self._apply_post(conn, now)
                    nxt = None if conn.closed else conn.proto.next_post_stamp()
                    if nxt is None:
                        heapq.heappop(heap)
                    else:
                        heapq.heapreplace(heap, (nxt, conn.sid, conn))
                if not heap or limit != cut:
                    break  # (all applied, or the rest is for after ``before``)
        finally:
            self._applying_posts = False
        for conn in [*read, *(c for c in backlog if c not in read)]:
            if not conn.closed and conn.proto.has_posts_buffered():
                backlog.add(conn)
                if conn.post_armed and conn.proto.next_post_stamp() is not None:
                    # (left by ``before``, or after the last round: read again, and applied,
                    # when the rest ends)
                    self._rest(conn, now)
            else:
                backlog.discard(conn)
        return read

    def _apply_post(self, conn: _Conn, now: float) -> bool:
        """Apply ``conn``'s next post read from its post pipe; whether there was one."""
        session = conn.session
        try:
            post = conn.proto.next_post()
            if post is None or session is None or session.closed:
                return False
            self.core.dispatch(session, post, now)
        except ProtocolError as exc:
            log.warning("dropping the connection from %s: %s", _peer_of(conn), exc)
            self._close(conn, now)
            return False
        except (Exception, SystemExit):  # noqa: BLE001 - logged by _failed
            self._failed(conn, now)
            return False
        return True

    def _apply_pipe(self, conn: _Conn, now: float) -> None:
        """Apply every post read from ``conn``'s post pipe, in its order."""
        while not conn.closed and self._apply_post(conn, now):
            pass

    def _apply_own_posts(self, conn: _Conn, now: float) -> None:
        """A ``Drain`` from ``conn``: apply what its post pipe holds before what follows it
        (a request, usually, made right after some posts: a queue's put, then a get). Only
        this pipe is read: each post catches up with the other posters of its object as it
        is applied (``Core._post``), which reads their pipes only where there are others."""
        if conn.post_fd < 0 or conn.session is None:
            return
        self._read_posts(conn)
        self._apply_pipe(conn, now)
        if not conn.closed and conn.proto.has_posts_buffered():
            self._post_backlog.add(conn)
        else:
            self._post_backlog.discard(conn)

    def _read_posts(self, conn: _Conn) -> int:
        """Read what ``conn``'s post pipe holds into its protocol (``next_post``); the bytes
        read. A pipe its client closed is waited on no more (what it held was read)."""
        if conn.post_fd not in self._post_pipes:
            return 0  # (ended, or gone with its connection)
        data = read_post_pipe(conn.post_fd)
        if data is None:
            self._post_pipe_ended(conn)
            return 0
        if data:
            conn.proto.feed_posts(data)
        return len(data)

    def _rest(self, conn: _Conn, now: float) -> None:
        """Stop waiting on ``conn``'s post pipe until its reactor's rest ends."""
        reactor = conn.reactor
        reactor.poller.unregister(conn.post_fd)
        conn.post_armed = False
        reactor.resting.add(conn.post_fd, conn, now)

    def _posts_arrived(self, conn: _Conn, now: float) -> None:
        """``conn``'s post pipe, waited on, became readable: apply what the post pipes hold,
        and rest it (``_post_pipes``), unless its client writes faster than a rest lets
        through."""
        fd = conn.post_fd
        read = self._apply_posts(now).get(conn, 0)
        if conn.post_fd == fd and conn.post_armed and not keeps_up(read, conn.proto):
            self._rest(conn, now)

    def _read_rested(self, reactor: _Reactor, now: float) -> None:
        """The post pipes ``reactor`` rested, now due: apply what the pipes hold, and rest
        those that held posts again, wait on the others again."""
        due = reactor.resting.take_due(now)
        read = self._apply_posts(now)
        for fd, conn in due:
            if conn.post_fd != fd or conn.reactor is not reactor or conn.post_armed:
                continue  # (closed, moved, or waited on again meanwhile)
            got = read.get(conn, 0)
            if got and not keeps_up(got, conn.proto):
                reactor.resting.add(fd, conn, now)
            else:
                reactor.poller.register(fd)
                conn.post_armed = True

    def _post_pipe_ended(self, conn: _Conn) -> None:
        """Stop waiting on ``conn``'s post pipe, which its client closed (it is closed with
        the connection: the posts read from it are applied until then, ``_post_backlog``)."""
        fd = conn.post_fd
        if fd < 0 or self._post_pipes.pop(fd, None) is None:
            return
        reactor = conn.reactor
        reactor.post_conns.pop(fd, None)
        self._post_readiness.unregister(fd)
        if conn.post_armed:
            reactor.poller.unregister(fd)
        reactor.resting.discard(fd)
        conn.post_armed = False

    def _forget_post_pipe(self, conn: _Conn) -> None:
        """Stop reading ``conn``'s post pipe, and close it (its connection closes)."""
        fd = conn.post_fd
        if fd < 0:
            return
        self._post_pipe_ended(conn)
        self._post_backlog.discard(conn)
        conn.post_fd = -1
        os.close(fd)

    def _catch_up_with(
        self,
        conn: _Conn,
        now: float,
        before: float | None,
        counters: dict[str, int],
        read: bool = False,
    ) -> None:
        """Serve what ``conn`` sent before ``before`` (``_read_unread``), reading it first."""
        session = conn.session
        if session is None or conn.closed:
            return
        self._catching.add(conn)
        try:
            calls = session.calls
            if not read or self._take_in(conn):
                self._serve(conn, now, before)
            if session.calls != calls:
                counters["caught up"] += 1
        finally:
            self._catching.discard(conn)

    def _take_in(self, conn: _Conn) -> bool:
        """Read everything ``conn`` holds into its protocol (at most its pipe's worth: its
        client waits for nothing it posts, so the pipe is what bounds it); whether there is
        anything to serve."""
        proto = conn.proto
        try:
            while True:
                data = conn.recv(proto.recv_size())
                proto.receive_data(data)
                if not data:
                    break  # (end of file: served as such)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            proto.receive_data(b"")
        return proto.has_buffered() or proto.peer_closed

    def _serve_leftovers(self, now: float) -> None:
        """Serve what catch-ups read and left (posts stamped after the request they ran for)."""
        leftovers = self._leftovers
        while leftovers:
            conn = next(iter(leftovers))
            del leftovers[conn]
            if not conn.closed and not conn.decoding and conn.session is not None:
                self._serve(conn, now)

    def _serve(self, conn: _Conn, now: float, before: float | None = None) -> None:
        """Serve the requests buffered on ``conn``, in order, until it needs more data (or
        one is being decoded off this thread: ``_defer``); with ``before``, only its posts
        stamped before it (``_read_unread``)."""
        proto = conn.proto
        session = conn.session
        core = self.core
        try:
            while True:
                if before is not None:
                    stamp = proto.pending_stamp()
                    if stamp is None:
                        break
                    if stamp >= before:
                        self._leftovers[conn] = None
                        break
                event = proto.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is ConnectionClosed:
                    self._close(conn, now)
                    return
                if kind is Deferred:
                    self._defer(conn, event)
                    break
                if kind is Drain:  # (what it posted before what follows: ``_post_pipes``)
                    self._apply_own_posts(conn, now)
                    if conn.closed or not proto.has_buffered():
                        break
                    continue
                if session is not None:
                    core.dispatch(session, event, now)
                    if session.closed or not proto.has_buffered():
                        break  # (the usual case: one request per read, nothing after it)
                elif kind is Authenticated:
                    session = self._authenticated(conn, event, now)
                else:
                    raise ProtocolError(f"unexpected event {event!r}")
            if session is not None:
                self._ran(conn, session, now)
        except AuthenticationError as exc:
            log.warning("refused a connection from %s: %s", _peer_of(conn), exc)
            conn.out += proto.data_to_send()
            self._send_pending(conn)
            self._close(conn, now)
        except ProtocolError as exc:
            log.warning("dropping the connection from %s: %s", _peer_of(conn), exc)
            self._close(conn, now)
        except (Exception, SystemExit):  # noqa: BLE001 - logged by _failed
            self._failed(conn, now)

    def _failed(self, conn: _Conn, now: float) -> None:
        """A bug of the server's met by a request of ``conn`` (or a sys.exit() the core did not
        contain): drop its connection (what it held is freed, as for a client that died) and
        go on serving everyone else. (A KeyboardInterrupt is a signal to this process, not a
        request's doing: the core contains those that user code raises.)"""
        log.exception("dropping connection %d: the server failed on its request", conn.fd)
        self._close(conn, now)

    def _defer(self, conn: _Conn, request: Deferred) -> None:
        """Decode ``request`` on a worker thread: decoding it may run the sender's code (a
        custom value's ``__setstate__`` that takes seconds), which must not hold up other
        clients. ``conn`` is not read meanwhile (its next requests come after this one);
        ``_decoded`` serves the request once it is decoded, then goes on."""
        conn.decoding = conn.paused = True
        self.core.stats_counters["decoded aside"] += 1
        self._interest(conn)
        self._workers.submit(_Decoding(conn, request))

    def _decoded(self, job: _Decoding, now: float) -> None:
        conn = job.conn
        conn.decoding = False
        if conn.reactor.conns.get(conn.fd) is not conn:
            return  # closed meanwhile
        session = conn.session
        if session is not None:
            try:
                self.core.dispatch(session, job.message, now)
            except (Exception, SystemExit):  # noqa: BLE001 - logged by _failed
                self._failed(conn, now)
                return
            self._ran(conn, session, now)
        self._serve(conn, now)
        if not conn.decoding and conn.reactor.conns.get(conn.fd) is conn:
            conn.paused = False
            self._interest(conn)  # (what came meanwhile is reported now)

    def _ran(self, conn: _Conn, session: Session, now: float) -> None:
        """Account for a request of ``session`` just served: running (competing for a CPU)
        unless its request is parked on the server; and on the right reactor."""
        reactor = conn.reactor
        sid = session.id
        self._active[sid] = now
        if session.waiters:
            reactor.recent.pop(sid, None)
            return
        reactor.recent[sid] = now
        thinks = conn.proto.client_thinks
        if thinks:
            self._thinking[sid] = now
        # Clients that compute between calls get reactors of their own, which follow them
        # to their CPUs; clients that call back to back share reactor 0, which serves them
        # in batches and busy-polls for them (module docstring).
        if thinks != (reactor.index == 0) or len(self._reactors) == 1:
            conn.streak = 0
            return
        conn.streak += 1
        if conn.streak < _PLACE_AFTER:
            return
        conn.streak = 0
        conn.placed = now
        if thinks:
            if len(reactor.recent) > 1:  # alone, it may stay where it is
                self._move(conn, min(self._reactors[1:], key=lambda r: len(r.conns)), now)
        else:
            self._move(conn, self._reactors[0], now)

    def _take_over(self, conn: _Conn, own: _Reactor) -> bool:
        """Move ``conn`` to reactor ``own``, whose turn has a reply for it, where that saves
        waking the reactor it is on: asleep in poll, that thread would be woken (on another
        CPU, through an interrupt: ~20-60 us on these VMs) only to write the reply, while
        its client sleeps too (a consumer blocked in ``get`` whose item a producer on another
        reactor put). Not while anything of it is being written or waits to be: the move
        takes its reactor's ``send_lock``, under which every reply collected and not yet
        written shows (``_send_out``). Whether it stays is ``_ran``'s to decide."""
        old = conn.reactor
        if not old.sleeping or conn.writing or conn.decoding or conn.paused or conn.closed:
            return False
        now = time.monotonic()
        if now - conn.placed < _PLACED_FOR:
            return False  # (just placed where its requests are best served)
        lock = old.send_lock
        if not lock.acquire(blocking=False):
            return False
        try:
            if conn.stalled or any(c is conn for c, _ in old.sends):
                return False
            self._move(conn, own, now)
        finally:
            lock.release()
        self.core.stats_counters["taken over"] += 1
        return True

    def _move(self, conn: _Conn, reactor: _Reactor, now: float) -> None:
        """Hand ``conn`` over to ``reactor`` (data waiting on it is reported there: level-
        triggered)."""
        old = conn.reactor
        writing = conn.writing
        if writing:
            conn.writing = False
            self._want_writable(conn, False)
        old.conns.pop(conn.fd, None)
        if conn.mask:
            old.poller.unregister(conn.fd)
            conn.mask = 0
        post_fd = conn.post_fd
        if post_fd >= 0:  # (its post pipe goes along, waited on or resting as it was)
            old.post_conns.pop(post_fd, None)
            reactor.post_conns[post_fd] = conn
            if conn.post_armed:
                old.poller.unregister(post_fd)
                reactor.poller.register(post_fd)
            else:
                old.resting.discard(post_fd)
                reactor.resting.add(post_fd, conn, now)
        conn.reactor = reactor
        reactor.conns[conn.fd] = conn
        self._interest(conn)
        if writing:
            conn.writing = True
            self._want_writable(conn, True)
        session = conn.session
        if session is not None:
            session.home = reactor.home
            if old.recent.pop(session.id, None) is not None:
                reactor.recent[session.id] = now

    def _authenticated(self, conn: _Conn, event: Authenticated, now: float) -> Session:
        session = self.core.open_session(conn.sid, conn.proto, event.info, now)
        if conn.sock.family != socket.AF_UNIX:
            session.host = _peer_of(conn).rpartition(":")[0]
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "client pid %s (%s) connected from %s", session.pid, session.name, _peer_of(conn)
            )
        session.home = conn.reactor.home
        conn.session = session
        self._by_session[conn.sid] = conn
        welcome = conn.proto.data_to_send()
        if event.info.get("pipes") is True and self._to_pipes(conn, welcome):
            session.may_post = self._posts  # (on this machine: its stamps are our clock)
        else:
            conn.out += welcome
            self._send_pending(conn)
        session.probe = _make_probe(conn.fd)
        return session

    def _to_pipes(self, conn: _Conn, welcome: bytes) -> bool:
        """Send ``welcome`` with a pipe each way, and talk through them from now on, closing
        the socket (a client on the same machine asks for it: ``Channel._wire``). Whether it
        did (else nothing was sent)."""
        if conn.sock.family != socket.AF_UNIX or conn.out:
            return False
        requests, to_us = os.pipe()  # the client writes requests into ``to_us``
        from_us, replies = os.pipe()  # we write replies into ``replies``
        # and where it may post, its posts into a pipe of their own (``_post_pipes``)
        posts, posted = open_post_pipe() if self._posts else (-1, -1)
        theirs = [to_us, from_us] if posted < 0 else [to_us, from_us, posted]
        try:
            sent = socket.send_fds(conn.sock, [welcome], theirs)
        except OSError:
            for fd in (requests, to_us, from_us, replies, posts, posted):
                if fd >= 0:
                    os.close(fd)
            return False
        for fd in theirs:
            os.close(fd)
        if sent < len(welcome):  # (a few hundred bytes into an empty buffer: never seen)
            conn.sock.setblocking(True)
            conn.sock.sendall(welcome[sent:])
        os.set_blocking(requests, False)
        os.set_blocking(replies, False)
        reactor = conn.reactor
        reactor.conns.pop(conn.fd, None)
        reactor.poller.unregister(conn.fd)
        conn.mask = 0
        conn.sock.close()
        conn.fd, conn.wfd = requests, replies
        conn.recv = functools.partial(os.read, requests)
        conn.send = functools.partial(os.write, replies)
        reactor.conns[requests] = conn
        self._interest(conn)
        if posts >= 0:
            self._attach_post_pipe(conn, posts)
        return True

    def _attach_post_pipe(self, conn: _Conn, fd: int) -> None:
        """Read ``conn``'s posts from the pipe ``fd`` too, waited on until it holds posts."""
        reactor = conn.reactor
        conn.post_fd = fd
        conn.post_armed = True
        reactor.post_conns[fd] = conn
        reactor.poller.register(fd)
        self._post_readiness.register(fd)
        self._post_pipes[fd] = conn

    def _close(self, conn: _Conn, now: float) -> None:
        reactor = conn.reactor
        if reactor.conns.pop(conn.fd, None) is None:
            return
        if conn.post_fd >= 0:
            # What its client posted before it went (or before its request pipe broke) is
            # applied before its session ends and frees what it held (``_post_pipes``).
            session = conn.session
            if session is not None and not session.closed and not self.core.closing:
                self._apply_posts(now)
            self._forget_post_pipe(conn)
        conn.closed = True
        if conn.mask:
            reactor.poller.unregister(conn.fd)
            conn.mask = 0
        with reactor.send_lock:  # (not while its reactor writes to it: ``_send_out``)
            if conn.wfd != conn.fd:  # its pipes (the socket is closed already)
                if reactor.conns.pop(conn.wfd, None) is not None:
                    reactor.poller.unregister(conn.wfd)
                os.close(conn.fd)
                os.close(conn.wfd)
            else:
                conn.sock.close()
        if conn.session is not None:
            self._by_session.pop(conn.session.id, None)
            reactor.recent.pop(conn.session.id, None)
            self.core.close_session(conn.session, now)

    def _flush(self, own: _Reactor | None = None) -> None:
        """Hand what the core wrote to the connections: a reactor's own connections' replies
        are collected (``own.sends``) for it to write once it leaves the core lock; another
        reactor's are queued on them for that reactor to write (told by their becoming
        writable: only a connection's reactor writes to it), unless that reactor sleeps and
        the connection's client waits for the reply: then ``own`` takes it over and writes
        it (``_take_over``). Without ``own`` (not on a reactor's turn), everything is written
        at once."""
        core = self.core
        by_session = self._by_session
        answered: AbstractSet[Session] = _NOBODY
        while core.dirty:
            dirty = core.dirty
            core.dirty = []
            if core.answered:
                # Answers to parked requests (a lock handed over, a queue item) go first:
                # their clients have waited longest, and are asleep.
                answered = core.answered
                core.answered = set()
                dirty = [s for s in dirty if s in answered] + [
                    s for s in dirty if s not in answered
                ]
            for session in dirty:
                out = session.out
                if not out:
                    continue
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                session.queued = 0
                conn = by_session.get(session.id)
                if conn is None:
                    continue
                if own is not None and conn.reactor is own and not conn.out:
                    own.sends.append((conn, data))  # the usual case (no buffer copy)
                    continue
                mine = own is None or conn.reactor is own
                if (
                    own is not None
                    and not mine
                    # (its request waited, or it waits for pushes: it sleeps, as may its reactor)
                    and (session in answered or session.subscriptions)
                    and not conn.out
                    and self._take_over(conn, own)
                ):
                    mine = True
                if conn.out or not mine:  # waiting for the socket, or another reactor's
                    conn.out += data  # (behind what waits: the order holds)
                    self._send_pending(conn, write=mine)
                    continue
                if own is not None:
                    own.sends.append((conn, data))  # (taken over)
                    continue
                try:
                    sent = _send_some(conn, data)
                except OSError:
                    self._close(conn, time.monotonic())
                    continue
                if sent < len(data):
                    conn.out += memoryview(data)[sent:]
                    self._send_pending(conn)
        while core.ended:
            # Sessions the core closed itself (a peer found dead while handing it something).
            conn = by_session.get(core.ended.pop().id)
            if conn is not None:
                self._close(conn, time.monotonic())

    def _send_out(self, reactor: _Reactor) -> None:
        """Write ``reactor``'s collected replies, on its own thread, without the core lock;
        then, under it, queue what did not fit and close what broke. (The list is taken under
        ``send_lock``: who holds that lock sees every collected reply not yet written in
        ``reactor.sends``, or ``stalled`` on its connection: ``_take_over``.)"""
        if len(reactor.sends) == 1:  # the usual turn: one reply
            with reactor.send_lock:
                [(conn, data)] = reactor.sends
                reactor.sends = []
                if conn.closed:
                    return
                try:
                    sent = conn.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = -1
                    conn.closed = True  # (nothing more is written to it; closed below)
                if sent == len(data):
                    return
                conn.stalled = True
            with self.core_lock:
                conn.stalled = False
                if sent < 0:
                    self._close(conn, time.monotonic())
                elif not conn.closed:
                    conn.out[:0] = memoryview(data)[sent:]
                    self._send_pending(conn)
            return
        rest: dict[_Conn, bytearray] = {}
        broken: list[_Conn] = []
        with reactor.send_lock:
            sends, reactor.sends = reactor.sends, []
            for conn, data in sends:
                if conn.closed:
                    continue
                left = rest.get(conn)
                if left is not None:
                    left += data  # (behind what did not fit: the order holds)
                    continue
                try:
                    sent = _send_some(conn, data)
                except OSError:
                    broken.append(conn)
                    conn.closed = True  # (nothing more is written to it; closed below)
                    continue
                if sent < len(data):
                    rest[conn] = bytearray(memoryview(data)[sent:])
                    conn.stalled = True
        if not (rest or broken):
            return
        with self.core_lock:
            now = time.monotonic()
            for conn, left in rest.items():
                conn.stalled = False
                if not conn.closed:
                    conn.out[:0] = left  # before what other threads queued meanwhile
                    self._send_pending(conn)
            for conn in broken:
                self._close(conn, now)

    def _send_pending(self, conn: _Conn, write: bool = True) -> None:
        """Write what waits in ``conn.out`` (what it takes now), and wait for the connection
        to be writable while some is left. ``write=False``: on a thread that is not the
        connection's reactor's, which must not write to it: only wait, and its reactor
        writes it once the connection is writable (at once, as a rule)."""
        if conn.session is not None:
            conn.session.backlog = len(conn.out)  # updated again below once sent
        if not conn.out:
            return
        if write:
            try:
                sent = _send_some(conn, conn.out)
            except OSError:
                self._close(conn, time.monotonic())
                return
            del conn.out[:sent]
            if conn.session is not None:
                conn.session.backlog = len(conn.out)
        if conn.out:
            if len(conn.out) > self._max_backlog:
                log.warning("dropping connection %d: %d unsent bytes", conn.fd, len(conn.out))
                self._close(conn, time.monotonic())
                return
            if not conn.writing:
                conn.writing = True
                self._want_writable(conn, True)
        elif conn.writing:
            conn.writing = False
            self._want_writable(conn, False)

    @staticmethod
    def _interest(conn: _Conn) -> None:
        """Wait for what ``conn``'s descriptor should be waited for: readable unless paused,
        writable while output waits (on a socket: a pipe's replies go out apart)."""
        mask = (0 if conn.paused else IN) | (OUT if conn.writing and conn.wfd == conn.fd else 0)
        if mask == conn.mask:
            return
        poller = conn.reactor.poller
        if not mask:
            poller.unregister(conn.fd)
        elif conn.mask:
            poller.modify(conn.fd, write=bool(mask & OUT), read=bool(mask & IN))
        else:
            poller.register(conn.fd, write=bool(mask & OUT), read=bool(mask & IN))
        conn.mask = mask

    def _want_writable(self, conn: _Conn, on: bool) -> None:
        """Wait for the connection to take more output (or stop waiting)."""
        reactor = conn.reactor
        if conn.wfd == conn.fd:
            self._interest(conn)
        elif on:  # the reply pipe, registered on its own
            reactor.conns[conn.wfd] = conn
            reactor.poller.register(conn.wfd, write=True, read=False)
        else:
            reactor.conns.pop(conn.wfd, None)
            reactor.poller.unregister(conn.wfd)

    def _close_everything(self) -> None:
        now = time.monotonic()
        self.core.closing = True  # (the sessions end because the server does)
        for reactor in self._reactors:
            for conn in list(reactor.conns.values()):
                self._close(conn, now)
        self._workers.stop()
        for reactor in self._reactors:
            reactor.close()
        self._post_readiness.close()
        self.listener.close()
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None
        if self.core.leasing.page is not None:
            self.core.leasing.page.close()
            self.core.leasing.page = None
        if self.core.loans is not None:
            self.core.loans.close()
            self.core.loans = None
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
        if self._connection_file is not None:
            self._connection_file.remove()
            self._connection_file = None
        if self._owned_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._owned_dir)


def _send_some(conn: _Conn, data: Any) -> int:
    """Write what ``conn`` takes of ``data`` now: how many bytes (0 when it takes none).

    Raises:
        OSError: the connection is broken.
    """
    try:
        return conn.send(data)
    except (BlockingIOError, InterruptedError):
        return 0


def _peer_of(conn: _Conn) -> str:
    """Where a connection comes from, for the log: ``host:port``, or "this machine"."""
    sock = conn.sock
    if sock.family == socket.AF_UNIX:
        return "this machine"
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client gone"
    return f"{host}:{port}"


def _tune_tcp(sock: socket.socket) -> None:
    """No Nagle delay; and keepalive probes, so a client host that vanished without closing
    its connection (power loss, cable) is noticed and its locks are released (~25 s)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _make_probe(fd: int) -> Callable[[], bool]:
    """A check that the peer of ``fd`` is still there (no hang-up pending). Made once per
    connection: a lock's hand-over asks it each time (under the core lock)."""
    poller = select.poll()
    poller.register(fd, _POLL_DEAD)
    poll = poller.poll

    def alive() -> bool:
        try:
            return not poll(0)
        except OSError:
            return False

    return alive


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _is_stale_socket(path: str) -> bool:
    """Whether ``path`` is a unix socket nobody listens on (left by a crashed server)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return True
    finally:
        probe.close()
    return False
