"""Posted calls on the real transport: what another client posted and the server has not read
yet is applied before a request that must see it (``Core.catch_up``), and never one posted
after it.

The clients here are protocol ends on socket pairs served by a real ``Server`` turn by turn, so
a test chooses which connection the server reads first: the order a loaded machine may pick.
"""

from __future__ import annotations

import queue
import socket
import time
from typing import Any

import pytest

from procshare._client._proxies import RebuildProxy
from procshare._errors import ProcshareError
from procshare._manager import SyncManager, _server_types
from procshare._protocol import (
    NEED_DATA,
    Call,
    ClientProtocol,
    Create,
    Failure,
    Result,
    ServerProtocol,
)
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
        self.send(frame)

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
        self.sockets: list[socket.socket] = []


@pytest.fixture
def rig() -> Any:
    rig = Rig()
    yield rig
    rig.server.close()
    for sock in rig.sockets:
        sock.close()


def test_a_try_acquire_applies_the_holders_unread_posted_release_first(rig: Rig) -> None:
    holder, other = Peer(rig), Peer(rig)
    lock = holder.create("Lock")
    assert holder.call(lock, "acquire", True) is True
    assert holder.call(lock, "release", posting=True) == (None, True)  # registered
    assert holder.call(lock, "acquire", True) is True
    holder.post(lock, "release", stamp=time.monotonic())  # unread: ``other`` comes first
    assert other.call(lock, "acquire", False) is True
    assert rig.server.core.stats_counters["caught up"] == 1


def test_locked_and_a_foreign_release_see_the_holders_posted_release(rig: Rig) -> None:
    holder, other = Peer(rig), Peer(rig)
    lock = holder.create("Lock")
    assert holder.call(lock, "acquire", True) is True
    holder.call(lock, "release", posting=True)
    holder.call(lock, "acquire", True)
    holder.post(lock, "release", stamp=time.monotonic())
    assert other.call(lock, "locked") is False
    holder.call(lock, "acquire", True)
    holder.post(lock, "release", stamp=time.monotonic())
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        other.call(lock, "release")  # as in the stdlib: it was released already


def test_a_client_that_cannot_post_is_neither_registered_nor_caught_up_with(rig: Rig) -> None:
    holder, other = Peer(rig, may_post=False), Peer(rig)  # (one on another machine)
    lock = holder.create("Lock")
    holder.call(lock, "acquire", True)
    assert holder.call(lock, "release", posting=True) == (None, False)
    holder.call(lock, "acquire", True)
    assert other.call(lock, "acquire", False) is False
    assert rig.server.core.stats_counters["caught up"] == 0


def _registered_queue(*peers: Peer) -> int:
    q = peers[0].create("Queue")
    for peer in peers:
        assert peer.call(q, "put", "first", True, None, posting=True) == (None, True)
        peer.rig.server.core.referent(q).items.clear()
    return q


def test_posted_puts_keep_their_causal_order_across_producers(rig: Rig) -> None:
    """``a`` posts x; ``b`` (told of it through some other channel) posts y; ``a`` posts z after
    learning of y. The server reads ``b`` first: x before y, and z after it."""
    a, b, consumer = Peer(rig), Peer(rig), Peer(rig)
    q = _registered_queue(a, b)
    t = time.monotonic()
    a.post(q, "put", "x", True, None, stamp=t)
    a.post(q, "put", "z", True, None, stamp=t + 0.002)  # (written after y's stamp)
    b.post(q, "put", "y", True, None, stamp=t + 0.001)
    b.serve()  # y's catch-up applies x only; z is served after y
    assert [consumer.call(q, "get", False) for _ in range(3)] == ["x", "y", "z"]
    with pytest.raises(queue.Empty):
        consumer.call(q, "get", False)


def test_a_consumer_sees_a_put_posted_before_its_request(rig: Rig) -> None:
    producer, consumer = Peer(rig), Peer(rig)
    q = _registered_queue(producer)
    producer.post(q, "put", 42, True, None, stamp=time.monotonic())
    assert consumer.call(q, "qsize") == 1
    assert consumer.call(q, "get", False) == 42


def test_a_post_naming_code_is_refused_not_run(rig: Rig) -> None:
    peer = Peer(rig)
    q = _registered_queue(peer)
    assert peer.proto.encode_post(q, "put", (ProcshareError("x"), True, None), 7, 0.0) is None


def test_a_post_of_an_unregistered_put_fails_and_is_reported_with_id_0(rig: Rig) -> None:
    peer = Peer(rig)
    q = peer.create("Queue")
    peer.post(q, "put", 1, True, None, stamp=time.monotonic())
    peer.serve()
    peer.proto.receive_data(peer.sock.recv(65536))
    event = peer.proto.next_event()
    assert type(event) is Failure and event.req_id == 0
    assert peer.call(q, "qsize") == 0  # nothing applied


def test_a_bounded_queue_refuses_posted_puts(rig: Rig) -> None:
    peer = Peer(rig)
    q = peer.create("Queue", 2)
    assert peer.call(q, "put", 1, True, None, posting=True) == (None, False)
    assert peer.call(q, "qsize") == 1


def test_a_post_and_the_posting_flag_decode_as_sent(rig: Rig) -> None:
    peer = Peer(rig)
    server = peer.conn.proto
    frame = peer.proto.encode_post(5, "put", ("v", True, None), 9, 123.25)
    assert frame is not None
    server.receive_data(frame)
    assert tuple(server.next_event()) == (5, "put", ("v", True, None), 9, 123.25)
    server.receive_data(peer.proto.encode_call(3, 5, "put", ("v",), None, 9, posting=True))
    call = server.next_event()
    assert type(call) is Call and call.posting is True and call.versioned is False


def test_an_object_posted_to_is_leased_to_nobody(rig: Rig) -> None:
    """A lease answers locally: it would answer while a post is on its way. None is granted
    on an object while a writer may post to it (those out ended with its writes)."""
    from procshare._leases import LeasePage
    from procshare._protocol import LeasedRead

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
        assert leased_read() is None  # declined: the reader reads plainly from now on
    finally:
        page.close()
        rig.server.core.leasing.page = None
