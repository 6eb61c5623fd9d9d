"""Posted calls on the real transport: what another client posted and the server has not read
yet is applied before a request that must see it (``Core.catch_up``), and never one posted
after it.

The clients here are protocol ends on socket pairs served by a real ``Server`` turn by turn, so
a test chooses which connection the server reads first: the order a loaded machine may pick.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest

from procshare._client._proxies import RebuildProxy
from procshare._errors import ProcshareError
from procshare._leases import ALONG
from procshare._manager import SyncManager, _server_types
from procshare._protocol import (
    NEED_DATA,
    Call,
    ClientProtocol,
    Create,
    Drain,
    Failure,
    Result,
    ServerProtocol,
)
from procshare._server._post_pipes import open_post_pipe
from procshare._server._transport import Server, _Conn

KEY = b"posts"


class Peer:
    """One client of ``rig``: a protocol end on a socket pair, logged in."""

    def __init__(self, rig: Rig, may_post: bool = True) -> None:
        self.rig = rig
        server = rig.server
        ours, self.sock = socket.socketpair()
        rig.sockets += [ours, self.sock]
        ours.setblocking(False)
        sid = server.core.new_session_id()
        self.conn = _Conn(ours, ServerProtocol(KEY, info={"session": sid}), sid, 0.0, rig.reactor)
        rig.reactor.conns[self.conn.fd] = self.conn
        rig.reactor.poller.register(self.conn.fd)
        self.proto = ClientProtocol(KEY)
        self.proto.receive_data(self.conn.proto.data_to_send())
        self.proto.next_event()  # HELLO; LOGIN queued
        self.sock.sendall(self.proto.data_to_send())
        self.serve()
        self.proto.receive_data(self.sock.recv(65536))
        self.proto.next_event()  # Ready
        assert self.conn.session is not None
        self.conn.session.may_post = may_post  # (as a client on pipes is)
        self.ids = iter(range(1, 1_000_000))
        self.post_w = -1

    def serve(self) -> None:
        """One turn of the server for this connection alone (what a reactor does)."""
        server = self.rig.server
        now = time.monotonic()
        server._on_readable(self.conn, now)
        server._serve_leftovers(now)
        server._flush()

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def reply(self) -> Any:
        self.proto.receive_data(self.sock.recv(65536))
        event = self.proto.next_event()
        assert event is not NEED_DATA
        if type(event) is Failure:
            raise event.error
        assert type(event) is Result
        return event.value

    def call(self, obj_id: int, method: str, *args: Any, posting: bool = False) -> Any:
        rid = next(self.ids)
        self.send(self.proto.encode_call(rid, obj_id, method, args, None, 7, posting=posting))
        self.serve()
        return self.reply()

    def post(self, obj_id: int, method: str, *args: Any, stamp: float) -> None:
        """Write a post and leave it unread."""
        frame = self.proto.encode_post(obj_id, method, args, 7, stamp)
        assert frame is not None
        if self.post_w >= 0:
            os.write(self.post_w, frame)  # (into its post pipe)
        else:
            self.send(frame)

    def with_post_pipe(self) -> Peer:
        """Write posts into a pipe of their own from now on (``_post_pipes``)."""
        read_end, self.post_w = open_post_pipe()
        self.rig.fds.append(self.post_w)
        self.rig.server._attach_post_pipe(self.conn, read_end)
        return self

    def drain_then_call(self, obj_id: int, method: str, *args: Any) -> Any:
        """A call preceded by a ``Drain`` (as a client sends its first request after posting)."""
        rid = next(self.ids)
        self.send(self.proto.send(Drain()) + self.proto.encode_call(rid, obj_id, method, args))
        self.serve()
        return self.reply()

    def create(self, typeid: str, *args: Any) -> int:
        self.send(self.proto.send(Create(next(self.ids), typeid, args, None, 0)))
        self.serve()
        proxy = self.reply()
        proxy._close = lambda: None
        return int(proxy._id)


class Rig:
    def __init__(self) -> None:
        types = _server_types(SyncManager._registry)
        self.server = Server(types, None, KEY, rebuild=RebuildProxy, reactors=1)
        self.server.core.bind_loop_thread()
        self.reactor = self.server._reactors[0]
        self.reactor.open()
        self.server._post_readiness.open()
        self.sockets: list[socket.socket] = []
        self.fds: list[int] = []  # (the post pipes' ends that the peers write)


@pytest.fixture
def rig() -> Any:
    rig = Rig()
    yield rig
    rig.server.close()
    for sock in rig.sockets:
        sock.close()
    for fd in rig.fds:
        os.close(fd)


def _registered(kind: str, method: str, *peers: Peer) -> int:
    """An object of ``kind`` the ``peers`` registered to post ``method`` to (each asked with
    a call that wrote the peer's name)."""
    obj = peers[0].create(kind)
    for peer in peers:
        assert peer.call(obj, method, *_ARGS[method](peer), posting=True) == (None, True)
    return obj


_ARGS = {
    "__setitem__": lambda peer: ("asked", id(peer)),
    "append": lambda peer: ("asked",),
}


def test_a_read_applies_the_writers_unread_posts_first(rig: Rig) -> None:
    writer, reader = Peer(rig), Peer(rig)
    d = _registered("dict", "__setitem__", writer)
    writer.post(d, "__setitem__", "k", 1, stamp=time.monotonic())  # unread: the reader first
    assert reader.call(d, "get", "k") == 1
    assert rig.server.core.stats_counters["caught up"] == 1


def test_posted_appends_keep_their_causal_order_across_writers(rig: Rig) -> None:
    """``a`` posts x; ``b`` (told of it through some other channel) posts y; ``a`` posts z after
    learning of y. The server reads ``b`` first: x before y, and z after it."""
    a, b, reader = Peer(rig), Peer(rig), Peer(rig)
    lst = _registered("list", "append", a, b)
    t = time.monotonic()
    a.post(lst, "append", "x", stamp=t)
    a.post(lst, "append", "z", stamp=t + 0.002)  # (written after y's stamp)
    b.post(lst, "append", "y", stamp=t + 0.001)
    b.serve()  # y's catch-up applies x only; z is served after y
    assert reader.call(lst, "__getitem__", slice(2, None)) == ["x", "y", "z"]


def test_a_client_that_cannot_post_is_not_registered(rig: Rig) -> None:
    remote = Peer(rig, may_post=False)  # (one on another machine)
    d = remote.create("dict")
    assert remote.call(d, "__setitem__", "k", 1, posting=True) == (None, False)
    assert rig.server.core.objects[d].posters is None


def test_a_watched_object_is_not_posted_to(rig: Rig) -> None:
    """A post is applied once its sender sleeps or its time slice ends: a watcher would wait
    for it; writes to a watched object wait for their answers."""
    from procshare._protocol import Watch

    watcher, writer = Peer(rig), Peer(rig)
    d = watcher.create("dict")
    watcher.send(watcher.proto.send(Watch(next(watcher.ids), d, {})))
    watcher.serve()
    watcher.reply()
    assert writer.call(d, "__setitem__", "k", 1, posting=True) == (None, False)


def test_a_post_of_an_unregistered_write_fails_and_is_reported_with_id_0(rig: Rig) -> None:
    peer = Peer(rig)
    d = peer.create("dict")
    peer.post(d, "__setitem__", "k", 1, stamp=time.monotonic())
    peer.serve()
    peer.proto.receive_data(peer.sock.recv(65536))
    event = peer.proto.next_event()
    assert type(event) is Failure and event.req_id == 0
    assert peer.call(d, "__len__") == 0  # nothing applied


def test_a_lock_release_and_a_queue_put_are_not_postable(rig: Rig) -> None:
    """Somebody typically waits for them: they wait for their answers."""
    peer = Peer(rig)
    lock, q = peer.create("Lock"), peer.create("Queue")
    peer.call(lock, "acquire", True)
    assert peer.call(lock, "release", posting=True) == (None, False)
    assert peer.call(q, "put", 1, True, None, posting=True) == (None, False)


def test_a_post_naming_code_is_refused_not_run(rig: Rig) -> None:
    peer = Peer(rig)
    lst = _registered("list", "append", peer)
    assert peer.proto.encode_post(lst, "append", (ProcshareError("x"),), 7, 0.0) is None


def test_a_post_and_the_posting_flag_decode_as_sent(rig: Rig) -> None:
    peer = Peer(rig)
    server = peer.conn.proto
    frame = peer.proto.encode_post(5, "append", ("v",), 9, 123.25)
    assert frame is not None
    server.receive_data(frame)
    assert tuple(server.next_event()) == (5, "append", ("v",), 9, 123.25)
    server.receive_data(peer.proto.encode_call(3, 5, "append", ("v",), None, 9, posting=True))
    call = server.next_event()
    assert type(call) is Call and call.posting is True and call.versioned is False


def test_an_object_posted_to_is_leased_to_nobody(rig: Rig) -> None:
    """A lease answers locally: it would answer while a post is on its way. None is granted
    on an object while a writer may post to it (those out ended with its writes): the read
    is answered without one. Once its poster says it posts no more (``unpost``), it is."""
    from procshare._leases import LeasePage
    from procshare._protocol import Control, LeasedRead

    page = rig.server.core.leasing.page = LeasePage.create(rig.server.instance)
    try:
        writer, reader = Peer(rig), Peer(rig)
        d = writer.create("dict")
        writer.call(d, "__setitem__", "k", 0)

        def leased_read() -> Any:
            reader.send(reader.proto.send(LeasedRead(next(reader.ids), d, "__getitem__", ("k",))))
            reader.serve()
            return reader.reply()

        epoch, value = leased_read()
        assert epoch is not None and value == 0
        assert writer.call(d, "__setitem__", "k", 1, posting=True) == (None, True)
        assert leased_read() == (None, 1)  # read, not leased
        writer.send(writer.proto.send(Control(next(writer.ids), "unpost", (d,))))
        writer.serve()
        assert writer.reply() is None
        epoch, value = leased_read()
        assert epoch is not None and value == 1
    finally:
        page.close()
        rig.server.core.leasing.page = None


def test_posts_bound_to_a_lock_let_its_grants_lease_until_its_next_grant(rig: Rig) -> None:
    """A Value's set posted by a process that holds one lock is bound to it (``BOUND``):
    that lock's grants to others lease the Value, and each such lease ends at the lock's
    next grant (its new holder may post once it has it). A poster that holds no lock, or a
    lock released once by another process (``crossed``), leases nothing."""
    from procshare._leases import BOUND, LeasePage, slot_of
    from procshare._protocol import LeaseAcquire

    page = rig.server.core.leasing.page = LeasePage.create(rig.server.instance)
    try:
        writer, reader, other = Peer(rig), Peer(rig), Peer(rig)
        v = writer.create("Value", "i", 0)
        lock = writer.create("Lock")

        def leasing_acquire(peer: Peer) -> Any:
            reads = ((v, "get", ()),)
            peer.send(peer.proto.send(LeaseAcquire(next(peer.ids), lock, True, -1, reads)))
            peer.serve()
            return peer.reply()

        assert writer.call(lock, "acquire") is True
        assert writer.call(v, "set", 1, posting=True) == (None, BOUND)
        assert writer.call(lock, "release") is None
        granted, leases = leasing_acquire(reader)
        assert granted is True and leases[0][1] == 1  # (the read, leased)
        epoch = leases[0][0]
        assert page.epoch(slot_of(v)) == epoch
        assert reader.call(lock, "release") is None
        assert writer.call(lock, "acquire") is True  # the next grant ends that lease
        assert page.epoch(slot_of(v)) != epoch
        writer.post(v, "set", 2, stamp=time.monotonic())
        assert writer.call(lock, "release") is None
        assert leasing_acquire(reader)[1][0][1] == 2
        # released by a process that did not hold it: its grants lease no bound Value again
        assert other.call(lock, "release") is None
        assert leasing_acquire(reader) == (True, {})
    finally:
        page.close()
        rig.server.core.leasing.page = None


def test_a_poster_holding_no_lock_is_not_bound_and_stops_the_grants_leases(rig: Rig) -> None:
    from procshare._leases import LeasePage
    from procshare._protocol import LeaseAcquire

    page = rig.server.core.leasing.page = LeasePage.create(rig.server.instance)
    try:
        writer, reader = Peer(rig), Peer(rig)
        v = writer.create("Value", "i", 0)
        lock = writer.create("Lock")
        assert writer.call(v, "set", 1, posting=True) == (None, True)
        reads = ((v, "get", ()),)
        reader.send(reader.proto.send(LeaseAcquire(next(reader.ids), lock, True, -1, reads)))
        reader.serve()
        assert reader.reply() == (True, {})
    finally:
        page.close()
        rig.server.core.leasing.page = None


def test_a_grant_after_a_recall_reads_what_the_borrower_posted_first(rig: Rig) -> None:
    """A lock taken back from a loan (``recalled``): its borrower may have posted sets bound
    to it, then freed it in shared memory, with no message after them. The next grant reads
    those posts first, even unread, before it makes the reads it brings."""
    from procshare._leases import BOUND, LeasePage
    from procshare._protocol import LeaseAcquire

    page = rig.server.core.leasing.page = LeasePage.create(rig.server.instance)
    try:
        writer, reader = Peer(rig), Peer(rig)
        v = writer.create("Value", "i", 0)
        lock = writer.create("Lock")
        assert writer.call(lock, "acquire") is True
        assert writer.call(v, "set", 1, posting=True) == (None, BOUND)
        writer.post(v, "set", 2, stamp=time.monotonic())  # left unread
        held = rig.server.core.objects[lock].referent
        held.recalled = True  # (as a recall leaves it)
        # (its release, in shared memory: nothing for the server to read)
        held.holder = None
        assert writer.conn.session is not None
        writer.conn.session.unhold(held, 1)
        reads = ((v, "get", ()),)
        reader.send(reader.proto.send(LeaseAcquire(next(reader.ids), lock, True, -1, reads)))
        reader.serve()
        granted, leases = reader.reply()
        assert granted is True and leases[0][1] == 2
    finally:
        page.close()
        rig.server.core.leasing.page = None


# -- post pipes (``_post_pipes``): posts read in batches, apart from the requests -------------


def test_a_drain_applies_the_callers_post_pipe_before_its_request(rig: Rig) -> None:
    writer = Peer(rig).with_post_pipe()
    lst = _registered("list", "append", writer)
    writer.post(lst, "append", 1, stamp=time.monotonic())
    writer.post(lst, "append", 2, stamp=time.monotonic())
    assert writer.drain_then_call(lst, "__len__") == 3  # (the asking append, then the posts)


def test_post_pipes_read_together_are_applied_in_the_order_written(rig: Rig) -> None:
    """Two writers' posts rest in their pipes; whichever pipe the server finds first, a read
    by a third process applies them in the order of their stamps (each written after
    learning of the one before)."""
    a, b, reader = Peer(rig).with_post_pipe(), Peer(rig).with_post_pipe(), Peer(rig)
    lst = _registered("list", "append", a, b)
    t = time.monotonic()
    for i in range(6):  # a writes the even ones, b the odd ones, in turns
        (a if i % 2 == 0 else b).post(lst, "append", i, stamp=t + i * 1e-6)
    assert reader.call(lst, "__getitem__", slice(2, None)) == list(range(6))


def test_a_read_applies_only_the_posts_stamped_before_it_and_keeps_the_rest(rig: Rig) -> None:
    a, b = Peer(rig).with_post_pipe(), Peer(rig).with_post_pipe()
    lst = _registered("list", "append", a, b)
    t = time.monotonic()
    a.post(lst, "append", "a-before", stamp=t)
    b.post(lst, "append", "b-later", stamp=t + 10.0)  # (after the post that reads below)
    a.post(lst, "append", "a-later", stamp=t + 20.0)
    # b's post is applied, catching up with a's posts stamped before it, not a's later one
    rig.server._apply_own_posts(b.conn, time.monotonic())
    assert lst_items(rig, lst) == ["asked", "asked", "a-before", "b-later"]
    assert a.drain_then_call(lst, "__len__") == 5  # (what was kept is applied after all)


def test_a_pipe_that_held_posts_rests_and_is_waited_on_again_once_empty(rig: Rig) -> None:
    writer = Peer(rig).with_post_pipe()
    lst = _registered("list", "append", writer)
    server, reactor, fd = rig.server, rig.reactor, writer.conn.post_fd
    writer.post(lst, "append", 1, stamp=time.monotonic())
    now = time.monotonic()
    server._posts_arrived(writer.conn, now)  # (its reactor found it readable)
    assert lst_items(rig, lst)[-1] == 1
    assert not writer.conn.post_armed and fd in reactor.resting.pipes  # resting
    writer.post(lst, "append", 2, stamp=time.monotonic())  # (wakes nobody: read at the end)
    server._read_rested(reactor, reactor.resting.until)
    assert lst_items(rig, lst)[-1] == 2 and fd in reactor.resting.pipes  # held posts: rests
    server._read_rested(reactor, reactor.resting.until)
    assert writer.conn.post_armed and fd not in reactor.resting.pipes  # empty: waited on


def test_a_closed_connections_post_pipe_is_applied_before_its_session_ends(rig: Rig) -> None:
    writer, reader = Peer(rig).with_post_pipe(), Peer(rig)
    lst = _registered("list", "append", writer)
    writer.post(lst, "append", "last words", stamp=time.monotonic())
    os.close(writer.post_w)
    rig.fds.remove(writer.post_w)
    writer.sock.close()  # (the client died)
    writer.serve()  # (end of file: the connection closes)
    assert writer.conn.closed
    assert reader.call(lst, "__getitem__", -1) == "last words"


def test_a_conditions_notify_is_posted_with_the_requests(rig: Rig) -> None:
    """Made while holding the condition's lock, whose release follows at once: ``ALONG``."""
    peer = Peer(rig)
    cond = peer.create("Condition")
    peer.call(cond, "acquire")
    assert peer.call(cond, "notify", 1, posting=True) == (None, ALONG)


def lst_items(rig: Rig, obj_id: int) -> list[Any]:
    """What the server holds in list ``obj_id`` now (no request: nothing caught up)."""
    return list(rig.server.core.objects[obj_id].referent)


def test_a_post_written_while_the_pipes_are_read_waits_for_its_cause(rig: Rig) -> None:
    """The server looks at which post pipes hold anything, then reads them one by one. In
    between, b writes a post, and a (told of it) writes one after: a's pipe is read, b's is
    not (it was empty when looked at). a's later post must wait for b's: applied in the
    order written, both in the end."""
    a, b = Peer(rig).with_post_pipe(), Peer(rig).with_post_pipe()
    lst = _registered("list", "append", a, b)
    a.post(lst, "append", "a-first", stamp=time.monotonic())
    server = rig.server
    readiness = server._post_readiness

    class LookThenWrite:
        """The server's poller of the post pipes, the writes landing after its first look."""

        looks = 0

        def ready_now(self) -> Any:
            ready = readiness.ready_now()
            self.looks += 1
            if self.looks == 1:
                b.post(lst, "append", "b-cause", stamp=time.monotonic())
                a.post(lst, "append", "a-after", stamp=time.monotonic())
            return ready

        def __getattr__(self, name: str) -> Any:
            return getattr(readiness, name)

    server._post_readiness = LookThenWrite()  # type: ignore[assignment]
    try:
        server._apply_posts(time.monotonic())
    finally:
        server._post_readiness = readiness
    assert lst_items(rig, lst) == ["asked", "asked", "a-first", "b-cause", "a-after"]
