"""The synchronous client connection: one per (process, server), shared by the process's threads.

Requests carry ids, so threads share one connection: each sends its frame under a write lock and
waits for the reply with its id. Whoever waits first reads the socket for everybody (the
leader/follower pattern); when the leader's own reply arrives it hands the reading over to
another waiting thread. A blocked call (``lock.acquire()``) in one thread therefore never holds
up the calls of another: the server answers them as they complete.

Fork safety: a channel belongs to the process that opened it (``pid``). A child process never
touches its parent's socket: ``get_channel`` opens a new connection in the child (the registry is
reset after fork), as redis-py's pool does.

References: proxies tell the server which objects this process holds by queueing ``Retain`` and
``Release`` notes in the :class:`RefQueue` of the server's address; they are sent in front of the
next request, so a proxy's birth costs no round trip. A proxy's death sends its ``Release`` at
once when the connection is free (an idle process must not keep objects alive), still without
waiting for a reply.

Busy-polling: most of a round trip here is the sleep and wake-up of the waiting process. The
reader first polls the socket without sleeping for a short budget; it does not while the server
reports it is busy (more running clients than CPUs), where spinning would only steal
the server's CPU, and not while the server last answered from this thread's own CPU. That last
rule is what keeps spinning fast: a process forked next to the server starts on its CPU, and
two processes that keep running are never migrated by Linux (they stay "cache-hot"), so the
pair would share one CPU for good. A client that sleeps through one reply instead is woken on
the idle CPU, and from then on both spin apart. (Making the server stop spinning too was
measured worse: when both sleep, the scheduler wakes them next to each other.) Sleeping is not
enough when no CPU is idle: with two clients on two CPUs, one of them kept sharing the server's
CPU and sleeping, and which of the two placements a run fell into decided its throughput
(80k or 110k calls a second). So a client on the server's CPU first *steps aside*: it narrows
its thread's affinity mask to the other CPUs, which moves it at once, and gives the mask back
right away, which lets it stay where it landed (at most every 10 ms; nothing is pinned).

The budget adapts per kind of call (plain calls, calls that may block): a slow reply halves it
down to a short probe, so slow or blocking operations waste at most the probe, and a fast reply
(however it was waited for) restores it: spinning is never switched off for good.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing import util
from typing import Any, Final

from .._address import Address, describe, family, is_redis_url
from .._context import incoming
from .._errors import (
    AuthenticationError,
    ConnectionLost,
    ProcshareError,
    ProtocolError,
    ServerUnreachable,
    connection_lost,
)
from .._leases import ALONG, BOUND
from .._protocol import (
    NEED_DATA,
    RECV_SIZE,
    Cancel,
    ClientProtocol,
    ConnectionClosed,
    Control,
    Failure,
    Goodbye,
    Op,
    Push,
    Ready,
    Release,
    Result,
    Retain,
    Unwatch,
    Watch,
    pack,
)
from .._sched import (
    SLEPT_AFTER,
    THINK_AFTER,
    THINK_SHARE,
    Stepper,
    configured_spin,
    current_cpu,
)
from ._backend import Backend
from ._leases import LeaseBook, book_for
from ._loans import LoanBook

__all__ = ["PID_CELL", "Channel", "RefQueue", "current_pid", "get_channel", "refqueue_for"]

_MAX_SPIN: Final = 100e-6
#: seconds between two looks for a failed post's news, at most (``Channel.post``)
_NEWS_EVERY: Final = 0.001
#: a write this short is never cut short (a pipe's PIPE_BUF; a socket's send of it is one)
_ATOMIC_WRITE: Final = 4096
#: what says that posts were written to the post pipe before the frames after it
_DRAIN_FRAME: Final = pack(Op.DRAIN, 0, 0)
_write = os.write
#: posts made between two requests from which on they go into the post pipe (``post``)
_RUN: Final = 8
_PROBE: Final = 4e-6  # the least a budget shrinks to: a miss costs this much CPU at most

#: ``[this process's pid]``, kept up to date across fork: the hot paths read ``PID_CELL[0]``
PID_CELL = [os.getpid()]
_yield = os.sched_yield
_clock = time.perf_counter
_monotonic = time.monotonic  # CLOCK_MONOTONIC: the clock of a post's stamp, every process's
_cpu_clock = time.process_time


def current_pid() -> int:
    """This process's pid (kept up to date across fork without a system call per use)."""
    return PID_CELL[0]


#: address -> the ``ssl.SSLContext`` this process's connections to it use (``use_tls``)
_TLS: dict[Address, Any] = {}


def use_tls(address: Address, context: Any) -> None:
    """Connect to the TCP server at ``address`` with TLS, through ``context`` (a client
    ``ssl.SSLContext``): every connection of this process to it (proxies, push, cache); a
    forked child inherits it."""
    _TLS[address] = context


TIMEOUT_ENV: Final = "PROCSHARE_TIMEOUT"


#: ``off`` (or ``0``, ``no``, ``false``): this process posts nothing (``Channel.post``)
POSTS_ENV: Final = "PROCSHARE_POSTS"
#: ``off`` (or ``0``, ``no``, ``false``): this process borrows no lock (``.._loans``)
LOANS_ENV: Final = "PROCSHARE_LOANS"


def _switched_on(name: str) -> bool:
    """Whether the switch ``$name`` is on (default: yes): ``$PROCSHARE_POSTS``,
    ``$PROCSHARE_LOANS``.

    Raises:
        ValueError: a setting that is neither on nor off.
    """
    text = os.environ.get(name, "").strip().lower()
    if text in ("", "on", "1", "yes", "true", "auto"):
        return True
    if text in ("off", "0", "no", "false"):
        return False
    raise ValueError(f"${name} must be on or off, not {text!r}")


def _env_timeout() -> float | None:
    """``$PROCSHARE_TIMEOUT``: the default call timeout of this process's connections."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"${TIMEOUT_ENV} must be a number of seconds, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"${TIMEOUT_ENV} must be positive, not {text!r}")
    return value


class RefQueue(deque[tuple[bool, int]]):
    """Reference notes for one server address, waiting for the next request to carry them.

    A deque of ``(retain?, obj_id)``: every request asks whether it is empty, which a deque
    answers without a Python-level call.
    """

    __slots__ = ()

    def retain(self, obj_id: int) -> None:
        self.append((True, obj_id))

    def release(self, obj_id: int) -> None:
        self.append((False, obj_id))

    def drain(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Take every note: (ids to retain, ids to release)."""
        retain: list[int] = []
        release: list[int] = []
        while self:
            try:
                keep, obj_id = self.popleft()
            except IndexError:  # another thread drained it first
                break
            (retain if keep else release).append(obj_id)
        return tuple(retain), tuple(release)


class _Slot:
    """Where the reply to a request lands while another thread is the reader.

    Only requests made while some other thread reads get one: a thread alone on the channel
    reads its own reply directly (the common case costs no slot, no lock of its own).
    """

    __slots__ = ("blocking", "done", "error", "gate", "sleeping", "value")

    def __init__(self, blocking: bool = False) -> None:
        self.blocking = blocking
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.sleeping = False
        self.gate: threading.Lock | None = None  # made (held) when its thread first sleeps


class Channel:
    """An authenticated connection to one server.

    Args:
        address: canonical server address.
        authkey: the shared secret.
        serializer: what to ask the server for.
        connect_timeout: seconds for connecting and the handshake.
        spin: longest busy-poll before a blocking read (0 disables it).
        on_push: called with ``(sub_id, payload)`` for a server push no subscription claims.
    """

    loans: LoanBook | None = None  # (until the handshake: a failing one breaks it first)

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        *,
        serializer: str = "pickle",
        connect_timeout: float = 10.0,
        spin: float | None = None,
        on_push: Callable[[int, Any], None] | None = None,
    ) -> None:
        self.address = address
        self.authkey = bytes(authkey)
        self.pid = current_pid()
        self.refs = refqueue_for(address)
        self.on_push = on_push
        #: seconds a call that does not wait on the server may go unanswered before the
        #: connection is given up (``ServerUnreachable``); None: wait for ever
        self._call_timeout: float | None = _env_timeout()
        #: handlers of this connection's subscriptions, by subscription id (see ``subscribe``)
        self._push_handlers: dict[int, Callable[[Any], None]] = {}
        self._spin_max = min(configured_spin(spin), _MAX_SPIN)
        # adaptive budgets: [plain calls, calls that may block on the server]
        self._budget = [self._spin_max, self._spin_max]
        self._stepper = Stepper()
        self._returned = 0.0  # when the last call returned (perf_counter)
        self._cpu_at_call = 0.0  # the process's CPU time as the last call started
        self._called = 0.0  # when the last call started (perf_counter)
        #: seconds spent busy-polling for replies since then: CPU time that is no computing
        self._spun = 0.0
        self._slept = True  # whether the process slept between its last call and this one
        local = family(address) == socket.AF_UNIX
        #: whether the server's CPU (sent with its replies) is ours to compare: unix sockets
        self._local = local
        #: what the server sent with its welcome: (write, read), and where it may post, the
        #: post pipe (``_server/_post_pipes``)
        self._pipes: list[int] = []
        #: where posts are written (-1: with the requests), and whether some were since the
        #: last frame written with the requests (that frame then says so first: ``_ahead``)
        self._post_fd = -1
        self._posts_unread = False
        #: (object id, method) posted with the requests all the same (``ALONG``)
        self._with_requests: set[tuple[int, str]] = set()
        #: posts made since the last request, and whether they came in runs before it (then
        #: they go into the post pipe; a post or two before each request go with the
        #: requests, where a ``Drain`` would cost the server more than the post: ``post``)
        self._posts_in_run = 0
        self._runs = True
        #: posts written with the requests, and how many of them a reply has shown applied:
        #: posts go into the post pipe again only once all are (a post there may be applied
        #: before one written earlier with the requests and not read yet)
        self._along_written = 0
        self._along_confirmed = 0
        self._proto = ClientProtocol(
            self.authkey,
            serializer=serializer,
            # on the same machine, ask to talk through a pair of pipes (see ``_wire``)
            info={"pid": self.pid, "name": _process_name(), "pipes": local},
        )
        self._wlock = threading.Lock()
        self._mutex = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self._reading = False
        self._ids = itertools.count(1)
        self._broken: BaseException | None = None
        #: the process that may use this connection: its opener, until it breaks (-1); one
        #: comparison tells a proxy whether it can call through it
        self.usable_pid = self.pid
        self.server_info: dict[str, Any] = {}
        self._sock: socket.socket | None = self._connect(connect_timeout)
        self._wire()
        server_spin = self.server_info.get("spin")
        #: how long the server spins after its last activity (``_sched``)
        self._window = float(server_spin) if isinstance(server_spin, (int, float)) else 0.0
        if self._window < self._spin_max:
            self._spin_max = self._window  # the server's setting binds its clients too
            self._budget = [self._spin_max, self._spin_max]
        # Busy-polling probes readiness with poll(0): a miss costs 0.4 us, where a
        # non-blocking recv that fails costs 1.3 us (the BlockingIOError it raises).
        probe = select.poll()
        probe.register(self._rfd, select.POLLIN)
        self._ready = probe.poll
        #: replies come through a pipe and no call timeout watches them: a reader that is
        #: not to spin reads at once (``_roundtrip``)
        self._plain_reads = self._sock is None and self._call_timeout is None
        #: the server is on this machine and talks through pipes: calls may be posted
        #: (``post``), unless it or this process said not to
        self.can_post = (
            self._sock is None
            and self.server_info.get("posts", True) is not False
            and _switched_on(POSTS_ENV)
        )
        #: (object id, method) -> whether its calls may be posted here (``Call.posting``)
        self.registered: dict[tuple[int, str], bool | int] = {}
        #: object id -> the lock its posts are bound to (posted only while this process holds
        #: it: ``_holds``; 0: a lock not known here, nothing is posted)
        self.bound: dict[int, int] = {}
        #: the error of a post that failed, raised by the next request (``post``)
        self._posted_failure: BaseException | None = None
        self._news_at = 0.0  # (perf_counter) when a post looks for a failure again
        self._more_failures = 0  # posts that failed after the one kept
        #: values read before, answered again while unchanged (``_leases``): same machine
        #: only, so unix sockets only
        self.leases: LeaseBook | None = book_for(
            self._rfd if local else -1, self.server_info, lambda: self._broken is not None
        )
        #: the locks lent to it (``.._loans``): where leases are, if the server lends and
        #: this process borrows
        self.loans: LoanBook | None = (
            LoanBook.open(self.server_info, self.leases.vouched)
            if self.leases is not None and _switched_on(LOANS_ENV)
            else None
        )

    def _wire(self) -> None:
        """Choose what requests and replies travel through: the socket, or (same machine)
        the two pipes the server sent with its welcome, and close the socket then. A pipe
        round trip costs less than a unix socket's (1.4 us of 4 on one CPU), and a reader
        asleep on a pipe is woken only by data: one asleep on a socket is also woken each
        time its peer reads what it sent."""
        sock = self._sock
        if sock is None:
            return
        if len(self._pipes) in (2, 3):
            self._wfd, self._rfd = self._pipes[:2]
            if len(self._pipes) == 3:
                self._post_fd = self._pipes[2]
                room = select.poll()
                room.register(self._post_fd, select.POLLOUT)
                self._post_room: Callable[[float | None], Any] = room.poll
            self._sock = None
            sock.close()
            wfd = self._wfd
            write = os.write

            def write_all(data: bytes | bytearray | memoryview) -> None:
                sent = write(wfd, data)  # the usual case: all of it at once
                if sent < len(data):
                    view = memoryview(data)[sent:]
                    while view:
                        view = view[write(wfd, view) :]

            self._write_all: Callable[[Any], None] = write_all
            self._read_raw: Callable[[int], bytes] = functools.partial(os.read, self._rfd)
        else:
            for fd in self._pipes:  # (sent unasked: not ours to keep)
                os.close(fd)
            self._rfd = self._wfd = sock.fileno()
            self._write_all = sock.sendall
            self._read_raw = sock.recv
            if hasattr(sock, "pending"):  # TLS: read whole records, none left inside
                recv, pending = sock.recv, sock.pending

                def read_tls(size: int) -> bytes:
                    data = recv(max(size, 16384))
                    while pending():
                        data += recv(pending())
                    return data

                self._read_raw = read_tls
        self._pipes = []

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.socket(family(self.address), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(self.address)
            except OSError as exc:
                raise connection_lost(
                    f"cannot connect to the procshare server at {describe(self.address)}", exc
                ) from exc
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tls = _TLS.get(self.address)
                if tls is not None:
                    sock = self._start_tls(sock, tls)
            self._handshake(sock)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    def _start_tls(self, sock: socket.socket, context: Any) -> socket.socket:
        """TLS over the connected TCP socket (``use_tls``): the server's certificate checked."""
        import ssl

        host = str(self.address[0])
        try:
            return context.wrap_socket(sock, server_hostname=host)  # type: ignore[no-any-return]
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(
                f"the TLS certificate of {describe(self.address)} is not trusted: "
                f"{exc.verify_message}"
            ) from None
        except (ssl.SSLError, ConnectionResetError, EOFError) as exc:
            raise ConnectionLost(
                f"TLS handshake with {describe(self.address)} failed ({exc}): is it a TLS "
                "server? (tcp:// for one without TLS)"
            ) from None

    def _handshake(self, sock: socket.socket) -> None:
        proto = self._proto
        while True:
            event = proto.next_event()
            out = proto.data_to_send()
            if out:
                sock.sendall(out)
            if type(event) is Ready:
                self.server_info = event.info
                return
            if event is not NEED_DATA:
                raise ProtocolError(f"unexpected event during handshake: {event!r}")
            try:
                if self._local:
                    data, fds, _flags, _addr = socket.recv_fds(sock, RECV_SIZE, 3)
                    self._pipes.extend(fds)
                else:
                    data = sock.recv(RECV_SIZE)
            except TimeoutError:
                raise ServerUnreachable(
                    f"no handshake from {describe(self.address)} (stopped, not a procshare "
                    "server, or one that wants TLS: tls://?)"
                ) from None
            except OSError as exc:
                where = describe(self.address)
                raise ConnectionLost(f"connection to {where} broke: {exc}") from exc
            if not data:
                raise AuthenticationError(
                    f"the server at {describe(self.address)} closed the connection during the "
                    "handshake (wrong authkey or not a procshare server)"
                )
            proto.receive_data(data)

    @property
    def call_timeout(self) -> float | None:
        """Seconds a call that does not wait on the server may go unanswered before the
        connection is given up (``ServerUnreachable``); ``None``: wait for ever."""
        return self._call_timeout

    @call_timeout.setter
    def call_timeout(self, value: float | None) -> None:
        self._call_timeout = value
        self._plain_reads = self._sock is None and value is None

    # -- requests -----------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        """Whether the connection is unusable (the server went away)."""
        return self._broken is not None

    def call(
        self,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        owner: int = 0,
        blocking: bool = False,
        versioned: bool = False,
        wait: float | None = None,
        posting: bool = False,
    ) -> Any:
        """Call ``method`` on object ``obj_id`` and return its result (or raise its error).

        ``blocking`` hints that the call may wait on the server (a lock, a queue): its
        busy-poll budget adapts separately from that of quick calls, and ``wait`` is how long
        it may wait there (``None``: for ever), which ``call_timeout`` comes on top of. With
        ``versioned`` the result is ``(result, version of the object right after the call)``.
        With ``posting`` (where ``can_post``) it asks to post this method's next calls on the
        object (``post``); ``registered`` keeps the answer.
        """
        if self._posted_failure is not None:
            self._raise_posted_failure()
        rid = next(self._ids) & 0xFFFFFFFF  # (_take_id, inlined: every call passes here)
        if not rid:
            rid = next(self._ids) & 0xFFFFFFFF
        thinks = self._since_last_call()
        frame = self._proto.encode_call(
            rid, obj_id, method, args, kwargs, owner, versioned, thinks, posting
        )
        try:
            result = self._roundtrip(rid, frame, blocking, wait)
        finally:
            self._returned = _clock()
        if posting:
            # (a call parked on the server is answered plainly: not registered)
            answer = result[1] if type(result) is tuple and len(result) == 2 else None
            bound = type(answer) is str and answer == BOUND
            along = type(answer) is str and answer == ALONG
            registered = answer is True or bound or along
            with self._mutex:  # (``post`` reads these under it)
                self.registered[obj_id, method] = registered
                if along:
                    self._with_requests.add((obj_id, method))
                if bound:
                    self.bound[obj_id] = self._held_lock(owner)
                else:
                    self.bound.pop(obj_id, None)
            return result[0] if registered else result
        return result

    def post(self, obj_id: int, method: str, args: tuple[Any, ...] = (), owner: int = 0) -> bool:
        """Send a call nobody waits for the answer of (``Post``): one registered for this
        object (``registered``, ``Call.posting``), which cannot fail, and which nobody waits
        for either (a dict's item set: not a lock's release, whose waiter would wait until
        this process sleeps or its time slice ends for the server to run). Whether it was sent:
        not where the server is on another machine, the arguments are not plain data, or a
        reply is awaited on this connection (a post then could wait behind a request decoded
        aside): then make the call. It is stamped as it is written (``_server/_core``).

        A post that failed (rare: a full ``max_memory``, an object deleted meanwhile, a lock
        another process released) is raised by a later request, or post: posts look for such
        news at most every ``_NEWS_EVERY`` seconds, requests read it with their answer.

        Raises:
            ConnectionLost: the connection is broken.
            SerializationError: an argument cannot be serialized (nothing is sent).
            Exception: what an earlier post raised on the server.
        """
        if self._posted_failure is not None:
            self._raise_posted_failure()
        if not self.can_post:
            return False
        if self._broken is not None:
            raise ConnectionLost(str(self._broken)) from self._broken
        if (
            self._posts_in_run >= _RUN
            and self._along_written != self._along_confirmed
            and not self._runs
            and self._pipe_takes(obj_id, method)
        ):
            # A run of posts begins, and some went along with the requests before it, maybe
            # unread yet: a ping's answer shows them applied, so that this post and the next
            # may go into the post pipe (one there may be applied before one unread there).
            self.control("ping")
        lost: BaseException | None = None
        cut = sent = False
        try:
            with self._mutex:  # (held while it is written: no request starts waiting meanwhile)
                if (
                    self._reading
                    or self._slots
                    or self.registered.get((obj_id, method)) is not True
                ):
                    return False  # (not registered: ``withdraw`` clears it under this mutex)
                lock = self.bound.get(obj_id)
                if lock is not None and not self._holds(lock, owner):
                    # Bound to a lock this process does not hold: a post now could reach
                    # the server after that lock's next grant leased the object (``_leasing``).
                    # (Checked under the mutex: a release from another thread goes after.)
                    return False
                now = _clock()
                if now >= self._news_at:
                    self._news_at = now + _NEWS_EVERY
                    if self._ready(0):
                        lost = self._read_news()
                        if lost is not None or self._posted_failure is not None:
                            return False  # (raised below, outside the locks)
                with self._wlock:
                    frame = self._proto.encode_post(obj_id, method, args, owner, _monotonic())
                    if frame is None:
                        return False
                    write: Callable[[bytes], Any]
                    self._posts_in_run += 1
                    if (
                        (self._runs or self._posts_in_run > _RUN)
                        and self._along_written == self._along_confirmed
                        and self._pipe_takes(obj_id, method)
                    ):
                        self._runs = True
                        self._posts_unread = True
                        write = self._write_post
                    else:
                        # With the requests: a post bound to a lock, whose release follows
                        # at once and brings it along, sparing the server a wake-up; those
                        # the server said to send along (``ALONG``); those of a process that
                        # posts a few times between requests (``_runs``), where the request
                        # brings them along; all where there is no post pipe.
                        if self.refs or self._posts_unread:
                            frame = self._ahead() + frame
                        self._along_written += 1
                        write = self._write_all
                    try:
                        write(frame)
                        sent = True
                    except OSError as exc:
                        lost = exc
                    except BaseException:
                        cut = len(frame) > _ATOMIC_WRITE  # (the stream is lost)
                        raise
        finally:
            if cut:
                self._break(ConnectionLost("a post was interrupted as it was sent"))
            if lost is not None:
                if isinstance(lost, OSError):
                    raise self._lost_on_send(lost) from lost
                self._break(lost)
                raise lost
            if not sent and self._posted_failure is not None:
                self._raise_posted_failure()
        return True

    def _pipe_takes(self, obj_id: int, method: str) -> bool:
        """Whether ``method``'s posts to ``obj_id`` may go into the post pipe: there is one,
        and they are neither bound to a lock nor sent along with the requests (``ALONG``)."""
        return (
            self._post_fd >= 0
            and obj_id not in self.bound
            and (obj_id, method) not in self._with_requests
        )

    def _write_post(self, frame: bytes) -> None:
        """Write ``frame`` into the post pipe (under ``_wlock``): at once where it has room
        (the usual case), else as the server makes room (it reads a pipe that holds posts
        within ``POST_BATCH_DELAY``, at once one that fills: ``_server/_post_pipes``)."""
        fd = self._post_fd
        try:
            sent = _write(fd, frame)
        except BlockingIOError:
            sent = 0
        if sent == len(frame):
            return
        view = memoryview(frame)[sent:]
        while view:
            self._post_room(None)
            with contextlib.suppress(BlockingIOError):  # (no room after all: wait again)
                view = view[_write(fd, view) :]

    def _holds(self, lock: int, owner: int) -> bool:
        """Whether this process holds ``lock`` by the server's grant, or this thread
        (``owner``) holds it lent here (its posts are written before its release then).
        Never a lock not known here (0: ``_held_lock``), which ``holding`` 0 would match."""
        if not lock:
            return False
        leases, loans = self.leases, self.loans
        return (leases is not None and leases.holding == lock) or (
            loans is not None and loans.holds(lock, owner)
        )

    def _held_lock(self, owner: int) -> int:
        """The one lock this process holds (``_holds``), as the server saw when it bound a
        registration to it (``BOUND``); 0: not known here (nothing is posted then)."""
        leases, loans = self.leases, self.loans
        if leases is not None and leases.holding:
            return leases.holding
        lent = [] if loans is None else loans.held_by(owner)
        return lent[0] if len(lent) == 1 else 0

    def withdraw(self, obj_id: int) -> None:
        """Post to object ``obj_id`` no more: its calls are made plainly from now on (until
        this process asks again), and the server stops counting it among the object's
        posters, so that the object may be leased again. (Cleared under the mutex ``post``
        checks under: a post another thread makes meanwhile is sent before the ``unpost``,
        or not at all.)"""
        with self._mutex:
            registered = self.registered
            for key in [k for k, v in registered.items() if k[0] == obj_id and v is True]:
                registered[key] = 0
            self.bound.pop(obj_id, None)
        self.control("unpost", obj_id)

    def _read_news(self) -> ConnectionLost | None:
        """Read what came while nobody waited for an answer (the mutex held, no request in
        flight): posts' failures (kept), or the end of the connection (returned, to break
        it with once the mutex is let go)."""
        try:
            data = self._read_raw(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        proto = self._proto
        proto.receive_data(data)
        while True:
            try:
                event = proto.next_event()
            except (ProtocolError, AuthenticationError) as exc:
                return ConnectionLost(f"protocol error from the server: {exc}")
            if event is NEED_DATA:
                return None
            if type(event) is Failure and not event.req_id:
                self._deliver(0, None, event.error)
            elif type(event) is ConnectionClosed:
                where = describe(self.address)
                return ConnectionLost(f"the procshare server at {where} went away")
            elif type(event) is Push:
                self._dispatch_push(event.sub_id, event.payload)

    def _raise_posted_failure(self) -> None:
        """Raise the failure of an earlier post, as itself (the type the call would have
        raised), saying that it comes from a post."""
        error, self._posted_failure = self._posted_failure, None
        if error is None:
            return
        # The posts made after it may have failed too: a round trip gathers what they got,
        # to be told now, once, rather than each by a later call.
        try:
            rid = self._take_id()
            self._roundtrip(rid, self._proto.send(Control(rid, "ping", ())))
        except (ProcshareError, OSError):
            pass
        more = self._more_failures + (self._posted_failure is not None)
        self._more_failures = 0
        self._posted_failure = None
        args = error.args
        if type(error).__str__ is BaseException.__str__ and len(args) == 1:
            also = f"; {more} later ones failed too" if more else ""
            error.args = (
                f"{args[0]} (raised by a call this process posted earlier: sent without "
                f"waiting for its answer{also})",
            )
        try:
            raise error
        finally:
            del error

    def request(self, msg: Any, blocking: bool = False, wait: float | None = None) -> Any:
        """Send a request message (its ``req_id`` is replaced) and return its result;
        ``blocking`` and ``wait`` as for ``call``."""
        if self._posted_failure is not None:
            self._raise_posted_failure()
        rid = self._take_id()
        frame = self._proto.send(msg._replace(req_id=rid), self._since_last_call())
        try:
            return self._roundtrip(rid, frame, blocking, wait)
        finally:
            self._returned = _clock()

    def _since_last_call(self) -> bool:
        """What this process did since its last call returned (``_sched``): computed (it
        holds a CPU between calls: the server tells its other clients, which leave the CPUs
        to it, ``Flag.THINKS``; returned), or slept (its CPU may have gone to sleep too:
        ``_recv``). CPU time tells them apart from the wall time spent waiting for a CPU.
        (The CPU time is read once a call, as it starts: the gap then also counts the last
        call's own few microseconds, far below what tells computing or sleeping apart; and
        the CPU a wake-up costs, which ``THINK_SHARE`` tells from computing.)"""
        now = _clock()
        wall_gap = now - self._called
        if wall_gap < THINK_AFTER:
            # Called back to back: no time to compute in, so no need to read the CPU time
            # (a system call, ~0.7 us here). The next gap is measured from the same start.
            self._slept = False
            return False
        cpu = _cpu_clock()
        # (a spin waiting for the last reply used the CPU too, but that is not computing: a
        # consumer that spun in its blocked get before sleeping would count as one)
        cpu_gap = cpu - self._cpu_at_call - self._spun
        self._cpu_at_call = cpu
        self._called = now
        self._spun = 0.0
        self._slept = now - self._returned - cpu_gap > SLEPT_AFTER
        return cpu_gap > THINK_AFTER and cpu_gap > wall_gap * THINK_SHARE

    def request_many(self, msgs: list[Any]) -> list[Any]:
        """Send several requests at once, then wait for all; their results, in order.

        Raises the first request's error if one failed as a whole (a batch's calls report
        their own errors inside its result).
        """
        if self._broken is not None:
            raise ConnectionLost(str(self._broken)) from self._broken
        if self._posted_failure is not None:
            self._raise_posted_failure()
        rids = [self._take_id() for _ in msgs]
        frames = b"".join(
            self._proto.send(m._replace(req_id=r)) for m, r in zip(msgs, rids, strict=True)
        )
        slots = [_Slot() for _ in msgs]
        with self._mutex:  # every change of _slots holds it: the reader iterates them
            self._slots.update(zip(rids, slots, strict=True))
        try:
            with self._wlock:
                if self.refs or self._posts_unread:
                    frames = self._ahead() + frames
                self._sendall(frames)
        except BaseException:
            with self._mutex:
                for rid in rids:
                    self._slots.pop(rid, None)
            raise
        results = []
        for rid, slot in zip(rids, slots, strict=True):
            value, error = self._await(rid, slot)
            if error is not None:
                try:
                    raise error
                finally:
                    del error
            results.append(value)
        return results

    def control(self, command: str, *args: Any) -> Any:
        """Run a server-level command (``ping``, ``stats``, ``shutdown``, ...)."""
        return self.request(Control(0, command, args))

    def flush_refs(self) -> None:
        """Send pending reference notes now, without waiting for a reply."""
        if self.refs and self._broken is None:
            with self._wlock:
                if self.refs:
                    self._sendall(self._ahead())

    def release_soon(self, obj_id: int) -> None:
        """Drop one reference to ``obj_id``: now if the connection is free, else with the next
        request. Safe from a finalizer: it never blocks, even if this very thread is sending."""
        self.refs.release(obj_id)
        if self._broken is not None or self.pid != current_pid():
            return
        if self._wlock.acquire(blocking=False):
            try:
                if self.refs:
                    self._write_all(self._ahead())
            except OSError:
                pass  # the reader will find the connection broken
            finally:
                self._wlock.release()

    def _take_id(self) -> int:
        rid = next(self._ids) & 0xFFFFFFFF  # next() on a count is atomic: no lock needed
        return rid or next(self._ids) & 0xFFFFFFFF  # 0 means "no reply wanted"

    def _ahead(self) -> bytes:
        """What goes before the next frame written with the requests (under ``_wlock``): a
        ``Drain`` if posts were written to the post pipe since the last one (the server then
        applies them first), and the pending reference notes."""
        out = b""
        if self._posts_unread:
            self._posts_unread = False
            out = _DRAIN_FRAME
        return out + self._notes() if self.refs else out

    def _notes(self) -> bytes:
        retain, release = self.refs.drain()
        out = b""
        if retain:
            out += self._proto.send(Retain(retain))
        if release:
            out += self._proto.send(Release(release))
        return out

    def _roundtrip(
        self, rid: int, frame: bytes, blocking: bool = False, wait: float | None = None
    ) -> Any:
        if self._broken is not None:
            raise ConnectionLost(str(self._broken)) from self._broken
        mutex = self._mutex
        mutex.acquire()  # (not ``with``: every call passes here)
        lead = not self._reading
        if lead:
            self._reading = True  # alone: we read our own reply, no slot needed
            slot = None
        else:
            slot = _Slot(blocking)
            self._slots[rid] = slot
        mutex.release()
        try:
            with self._wlock:
                if self.refs or self._posts_unread:
                    frame = self._ahead() + frame
                along = self._along_written  # (this request's reply shows them applied)
                self._runs = self._posts_in_run >= _RUN
                self._posts_in_run = 0
                try:
                    self._write_all(frame)
                except OSError as exc:
                    raise self._lost_on_send(exc) from exc
                except BaseException:
                    if len(frame) > _ATOMIC_WRITE:  # (may be cut short: the stream is lost)
                        self._break(ConnectionLost("a request was interrupted as it was sent"))
                    raise
        except BaseException:
            if slot is None:
                self._stop_reading()
            else:
                with mutex:
                    self._slots.pop(rid, None)
            raise
        try:
            if slot is None:
                try:
                    proto = self._proto
                    if self._plain_reads and not proto.server_spin:
                        # The usual call on a busy machine (or with spinning off): one read
                        # of the reply pipe, one frame, ours (``_read_for`` written out).
                        if self._budget[blocking] and not proto.server_crowded:
                            self._step_toward(proto.server_cpu)
                        incoming.channel = self
                        try:
                            data = self._read_raw(RECV_SIZE)
                            event = proto.take_result(data, rid)
                        except OSError:  # (the reader finds out what happened)
                            data = b""
                            event = NEED_DATA
                        finally:
                            incoming.channel = None
                        if event is NEED_DATA:
                            value, error = self._read_for(rid, blocking, False, wait, data)
                        elif type(event) is Result:
                            value, error = event.value, None
                        else:
                            value, error = None, event.error
                    else:
                        value, error = self._read_for(rid, blocking, slotted=False, wait=wait)
                except BaseException:
                    if blocking:
                        # Interrupted (a signal handler raised) before the answer came: it
                        # lands in a slot now, whoever reads next (``_abandon``).
                        slot = _Slot(blocking)
                        with mutex:
                            self._slots[rid] = slot
                    raise
                finally:
                    mutex.acquire()  # _stop_reading, inlined for the usual case: nobody waits
                    self._reading = False
                    if self._slots:
                        self._wake_next_reader()
                    mutex.release()
            else:
                value, error = self._await(rid, slot)
        except BaseException:
            if blocking and slot is not None and self._broken is None:
                self._abandon(rid, slot)
            raise
        # (a race with another thread's reply may only lower it: fewer posts into the pipe)
        self._along_confirmed = max(self._along_confirmed, along)
        if error is not None:
            try:
                raise error
            finally:
                del error  # no traceback -> frame -> exception cycle (bpo-106558 in the stdlib)
        return value

    def _abandon(self, rid: int, slot: _Slot) -> None:
        """A blocking call was interrupted while its request waited on the server: withdraw
        it (``Cancel``), and wait for its final answer: ``CallWithdrawn``, or what crossed
        the cancel, which the server takes back (a queue item to the front, a lock's grant
        released), or for a Condition wait, its lock once held again (as ``threading``'s
        wait ends). Without it a lock would be granted to the abandoned request, and the
        next queue item handed to it and lost. Interrupted again, it stops waiting (the
        server still takes back what crossed)."""
        try:
            with self._wlock:
                self._write_all(self._proto.send(Cancel(rid)))
        except OSError:
            return  # the connection is gone: the server frees all it held for us
        self._await(rid, slot)

    def _sendall(self, data: bytes) -> None:
        try:
            self._write_all(data)
        except OSError as exc:
            raise self._lost_on_send(exc) from exc

    def _lost_on_send(self, exc: OSError) -> ConnectionLost:
        """Break the channel after a failed send; the error to raise."""
        self._break(ConnectionLost(f"the procshare server went away: {exc}"))
        return ConnectionLost(f"the procshare server went away: {exc}")

    def _await(self, rid: int, slot: _Slot) -> tuple[Any, BaseException | None]:
        """Wait for ``slot``'s reply while another thread reads; read ourselves if it stops."""
        mutex = self._mutex
        while True:
            with mutex:
                if slot.done:
                    return slot.value, slot.error
                if self._reading:
                    if slot.gate is None:
                        slot.gate = threading.Lock()
                        slot.gate.acquire()
                    slot.sleeping = True
                    gate = slot.gate
                    lead = False
                else:
                    self._reading = True
                    lead = True
            if not lead:
                gate.acquire()  # woken: our reply is in, or it is our turn to read
                continue
            try:
                return self._read_for(rid, slot.blocking, slotted=True)
            finally:
                self._stop_reading()

    def _stop_reading(self) -> None:
        """Give up the reader's role, handing it to a thread still waiting, if any."""
        with self._mutex:
            self._reading = False
            self._wake_next_reader()

    def _wake_next_reader(self) -> None:
        """Wake one thread waiting for its reply, to read in our place (mutex held)."""
        for other in self._slots.values():
            if other.sleeping and other.gate is not None:
                other.sleeping = False
                other.gate.release()
                break

    def _read_for(
        self,
        rid: int,
        blocking: bool,
        slotted: bool,
        wait: float | None = None,
        data: bytes | None = None,
    ) -> tuple[Any, BaseException | None]:
        """As the reader: read until the reply to ``rid`` (0: until the connection ends),
        delivering other threads' replies and pushes on the way. Returns (value, error).
        ``slotted``: the request has a slot (it waited as a follower before reading);
        ``data``: what was read already (and is not the reply alone)."""
        proto = self._proto
        timeout = self.call_timeout
        # The longest silence before giving up: none for pushes read for good (rid 0) or a
        # call that may wait for ever; a waiting call's own wait comes first.
        if timeout is None or not rid or (blocking and wait is None):
            limit = None
        else:
            limit = timeout + wait if blocking and wait is not None else timeout
        incoming.channel = self
        try:
            if data is None:
                data = self._recv(blocking or not rid, limit)
            if rid:
                event = proto.take_result(data, rid)  # the usual reply: one frame, ours
                if event is not NEED_DATA:
                    if slotted:
                        with self._mutex:
                            self._slots.pop(rid, None)
                    if type(event) is Result:
                        return event.value, None
                    return None, event.error
            while True:
                found = self._take_events(data, rid, slotted)
                if found is not None:
                    return found
                data = self._recv_more(limit)
        finally:
            incoming.channel = None

    def _take_events(
        self, data: bytes, rid: int, slotted: bool
    ) -> tuple[Any, BaseException | None] | None:
        """As the reader: take ``data`` in and handle every event it completes, delivering
        other threads' replies and pushes; ``(value, error)`` of the reply to ``rid`` (or of
        the connection's end), else ``None`` (``_read_for``)."""
        proto = self._proto
        proto.receive_data(data)
        mine = None
        while True:
            try:
                event = proto.next_event()
            except (ProtocolError, AuthenticationError) as exc:
                lost = ConnectionLost(f"protocol error from the server: {exc}")
                self._break(lost)
                return None, lost
            if event is NEED_DATA:
                break
            kind = type(event)
            if kind is Result or kind is Failure:
                if not event.req_id:
                    self._deliver(0, None, getattr(event, "error", None))
                elif event.req_id == rid:
                    if slotted:
                        with self._mutex:
                            self._slots.pop(rid, None)
                    mine = event
                    if not proto.has_buffered():
                        break  # the usual case: nothing after our reply
                elif kind is Result:
                    self._deliver(event.req_id, event.value, None)
                else:
                    self._deliver(event.req_id, None, event.error)
            elif kind is Push:
                self._dispatch_push(event.sub_id, event.payload)
            elif kind is ConnectionClosed:
                lost = ConnectionLost(f"the procshare server at {describe(self.address)} went away")
                self._break(lost)
                return None, lost
        if mine is not None:
            if type(mine) is Result:
                return mine.value, None
            return None, mine.error
        return None

    @property
    def reads_itself(self) -> bool:
        """Whether a thread may read this connection for pushes as it waits for one
        (``read_pushes``): replies come through a pipe, which ``poll`` tells all about
        (a TLS socket may hold decrypted data that no poll shows)."""
        return self._sock is None

    def read_pushes(
        self,
        done: Callable[[], bool],
        timeout: float | None,
        wake: Callable[[int | None], list[tuple[int, int]]] | None = None,
    ) -> bool:
        """Be this connection's reader until ``done()`` holds, ``timeout`` seconds pass or
        the connection ends (``broken``), handing every push to its handler and every reply
        to the thread waiting for it; whether this thread read (``False``: another one is
        the reader, and hands the pushes on). ``wake``: a poll of the reply pipe and of a
        descriptor another thread writes to make us look at ``done()`` again (its readiness
        is cleared by the caller). Only where ``reads_itself``."""
        with self._mutex:
            if self._reading or self._broken is not None:
                return False
            self._reading = True
        poll = wake or self._ready
        deadline = None if timeout is None else _monotonic() + timeout
        rfd = self._rfd
        incoming.channel = self
        try:
            while not done() and self._broken is None:
                if deadline is None:
                    ready = poll(None)
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        break
                    ready = poll(max(1, math.ceil(remaining * 1000)))
                if any(mask & select.POLLNVAL for _fd, mask in ready):
                    break  # (a descriptor was closed under us: the hub is being closed)
                if not any(fd == rfd for fd, _mask in ready):
                    continue  # (timed out, or woken: look again)
                try:
                    data = self._read_raw(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                try:
                    self._take_events(data, 0, False)
                except BaseException:
                    # A signal's handler raised (Ctrl-C) after bytes were read and before
                    # every event in them was handed on: some may be lost, and a watch
                    # must not miss a change silently. The connection ends here: its
                    # watches raise ConnectionLost. (In poll, above, nothing is lost.)
                    self._break(ConnectionLost("reading the connection was interrupted"))
                    raise
        finally:
            incoming.channel = None
            self._stop_reading()
        return True

    def _dispatch_push(self, sub_id: int, payload: Any) -> None:
        handler = self._push_handlers.get(sub_id)
        if handler is not None:
            handler(payload)
        elif self.on_push is not None:
            self.on_push(sub_id, payload)

    def subscribe(
        self, obj_id: int, options: dict[str, Any], handler: Callable[[Any], None]
    ) -> tuple[int, Any]:
        """Watch ``obj_id``: ``handler(event)`` is called (on the reading thread) for each push.

        The handler is in place before the request leaves, so no event can slip in between.
        Returns the subscription id and the server's answer (version, maybe a snapshot).
        """
        rid = self._take_id()
        self._push_handlers[rid] = handler
        try:
            frame = self._proto.send(Watch(rid, obj_id, options))
            return rid, self._roundtrip(rid, frame)
        except BaseException:
            self._push_handlers.pop(rid, None)
            raise

    def unsubscribe(self, sub_id: int) -> None:
        """End subscription ``sub_id`` (events already on their way are dropped)."""
        if self._push_handlers.pop(sub_id, None) is not None and self._broken is None:
            self.request(Unwatch(0, sub_id))

    def unsubscribe_soon(self, sub_id: int) -> None:
        """``unsubscribe`` from a finalizer: never blocks, the reply is not awaited."""
        if self._push_handlers.pop(sub_id, None) is None or self._broken is not None:
            return
        if self.pid == current_pid() and self._wlock.acquire(blocking=False):
            try:
                self._write_all(self._proto.send(Unwatch(self._take_id(), sub_id)))
            except OSError:
                pass
            finally:
                self._wlock.release()

    def read_forever(self, on_broken: Callable[[BaseException], None]) -> None:
        """Be this connection's reader for good (a daemon thread for pushes calls it).

        Other threads' requests are answered through their slots, as followers. Returns when
        the connection breaks, after calling ``on_broken`` with the reason.
        """
        with self._mutex:
            if self._reading:
                raise RuntimeError("the connection already has a reader")
            self._reading = True
        try:
            self._read_for(0, False, slotted=False)  # no request has id 0: reads until the end
        finally:
            error = self._broken or ConnectionLost("the connection was closed")
            with self._mutex:
                self._reading = False
            on_broken(error)

    def _recv(self, blocking: bool, limit: float | None = None) -> bytes:
        """Wait for the next bytes as the server advised with its last reply (``_sched``):
        busy-poll within the adaptive budget where that takes nobody's CPU, else sleep (next
        to the server, when we are its only running client).

        The budget follows how long replies take, however they were waited for: a reply within
        twice the full budget (spinning would have caught it, or nearly) restores it; a slower
        one halves it, down to a short probe.
        """
        read = self._read_raw
        budgets = self._budget
        spin = budgets[blocking]
        proto = self._proto
        if not proto.server_spin and self._plain_reads and limit is None:
            # The usual case on a busy machine (and with spinning off): sleep in the read of
            # the reply pipe, next to the server if we are its only running client (below).
            if spin and not proto.server_crowded:
                self._step_toward(proto.server_cpu)
            try:
                return read(RECV_SIZE)
            except OSError:
                return b""
        clock = _clock
        start = clock()
        # Spin as the server advised, for a call made while it still spins (within its window
        # after its last reply to us), or after computing: then our CPU is awake, and a reply
        # caught spinning spares waking it up. After sleeping (an idle CPU, gone to sleep
        # too), sleep again: measured, the processes our request wakes run sooner then.
        spinning = (
            spin
            and proto.server_spin
            and (not self._slept or start - self._returned < self._window)
        )
        try:
            if spinning and (
                not self._local
                or proto.server_cpu != current_cpu()
                or self._stepper.aside(proto.server_cpu)
            ):
                deadline = start + spin
                ready = self._ready
                caught = False
                while not ready(0):
                    if clock() >= deadline:
                        break
                    _yield()  # if the server shares our CPU, let it run
                else:
                    caught = True
                self._spun += clock() - start
                if caught:
                    budgets[blocking] = self._spin_max
                    return read(RECV_SIZE)
            if spin and not proto.server_crowded and not spinning:
                # Sleep where the server runs, if we are its only running client: our
                # request then wakes it on our CPU as we go to sleep, and its reply (or what
                # we wait for) wakes us on its CPU as it does; elsewhere each is woken through
                # an interrupt, on a CPU that a computing process holds (a busy machine) or
                # that has to wake up first (an idle one).
                server_cpu = proto.server_cpu
                if self._local and server_cpu >= 0 and server_cpu != current_cpu():
                    self._stepper.toward(server_cpu)
                if not proto.server_spin and limit is None:
                    # A busy machine: sleep in the read (on a socket, woken spuriously when
                    # the server reads our request, we are pulled next to it).
                    return read(RECV_SIZE)
            if limit is not None:
                self._wait_readable(limit)
            elif self._sock is not None:
                # On a socket, sleep in poll, not in recv: a thread asleep in recv is also
                # woken each time the server reads our request (the kernel then wakes the
                # socket's writers, and a recv sleeper is not told apart from them); a poll
                # waiting for input is not. (A pipe wakes its reader for data only.)
                self._ready(None)
            data = read(RECV_SIZE)
        except ConnectionLost:
            raise  # (given up: ``_wait_readable``)
        except OSError:
            return b""  # the protocol turns end-of-file into ConnectionClosed
        if spinning:
            if clock() - start <= 2 * self._spin_max:
                budgets[blocking] = self._spin_max
            else:
                budgets[blocking] = max(_PROBE, spin / 2)
        return data

    def _step_toward(self, server_cpu: int) -> None:
        """Move next to the server (``server_cpu``) before sleeping for its reply, when due."""
        if server_cpu >= 0 and self._stepper.due() and server_cpu != current_cpu():
            self._stepper.toward(server_cpu)

    def _recv_more(self, limit: float | None) -> bytes:
        """The rest of a reply already arriving (no budget bookkeeping); ``limit``: the
        longest silence before giving up (``_read_for``)."""
        try:
            if limit is not None and not self._slots_blocking():
                self._wait_readable(limit)
            return self._read_raw(self._proto.recv_size())
        except ConnectionLost:
            raise
        except OSError:
            return b""

    def _slots_blocking(self) -> bool:
        """Whether a request in flight may wait on the server (then silence is no sign)."""
        with self._mutex:
            return any(slot.blocking for slot in self._slots.values())

    def _wait_readable(self, timeout: float) -> None:
        """Wait until the server sends something, or give the connection up after ``timeout``
        seconds of silence (a server stopped, or a network gone): ``ServerUnreachable``."""
        if self._ready(max(1, int(timeout * 1000))):
            return
        lost = ServerUnreachable(
            f"the procshare server at {describe(self.address)} did not answer within "
            f"{timeout:g} s (stopped, or unreachable): connection dropped"
        )
        self._break(lost)
        raise lost

    def _deliver(self, rid: int, value: Any, error: BaseException | None) -> None:
        if not rid:  # a post failed (``Post``): raised at the next request
            if error is not None:
                if self._posted_failure is None:
                    self._posted_failure = error
                else:
                    self._more_failures += 1  # (told with the first)
            return
        with self._mutex:
            slot = self._slots.pop(rid, None)
            if slot is None:
                return  # a reply nobody waits for any more
            slot.value = value
            slot.error = error
            slot.done = True
            if slot.sleeping and slot.gate is not None:
                slot.sleeping = False
                slot.gate.release()

    def _break(self, error: BaseException) -> None:
        """Mark the channel unusable and fail every request in flight with ``error``."""
        with self._mutex:
            if self._broken is None:
                self._broken = error
            self.usable_pid = -1
            slots = list(self._slots.items())
            self._slots.clear()
        if self.loans is not None:
            self.loans.close()  # (the server ended them: a lock is taken there, and fails)
        kind = type(error) if isinstance(error, ConnectionLost) else ConnectionLost
        for _, slot in slots:
            with self._mutex:
                slot.error = kind(str(error))
                slot.done = True
                if slot.sleeping and slot.gate is not None:
                    slot.sleeping = False
                    slot.gate.release()
        if self.pid == current_pid():  # never shut down a connection inherited from a parent
            self._hang_up()

    def _hang_up(self) -> None:
        """End the connection for both sides (another thread blocked reading it returns):
        shut the socket down, or close the pipe we write (the server then closes its ends,
        and the pipe we read ends too)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        elif self._wfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._wfd)
            self._wfd = -1

    def forget_inherited(self) -> None:
        """In a forked child: drop this process's copy of the parent's socket, untouched.

        Closing our copy of the file descriptor leaves the parent's connection as it was
        (no shutdown, nothing sent); the channel object stays unusable here.
        """
        if self.pid == current_pid():
            return
        if self._sock is not None:
            with contextlib.suppress(OSError):
                os.close(self._sock.detach())
            return
        self._close_pipes()

    def _close_pipes(self) -> None:
        for fd in (self._rfd, self._wfd, self._post_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = self._post_fd = -1

    def close(self) -> None:
        """Close the connection on purpose: pending reference notes first, then ``Goodbye``
        (what the server handed to this process is its own: nothing of it is delivered
        again to others, as it would be for a process that was killed)."""
        if self.pid != current_pid():
            return  # a parent's connection: the parent closes it
        if self._broken is None:
            with contextlib.suppress(ProcshareError, OSError), self._wlock:
                self._write_all(self._ahead() + self._proto.send(Goodbye()))
            self._break(ConnectionLost("the connection was closed"))
        if self._sock is not None:
            self._sock.close()
            return
        self._close_pipes()


# -- the per-process registry ---------------------------------------------------------------

_registry_lock = threading.Lock()
_refqueue_lock = threading.Lock()
#: (address, authkey, serializer) -> this process's connection (a manager of another
#: serializer to the same server has its own: a server may accept several)
_channels: dict[tuple[Address, bytes, str], Channel] = {}
_refqueues: dict[Address, RefQueue] = {}


def refqueue_for(address: Address) -> RefQueue:
    """The reference-note queue for the server at ``address`` (created on first use)."""
    queue = _refqueues.get(address)
    if queue is None:
        with _refqueue_lock:
            queue = _refqueues.setdefault(address, RefQueue())
    return queue


def live_channel(address: Address, authkey: bytes, serializer: str = "pickle") -> Channel | None:
    """This process's open channel to ``address``, if it has one that works."""
    channel = _channels.get((address, bytes(authkey), serializer))
    if channel is not None and channel._broken is None and channel.pid == PID_CELL[0]:
        return channel
    return None


def get_channel(
    address: Address, authkey: bytes, serializer: str = "pickle", timeout: float | None = None
) -> Backend:
    """This process's channel to ``address``, connecting (again) if needed; ``timeout``: its
    call timeout (``Channel.call_timeout``), also the longest wait for a new handshake. A
    ``redis://`` address gets the Redis backend (``procshare._redis``), which offers the same
    operations."""
    if is_redis_url(address):
        from .._redis._channel import get_redis_channel

        return get_redis_channel(address, bytes(authkey), serializer)
    key = (address, bytes(authkey), serializer)
    channel = _channels.get(key)
    if channel is not None and channel._broken is None and channel.pid == PID_CELL[0]:
        return channel
    with _registry_lock:
        channel = _channels.get(key)
        if channel is None or channel._broken is not None or channel.pid != PID_CELL[0]:
            if channel is not None:
                channel.close()
            channel = Channel(
                address,
                key[1],
                serializer=serializer,
                connect_timeout=min(10.0, timeout) if timeout is not None else 10.0,
            )
            _channels[key] = channel
    if timeout is not None:
        channel.call_timeout = timeout
    return channel


def forget_channels(address: Address) -> None:
    """Close and forget this process's channels to ``address`` (its server shut down)."""
    with _registry_lock:
        doomed = [k for k in _channels if k[0] == address]
        channels = [_channels.pop(k) for k in doomed]
    for channel in channels:
        channel.close()


def close_channels() -> None:
    """Close this process's channels on purpose (at exit: ``Goodbye`` tells each server the
    process exited, and was not killed)."""
    with _registry_lock:
        channels = [c for c in _channels.values() if c.pid == PID_CELL[0]]
        _channels.clear()
    for channel in channels:
        with contextlib.suppress(Exception):
            channel.close()
    redis = sys.modules.get("procshare._redis._channel")
    if redis is not None:
        with contextlib.suppress(Exception):
            redis.close_redis_channels()


class _AtExit:
    """Keeps ``close_channels`` registered to run as the process exits: in the main process
    at interpreter exit, in a child that multiprocessing started as it finishes (which runs
    multiprocessing's own exit hooks, not atexit's). Registered before the managers' own
    (which stop their servers), so the goodbyes reach them first."""

    def __init__(self) -> None:
        self.install()
        util.register_after_fork(self, _AtExit.install)  # (children start with none)

    def install(self) -> None:
        util.Finalize(None, close_channels, exitpriority=50)


_at_exit = _AtExit()


def _after_fork_in_child() -> None:
    global _registry_lock, _refqueue_lock
    PID_CELL[0] = os.getpid()
    _registry_lock = threading.Lock()  # another thread may have held them at fork time
    _refqueue_lock = threading.Lock()
    for channel in _channels.values():
        channel.forget_inherited()
    _channels.clear()
    for queue in _refqueues.values():
        queue.drain()  # notes the parent had queued are the parent's to send


def _process_name() -> str:
    try:
        import multiprocessing

        return multiprocessing.current_process().name
    except Exception:  # noqa: BLE001 - a name is only informative
        return ""


os.register_at_fork(after_in_child=_after_fork_in_child)
