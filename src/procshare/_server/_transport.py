"""The server transport: sockets and one event loop feeding the core; threads for user code.

Why one loop (measured on these 2-CPU machines, see DESIGN.md "Measuring"): a single epoll
loop serves many clients at about 2.5x the throughput of a thread per connection, and with a
short busy-poll after activity (``spin``) it also answers a single client faster than a blocking
thread does, because most of a round trip here is the sleeping process waking up. The loop only
moves bytes: it decodes frames with the sans-IO protocol, hands messages to the core, and sends
what the core wrote. Methods of custom registered classes (user code that may block or call back
into this server) run on worker threads and are finished by the core on the loop.

Invariants: only the loop thread touches the core; a connection is never given a session before
it has authenticated; pre-authentication connections are dropped after ``handshake_timeout``;
a connection whose unsent output exceeds ``max_backlog`` bytes is dropped rather than letting
one slow reader grow the server without bound.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._address import Address, family, private_unix_path
from .._context import register_server, unregister_server
from .._cpu import available_cpus, current_cpu
from .._errors import AuthenticationError, ProtocolError
from .._leases import LeasePage
from .._protocol import (
    DEFAULT_MAX_FRAME,
    NEED_DATA,
    Authenticated,
    ConnectionClosed,
    Flag,
    ServerProtocol,
)
from ._core import Core, Job, ServerType, Session
from ._objects import LOCK_WINDOW
from ._poller import OUT, Poller

__all__ = ["Server"]

log = logging.getLogger("procshare.server")

_POLL_DEAD: Final = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
_BUSY_WINDOW: Final = 0.002  # seconds: a client answered within this window counts as running
#: poll() sleeps whole milliseconds, rounding a shorter timeout up (epoll's resolution)
_SLEEP_RESOLUTION: Final = 0.001


def poll_timeout(deadline: float | None, now: float) -> float:
    """How long the loop may sleep in poll(): up to ``deadline`` (at most a second), in the
    whole milliseconds poll() can sleep, or 0 (busy-poll) when it is nearer than that. So a
    parked call's 0.3 ms timeout fires after ~0.3 ms, where a rounded-up sleep took 1.2 ms."""
    if deadline is None:
        return 1.0
    left = deadline - now
    if left < _SLEEP_RESOLUTION:
        return 0.0
    return min(1.0, _SLEEP_RESOLUTION * int(left / _SLEEP_RESOLUTION))


class _Conn:
    """One client socket, its protocol end, and (once authenticated) its session."""

    __slots__ = ("accepted", "fd", "out", "proto", "session", "sid", "sock", "writing")

    def __init__(self, sock: socket.socket, proto: ServerProtocol, sid: int, now: float) -> None:
        self.sid = sid
        self.sock = sock
        self.fd = sock.fileno()
        self.proto = proto
        self.session: Session | None = None
        self.out = bytearray()
        self.writing = False
        self.accepted = now


class _Workers:
    """Threads that run user code (custom methods and constructors), grown on demand."""

    def __init__(self, done: deque[Job], wake: Callable[[], None], limit: int) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done = done
        self._wake = wake
        self._limit = limit
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: set[threading.Thread] = set()

    def submit(self, job: Job) -> None:
        with self._lock:
            grow = self._idle == 0 and len(self._threads) < self._limit
            if grow:
                thread = threading.Thread(target=self._work, name="procshare-worker", daemon=True)
                self._threads.add(thread)
            else:
                self._idle -= 1
        if grow:
            thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
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


class Server:
    """A procshare server: a listening socket, a loop, and the core.

    Args:
        types: the registered typeids.
        address: canonical address to listen on, or ``None`` for a private unix socket.
        authkey: clients must prove they know it.
        rebuild: the proxy-rebuilding function tokens unpickle with (``RebuildProxy``).
        serializers: the serializers clients may choose.
        max_frame: the largest frame a client may send.
        release_delay: seconds an unreferenced object is kept before disposal.
        spin: seconds the loop keeps polling after activity before it sleeps (default 50 us
            with two or more CPUs, none with one).
        owner_pid: a process whose death (once no client is connected) stops the server.
        handshake_timeout: seconds a new connection has to authenticate.
        max_backlog: unsent bytes after which a client that does not read is dropped.
        max_workers: the most threads running user code at once.
        watch_backlog: unsent bytes after which a session's change events are dropped and
            counted (its watchers are told how many they missed once it catches up).
        leases: offer local clients the lease page (``_leases``); off: every read asks.
        lock_window: seconds a released lock with waiters stays free for whoever asks first
            (``Lock``); default ``LOCK_WINDOW`` within ``spin``; 0: strict arrival order.
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
        spin: float | None = None,
        owner_pid: int | None = None,
        handshake_timeout: float = 10.0,
        max_backlog: int = 256 * 1024 * 1024,
        max_workers: int = 256,
        watch_backlog: int = 8 * 1024 * 1024,
        leases: bool = True,
        lock_window: float | None = None,
    ) -> None:
        self._authkey = bytes(authkey)
        #: tells clients apart a restarted server at the same address (object ids restart)
        self.instance = os.urandom(8).hex()
        self._serializers = serializers
        self._max_frame = max_frame
        self._cpus = available_cpus()
        # Busy-polling only pays with a CPU to spare for the client we wait for.
        self._spin = (50e-6 if self._cpus > 1 else 0.0) if spin is None else spin
        self._handshake_timeout = handshake_timeout
        self._leases = leases
        self._max_backlog = max_backlog
        self._owned_dir: str | None = None
        if address is None:
            address = private_unix_path()
            self._owned_dir = os.path.dirname(address)
        #: the listening socket (``server.listener.close()`` as with the stdlib's server)
        self.listener = self._listen(address)
        bound = self.listener.getsockname()
        self.address: Address = bound if isinstance(address, str) else (address[0], bound[1])
        self.core = Core(
            types,
            address=self.address,
            rebuild=rebuild,
            release_delay=release_delay,
            watch_backlog=watch_backlog,
        )
        # A released lock stays free for whoever asks first (``Lock``) no longer than the
        # loop busy-polls after the release: a releaser coming back finds it still polling, and
        # a server that does not busy-poll (one CPU: the releaser cannot run meanwhile)
        # hands over at once.
        default_window = min(self._spin, LOCK_WINDOW)
        self.core.lock_window = default_window if lock_window is None else lock_window
        # The poller and the wake-up pair exist while serving (a server made by get_server()
        # and never served holds nothing but its listening socket).
        self._poller = Poller()
        self._conns: dict[int, _Conn] = {}
        self._by_session: dict[int, _Conn] = {}
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._sleeping = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._done: deque[Job] = deque()
        self._workers = _Workers(self._done, self._wake, max_workers)
        self._owner_pid = owner_pid
        self._owner_fd: int | None = None
        self._owner_gone = False
        self._recent: dict[int, float] = {}
        self._recent_checked = 0.0

    # -- ServerHook (see _context) ----------------------------------------------------------

    def on_loop_thread(self) -> bool:
        return self.core.on_loop_thread()

    def adopt(self, obj_id: int) -> None:
        self.core.adopt(obj_id)

    def adopted(self, proxy: Any) -> None:
        self.core.adopted(proxy)

    def disown(self, obj_id: int, holder: int | None) -> None:
        self.core.disown(obj_id, holder)

    def lend(self, obj_id: int, by: object) -> bool:
        return self.core.lend(obj_id, by)

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
        """Serve until ``stop()`` or a ``shutdown`` command. Must run on one thread throughout."""
        self.core.bind_loop_thread()
        # Leases need a page that clients map: same machine only.
        if self._leases and isinstance(self.address, str) and self.core.lease_page is None:
            self.core.lease_page = LeasePage.create(self.instance)
        self._poller.open()
        wake_r, self._wake_w = socket.socketpair()
        self._wake_r = wake_r
        wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        register_server(self.address, self)
        self._poller.register(self.listener.fileno())
        self._poller.register(wake_r.fileno())
        self._watch_owner()
        try:
            self._loop(wake_r)
        finally:
            unregister_server(self.address)
            self._close_everything()
            self._stopped.set()

    def stop(self) -> None:
        """Ask the loop to stop (from any thread); returns at once."""
        self._stopping.set()
        self._wake(force=True)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the loop has stopped and released its resources."""
        return self._stopped.wait(timeout)

    def _wake(self, force: bool = False) -> None:
        wake = self._wake_w
        if wake is not None and (self._sleeping or force):
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def close(self) -> None:
        """Release a server that will not serve (``serve_forever`` releases its own)."""
        if self._wake_r is None:
            self._close_everything()

    def _watch_owner(self) -> None:
        if self._owner_pid is None:
            return
        try:
            fd = os.pidfd_open(self._owner_pid)
        except (AttributeError, OSError):
            return  # polled in _check_owner instead
        self._owner_fd = fd
        self._poller.register(fd)

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self, wake_r: socket.socket) -> None:
        core = self.core
        poll = self._poller.waiter()
        conns = self._conns
        done = self._done
        jobs = core.jobs
        stopping = self._stopping.is_set
        listener_fd = self.listener.fileno()
        wake_fd = wake_r.fileno()
        owner_fd = self._owner_fd
        spin = self._spin
        monotonic = time.monotonic
        sched_yield = os.sched_yield
        with_cpu = Flag.with_cpu
        last_active = monotonic()
        last_cpu = -2
        next_housekeeping = last_active
        # how the loop found its work: by busy-polling, or woken from sleep (see "inspect")
        counters = core.stats_counters
        counters["polled"] = counters["woken"] = 0
        while not stopping():
            now = monotonic()
            if done or core.dirty or now - last_active < spin:
                timeout = 0.0
            else:
                timeout = poll_timeout(core.next_deadline(), now)
                self._sleeping = timeout > 0.0
                if done:
                    timeout = 0.0
            events = poll(timeout)
            self._sleeping = False
            if not events and timeout == 0.0 and not done:
                # Busy-polling, in a tight loop of its own until the first event or the end
                # of the window: a whole turn costs ~1 us more, which a request arriving now
                # would wait for. (A deadline falls due at most ``spin`` late.)
                until = last_active + spin
                while True:
                    sched_yield()  # if a client shares our CPU, let it run
                    events = poll(0.0)
                    if events or done or monotonic() >= until:
                        break
            if events:
                now = monotonic()
                last_active = now
                counters["polled" if timeout == 0.0 else "woken"] += 1
                # which CPU answers: clients use it to decide whether to busy-poll (Flag)
                cpu = current_cpu()
                if cpu != last_cpu:
                    last_cpu = cpu
                    core.reply_flags = with_cpu(core.reply_flags, cpu)
                for fd, mask in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        if mask & ~OUT:  # data, or a hang-up or error that recv reports
                            self._on_readable(conn, now)
                        if mask & OUT and fd in conns:
                            self._send_pending(conn)
                    elif fd == listener_fd:
                        self._accept(now)
                    elif fd == wake_fd:
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    elif fd == owner_fd:
                        self._owner_died()
                if core.dirty:
                    self._flush()  # replies first: the housekeeping below can wait a moment
            else:
                now = monotonic()  # (after a sleep too: a deadline may be due now)
            while done:
                core.finish(done.popleft(), now)
            core.tick(now)
            if now - self._recent_checked > _BUSY_WINDOW:
                self._update_busy(now)
            if now >= next_housekeeping:
                next_housekeeping = now + 0.5
                self._housekeeping(now)
            while jobs:
                self._workers.submit(jobs.popleft())
            if core.dirty or core.ended:
                self._flush()
            if core.shutdown_requested or (self._owner_gone and not core.sessions):
                self._stopping.set()
        self._flush()

    def _housekeeping(self, now: float) -> None:
        for conn in list(self._conns.values()):
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
            self._poller.unregister(self._owner_fd)
            os.close(self._owner_fd)
            self._owner_fd = None

    def _update_busy(self, now: float) -> None:
        """Hint clients not to busy-poll while more of them run than there are CPUs.

        A client counts as running if it sent something within the window and is not parked
        on the server (a process waiting for a lock sleeps: it competes for no CPU). The loop
        itself is not counted: as many spinning clients as CPUs, next to the spinning loop, do
        better than clients that sleep (they and the loop yield the CPU between polls; measured
        at 2 clients on 2 CPUs: +15-20%, and no worse with more clients or a lock's waiters).
        """
        horizon = now - _BUSY_WINDOW
        sessions = self.core.sessions
        recent = {
            sid: t
            for sid, t in self._recent.items()
            if t >= horizon and (s := sessions.get(sid)) is not None and not s.waiters
        }
        self._recent = recent
        self._recent_checked = now
        busy = len(recent) > self._cpus
        flags = self.core.reply_flags
        self.core.reply_flags = (flags | Flag.BUSY) if busy else (flags & ~Flag.BUSY)

    # -- connections --------------------------------------------------------------------------

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
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                _tune_tcp(sock)
            sid = self.core.new_session_id()
            info: dict[str, Any] = {"session": sid, "pid": os.getpid(), "instance": self.instance}
            page = self.core.lease_page
            if page is not None and sock.family == socket.AF_UNIX:
                info["leases"] = page.path
            proto = ServerProtocol(
                self._authkey,
                serializers=self._serializers,
                info=info,
                max_frame=self._max_frame,
            )
            conn = _Conn(sock, proto, sid, now)
            self._conns[conn.fd] = conn
            self._poller.register(conn.fd)
            conn.out += proto.data_to_send()
            self._send_pending(conn)

    def _on_readable(self, conn: _Conn, now: float) -> None:
        proto = conn.proto
        try:
            data = conn.sock.recv(proto.recv_size())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        proto.receive_data(data)
        session = conn.session
        core = self.core
        try:
            while True:
                event = proto.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is ConnectionClosed:
                    self._close(conn, now)
                    return
                if session is not None:
                    core.dispatch(session, event, now)
                    if session.closed or not proto.has_buffered():
                        break  # (the usual case: one request per read, nothing after it)
                elif kind is Authenticated:
                    session = self._authenticated(conn, event, now)
                else:
                    raise ProtocolError(f"unexpected event {event!r}")
            if session is not None:
                # Running (competing for CPU) unless its request is parked on the server.
                if session.waiters:
                    self._recent.pop(session.id, None)
                else:
                    self._recent[session.id] = now
        except AuthenticationError:
            conn.out += proto.data_to_send()
            self._send_pending(conn)
            self._close(conn, now)
        except ProtocolError as exc:
            log.info("dropping connection %d: %s", conn.fd, exc)
            self._close(conn, now)
        except Exception:
            # A bug of the server's met by this request: drop its connection (what it held is
            # freed, as for a client that died) and go on serving everyone else.
            log.exception("dropping connection %d: the server failed on its request", conn.fd)
            self._close(conn, now)

    def _authenticated(self, conn: _Conn, event: Authenticated, now: float) -> Session:
        session = self.core.open_session(conn.sid, conn.proto, event.info, now)
        session.probe = _make_probe(conn.fd)
        conn.session = session
        self._by_session[conn.sid] = conn
        conn.out += conn.proto.data_to_send()
        self._send_pending(conn)
        return session

    def _close(self, conn: _Conn, now: float) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        self._poller.unregister(conn.fd)
        conn.sock.close()
        if conn.session is not None:
            self._by_session.pop(conn.session.id, None)
            self._recent.pop(conn.session.id, None)
            self.core.close_session(conn.session, now)

    def _flush(self) -> None:
        core = self.core
        by_session = self._by_session
        while core.dirty:
            dirty = core.dirty
            core.dirty = []
            if core.answered:
                # Replies to the requests just served go first: their clients are running
                # (busy-polling), and a send to them costs ~1.5 us. A parked request just
                # answered (a lock handed over) wakes a sleeping process, a send of ~10 us;
                # sent first, it held up the releaser's reply, which held up the releaser's
                # CPU, which the woken holder needs (locked counter: +6% in A/B runs).
                answered = core.answered
                core.answered = set()
                dirty = [s for s in dirty if s not in answered] + [
                    s for s in dirty if s in answered
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
                if conn.out:  # already waiting for the socket: keep the order
                    conn.out += data
                    self._send_pending(conn)
                    continue
                # The usual case: nothing queued, send straight away (no buffer copy).
                try:
                    sent = conn.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
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

    def _send_pending(self, conn: _Conn) -> None:
        if conn.session is not None:
            conn.session.backlog = len(conn.out)  # updated again below once sent
        if not conn.out:
            return
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
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
                self._poller.modify(conn.fd, write=True)
        elif conn.writing:
            conn.writing = False
            self._poller.modify(conn.fd, write=False)

    def _close_everything(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            self._close(conn, now)
        self._workers.stop()
        self._poller.close()
        self.listener.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._owner_fd is not None:
            os.close(self._owner_fd)
        if self.core.lease_page is not None:
            self.core.lease_page.close()
            self.core.lease_page = None
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
        if self._owned_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._owned_dir)


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
    connection: a lock's hand-over asks it each time (only the loop's thread does)."""
    poller = select.poll()
    poller.register(fd, _POLL_DEAD)
    poll = poller.poll

    def alive() -> bool:
        try:
            return not poll(0)
        except OSError:
            return False

    return alive


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
