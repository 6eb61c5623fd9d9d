"""The sans-IO protocol, driven end to end in memory: no sockets, no threads, no clock."""

from __future__ import annotations

import ast
import itertools
import pathlib
import pickle
import queue
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import procshare._protocol as protocol
from procshare._errors import (
    AuthenticationError,
    FrameTooLarge,
    ProtocolError,
    RemoteError,
    SerializationError,
)
from procshare._protocol import (
    NEED_DATA,
    Authenticated,
    BadRequest,
    Batch,
    Call,
    ClientProtocol,
    ConnectionClosed,
    ConnState,
    Control,
    Create,
    Drain,
    Failure,
    Flag,
    FrameReader,
    LeaseAcquire,
    LeasedRead,
    Op,
    Post,
    Push,
    ReadSince,
    Ready,
    Release,
    Result,
    Retain,
    ServerProtocol,
    Unwatch,
    Watch,
    pack,
)

KEY = b"secret"


def connected(
    server_key: bytes = KEY, client_key: bytes = KEY
) -> tuple[ServerProtocol, ClientProtocol]:
    """A server and a client end, handshake done."""
    server = ServerProtocol(server_key, info={"pid": 1})
    client = ClientProtocol(client_key, info={"pid": 2, "name": "test"})
    client.receive_data(server.data_to_send())
    assert client.next_event() is NEED_DATA
    server.receive_data(client.data_to_send())
    event = server.next_event()
    assert event == Authenticated("pickle", {"pid": 2, "name": "test"})
    client.receive_data(server.data_to_send())
    assert client.next_event() == Ready({"pid": 1})
    return server, client


def server_events(server: ServerProtocol) -> list[object]:
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_handshake_reaches_ready_on_both_ends() -> None:
    server, client = connected()
    assert server.state is ConnState.READY
    assert client.state is ConnState.READY


def test_wrong_authkey_is_denied_and_the_client_is_told() -> None:
    server = ServerProtocol(KEY)
    client = ClientProtocol(b"wrong")
    client.receive_data(server.data_to_send())
    client.next_event()
    server.receive_data(client.data_to_send())
    with pytest.raises(AuthenticationError):
        server.next_event()
    assert server.state is ConnState.CLOSED
    client.receive_data(server.data_to_send())
    with pytest.raises(AuthenticationError, match="wrong authkey"):
        client.next_event()


def test_a_server_that_does_not_know_the_key_is_not_trusted() -> None:
    # A fake server can't produce the WELCOME proof without the key, even if it accepts anyone.
    server = ServerProtocol(b"impostor")
    client = ClientProtocol(KEY)
    client.receive_data(server.data_to_send())
    client.next_event()
    login = client.data_to_send()
    forged = pack(Op.WELCOME, 0, 0, b'{"proof":"' + b"00" * 32 + b'","info":{}}')
    assert login
    client.receive_data(forged)
    with pytest.raises(AuthenticationError):
        client.next_event()


def test_nothing_is_deserialized_before_authentication() -> None:
    # A pickle bomb sent before LOGIN must be rejected as a protocol error, never unpickled.
    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            return (pytest.fail, ("unpickled before authentication",))

    server = ServerProtocol(KEY)
    server.receive_data(pack(Op.CALL, 0, 1, pickle.dumps(Boom())))
    with pytest.raises(ProtocolError):
        server.next_event()


def test_protocol_version_mismatch_is_refused_clearly() -> None:
    server = ServerProtocol(KEY)
    server.receive_data(pack(Op.LOGIN, 0, 0, b'{"protocol": 99}'))
    with pytest.raises(ProtocolError, match="version"):
        server.next_event()
    client = ClientProtocol(KEY)
    client.receive_data(
        pack(Op.HELLO, 0, 0, b'{"magic":"procshare","protocol":99,"nonce":"00","serializers":[]}')
    )
    with pytest.raises(ProtocolError, match="protocol 99"):
        client.next_event()


@pytest.mark.parametrize(
    "message",
    [
        Call(7, 3, "__setitem__", ("a", [1, 2]), None, 0),
        Call(8, 3, "update", (), {"x": 1}, 12345),
        Create(9, "dict", ({"a": 1},), None, 0),
        Control(10, "stats", ()),
        Batch(11, ((1, "append", (1,), None, 0), (1, "pop", (), {"index": 0}, 7))),
        Watch(12, 5, {"timeout": 1.0}),
        Unwatch(13, 12),
        ReadSince(14, 5, "copy", 3, 9),
        LeaseAcquire(15, 6, True, -1, ((5, "get", ("k",)),), True, 9),
        LeasedRead(16, 5, "__getitem__", ("k",), 9),
    ],
)
def test_requests_round_trip(message: object) -> None:
    server, client = connected()
    server.receive_data(client.send(message))
    [event] = server_events(server)
    assert event == message


def test_reference_notes_round_trip() -> None:
    server, client = connected()
    server.receive_data(client.send(Retain((1, 2, 3))) + client.send(Release((2,))))
    assert server_events(server) == [Retain((1, 2, 3)), Release((2,))]


def test_replies_round_trip_including_errors_and_pushes() -> None:
    server, client = connected()
    data = (
        server.encode_result(1, {"k": [1, 2]})
        + server.encode_result(2, None)
        + server.encode_failure(3, KeyError("missing"))
        + server.encode_failure(4, queue.Empty())
        + server.encode_push(99, {"op": "append"})
    )
    client.receive_data(data)
    events = []
    while (event := client.next_event()) is not NEED_DATA:
        events.append(event)
    assert events[0] == Result(1, {"k": [1, 2]})
    assert events[1] == Result(2, None)
    assert isinstance(events[2], Failure) and isinstance(events[2].error, KeyError)
    assert events[2].error.args == ("missing",)
    assert isinstance(events[3].error, queue.Empty)
    assert events[4] == Push(99, {"op": "append"})


def test_none_results_carry_no_payload() -> None:
    server, _ = connected()
    frame = server.encode_result(5, None)
    assert len(frame) == protocol.HEADER_SIZE
    assert frame[5] & Flag.EMPTY


def test_the_servers_advice_reaches_the_client() -> None:
    server, client = connected()
    client.receive_data(server.encode_result(1, 1, Flag.CROWDED | Flag.with_cpu(0, 5)))
    client.next_event()
    assert client.server_crowded and not client.server_spin and client.server_cpu == 5
    client.receive_data(server.encode_result(2, None, Flag.SPIN | Flag.with_cpu(0, 30)))
    assert client.take_result(b"", 2) is protocol.NEED_DATA  # (nothing there: not taken)
    client.next_event()
    assert client.server_spin and not client.server_crowded and client.server_cpu == 30
    assert Flag.cpu_of(Flag.with_cpu(Flag.SPIN | Flag.CROWDED, 7)) == 7
    assert Flag.with_cpu(Flag.SPIN | Flag.CROWDED, 7) & (Flag.SPIN | Flag.CROWDED)


def test_the_server_cpu_reaches_the_client() -> None:
    server, client = connected()
    assert client.server_cpu == -1  # not said yet
    client.receive_data(server.encode_result(1, 1, Flag.with_cpu(0, 3)))
    client.next_event()
    assert client.server_cpu == 3
    client.receive_data(server.encode_result(2, None, Flag.with_cpu(Flag.EMPTY, 0)))
    assert client.next_event().value is None
    assert client.server_cpu == 0
    client.receive_data(server.encode_result(3, 1, Flag.with_cpu(0, Flag.CPU_LIMIT + 5)))
    client.next_event()
    assert client.server_cpu == -1  # out of range: unknown


def test_an_unpicklable_argument_fails_before_anything_is_sent() -> None:
    _, client = connected()
    with pytest.raises(SerializationError) as info:
        client.encode_call(1, 1, "append", (lambda: None,))
    assert isinstance(info.value, TypeError)  # what the stdlib raises, so old except clauses work


def test_an_unpicklable_result_becomes_a_failure_not_a_crash() -> None:
    server, client = connected()
    client.receive_data(server.encode_result(1, lambda: None))
    event = client.next_event()
    assert isinstance(event, Failure)
    assert isinstance(event.error, SerializationError)


def test_an_unpicklable_exception_becomes_a_remote_error_with_its_text() -> None:
    class Odd(Exception):
        def __reduce__(self) -> object:
            raise TypeError("no")

    server, client = connected()
    client.receive_data(server.encode_failure(1, Odd("details")))
    event = client.next_event()
    assert isinstance(event.error, RemoteError)
    assert "details" in str(event.error)


def test_an_undecodable_payload_is_a_bad_request_not_a_dropped_connection() -> None:
    server, _ = connected()
    server.receive_data(pack(Op.CALL, 0, 41, b"\x80\x05garbage"))
    [event] = server_events(server)
    assert isinstance(event, BadRequest) and event.req_id == 41
    assert server.state is ConnState.READY


@pytest.mark.parametrize(
    "payload",
    [
        (1, "m", ()),  # too short
        ("1", "m", (), None, 0),  # object id not an int
        (1, 2, (), None, 0),  # method not a str
        (1, "m", [], None, 0),  # args not a tuple
        (1, "m", (), {1: 2}, 0),  # keyword names not str
        (1, "m", (), None, "me"),  # owner not an int
        [1, "m", (), None, 0],  # not a tuple
    ],
)
def test_malformed_calls_are_rejected_with_a_clear_error(payload: object) -> None:
    server, _ = connected()
    server.receive_data(pack(Op.CALL, 0, 5, pickle.dumps(payload)))
    [event] = server_events(server)
    assert isinstance(event, BadRequest)
    assert isinstance(event.error, ProtocolError)


@pytest.mark.parametrize(
    ("op", "payload"),
    [
        (Op.SINCE, (1, "copy")),  # too short
        (Op.SINCE, ("1", "copy", -1, 0)),  # object id not an int
        (Op.LEASE, (1, True, -1, (), "me")),  # owner not an int
        (Op.READ, [1, "get", (), 0]),  # not a tuple
    ],
)
def test_malformed_addressed_requests_are_bad_requests(op: Op, payload: object) -> None:
    server, _ = connected()
    server.receive_data(pack(op, 0, 5, pickle.dumps(payload)))
    [event] = server_events(server)
    assert isinstance(event, BadRequest) and event.req_id == 5
    assert isinstance(event.error, ProtocolError)


def test_unknown_opcode_is_a_protocol_violation() -> None:
    server, _ = connected()
    server.receive_data(pack(200, 0, 1, b""))
    with pytest.raises(ProtocolError):
        server.next_event()
    assert server.state is ConnState.CLOSED


def test_a_length_prefix_claiming_gigabytes_is_rejected_from_the_header_alone() -> None:
    server = ServerProtocol(KEY, max_frame=1 << 20)
    client = ClientProtocol(KEY)
    client.receive_data(server.data_to_send())
    client.next_event()
    server.receive_data(client.data_to_send())
    server.next_event()
    server.receive_data(b"\xff\xff\xff\xf0" + b"\x10\x00\x00\x00\x00\x01")
    with pytest.raises(FrameTooLarge):
        server.next_event()


def test_before_login_even_a_modest_frame_is_too_large() -> None:
    server = ServerProtocol(KEY)
    server.receive_data((1 << 20).to_bytes(4, "big") + b"\x02\x00\x00\x00\x00\x00")
    with pytest.raises(FrameTooLarge):
        server.next_event()


def test_end_of_file_mid_frame_is_reported_as_truncated() -> None:
    server, client = connected()
    frame = client.encode_call(1, 1, "append", (1,))
    server.receive_data(frame[:-3])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed(truncated=True)


@settings(max_examples=200, deadline=None)
@given(
    obj_id=st.integers(0, 2**62),
    method=st.text(max_size=30),
    args=st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(),
            st.binary(),
            st.lists(st.integers(), max_size=5),
        ),
        max_size=5,
    ).map(tuple),
    owner=st.integers(0, 2**63),
    req_id=st.integers(0, 2**32 - 1),
)
def test_calls_round_trip_for_any_values(
    obj_id: int, method: str, args: tuple[object, ...], owner: int, req_id: int
) -> None:
    server, client = connected()
    server.receive_data(client.encode_call(req_id, obj_id, method, args, None, owner))
    assert server_events(server) == [Call(req_id, obj_id, method, args, None, owner)]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.one_of(st.integers(), st.text(), st.none()), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 50), max_size=30),
)
def test_frames_survive_any_fragmentation(values: list[object], cuts: list[int]) -> None:
    server, client = connected()
    data = b"".join(server.encode_result(i, v) for i, v in enumerate(values))
    pos, got = 0, []
    for cut in [*cuts, len(data)]:
        client.receive_data(data[pos : pos + cut])
        pos += cut
        while (event := client.next_event()) is not NEED_DATA:
            got.append(event)
        if pos >= len(data):
            break
    assert got == [Result(i, v) for i, v in enumerate(values)]


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=400))
def test_garbage_after_login_never_escapes_as_anything_but_protocol_errors(garbage: bytes) -> None:
    server, _ = connected()
    server.receive_data(garbage)
    try:
        for _ in range(100):
            event = server.next_event()
            if event is NEED_DATA:
                break
    except ProtocolError:
        assert server.state is ConnState.CLOSED


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=400))
def test_garbage_before_login_is_refused(garbage: bytes) -> None:
    server = ServerProtocol(KEY)
    server.receive_data(garbage)
    try:
        event = server.next_event()
    except (ProtocolError, AuthenticationError):
        assert server.state is ConnState.CLOSED
    else:
        assert event is NEED_DATA


@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 3000), st.integers(60_000, 200_000)), min_size=1, max_size=4
    ),
    cuts=st.lists(st.one_of(st.integers(1, 700), st.integers(1, 90_000)), max_size=40),
)
def test_the_reader_asks_for_the_rest_of_a_large_frame(sizes: list[int], cuts: list[int]) -> None:
    data = b"".join(pack(1, 0, i, b"x" * n) for i, n in enumerate(sizes))
    ends = list(itertools.accumulate(len(pack(1, 0, 0, b"x" * n)) for n in sizes))
    reader, pos, done = FrameReader(), 0, 0
    for cut in [*cuts, len(data)]:
        reader.feed(data[pos : pos + cut])
        pos = min(len(data), pos + cut)
        while reader.next_frame() is not None:
            done += 1
        started = done < len(ends) and pos - (ends[done - 1] if done else 0) >= protocol.HEADER_SIZE
        # the rest of the frame under way in one read once its header is in (within bounds);
        # else the usual read size
        missing = ends[done] - pos if started else 0
        expected = max(protocol.RECV_SIZE, min(missing, protocol.MAX_RECV_SIZE))
        assert reader.recv_size() == expected
        if pos >= len(data):
            break
    assert done == len(sizes)


def test_frame_reader_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        FrameReader(max_frame=3)


FORBIDDEN = {"socket", "selectors", "select", "threading", "asyncio", "time"}


def test_the_protocol_package_does_no_io() -> None:
    """_protocol imports no socket, selectors, threading, asyncio or time (STYLE.md rule 1)."""
    package = pathlib.Path(protocol.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & FORBIDDEN, f"{path.name} imports {names & FORBIDDEN}"


def test_each_end_refuses_to_send_what_the_other_would_not_accept() -> None:
    server = ServerProtocol(KEY, max_frame=1000)
    client = ClientProtocol(KEY, max_frame=2000)
    client.receive_data(server.data_to_send())
    client.next_event()
    server.receive_data(client.data_to_send())
    server.next_event()
    client.receive_data(server.data_to_send())
    client.next_event()
    assert client.peer_max_frame == 1000 and server.peer_max_frame == 2000
    with pytest.raises(FrameTooLarge, match="limit of 1000"):
        client.encode_call(1, 1, "append", (b"x" * 2000,))
    client.encode_call(1, 1, "append", (b"x" * 500,))  # within the limit: fine
    client.receive_data(server.encode_result(3, b"y" * 5000))  # too big for the client
    event = client.next_event()
    assert isinstance(event, Failure) and isinstance(event.error, FrameTooLarge)


@pytest.mark.parametrize(
    "calls",
    [
        ((1, "m", ()),),  # too short
        (("1", "m", (), None, 0),),  # bad object id
        ((1, "m", [], None, 0),),  # args not a tuple
        ((1, "m", (), {2: 1}, 0),),  # keyword names not str
        ([1, "m", (), None, 0],),  # not a tuple
    ],
)
def test_malformed_batches_are_rejected(calls: tuple[object, ...]) -> None:
    server, _ = connected()
    server.receive_data(pack(Op.BATCH, 0, 3, pickle.dumps(calls)))
    [event] = server_events(server)
    assert isinstance(event, BadRequest) and isinstance(event.error, ProtocolError)


@pytest.mark.parametrize(
    "message",
    [
        Call(7, 3, "get", ("k",), None, 1),
        LeasedRead(8, 3, "__getitem__", ("k",), 1),
        LeaseAcquire(9, 4, True, -1, ((3, "get", ()),), False, 1),
        ReadSince(10, 3, "copy", -1, 1),
    ],
)
def test_a_lone_request_for_one_object_is_taken_without_the_frame_reader(message: object) -> None:
    server, client = connected()
    assert server.take_call(client.send(message)) == message


def test_take_call_leaves_other_requests_to_the_frame_reader() -> None:
    server, client = connected()
    frame = client.send(Control(3, "ping", ()))
    assert server.take_call(frame) is NEED_DATA
    server.receive_data(frame)
    assert server_events(server) == [Control(3, "ping", ())]


class _NamesCode:
    """Unpickles through a global it names (``collections.OrderedDict``): code runs."""

    def __reduce__(self) -> tuple[object, ...]:
        import collections

        return (collections.OrderedDict, ())


@pytest.mark.parametrize(
    "message",
    [
        Call(3, 1, "get", (_NamesCode(),), None, 0),
        ReadSince(4, 1, "copy", -1, 0),
        ReadSince(7, 1, _NamesCode(), -1, 0),  # type: ignore[arg-type]  # (a hostile client)
        LeasedRead(5, 1, "get", (_NamesCode(),), 0),
        LeaseAcquire(6, 1, True, -1, ((1, "get", (_NamesCode(),)),), False, 0),
    ],
)
def test_requests_for_an_object_that_name_code_are_deferred_off_the_loop(message: Any) -> None:
    server, client = connected()
    server.defer, server.defer_unless = True, b"RebuildProxy"  # (as the server sets them)
    frame = client.send(message)
    event = server.take_call(frame)
    names_code = "_NamesCode" in repr(message)
    assert isinstance(event, protocol.Deferred) is names_code, event
    decoded = server.decode_deferred(event) if names_code else event
    assert type(decoded) is type(message) and decoded.req_id == message.req_id


def test_a_drain_goes_with_the_requests_and_carries_nothing() -> None:
    server, client = connected()
    server.receive_data(client.send(Drain()) + client.send(Control(7, "ping", ())))
    assert server_events(server) == [Drain(), Control(7, "ping", ())]


@settings(max_examples=100, deadline=None)
@given(
    stamps=st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 60), max_size=30),
)
def test_the_post_pipe_yields_its_posts_and_their_stamps_whatever_the_reads(
    stamps: list[float], cuts: list[int]
) -> None:
    """What a post pipe holds is read in pieces of any size: each post comes out whole, its
    stamp first, and apart from the request stream."""
    server, client = connected()
    frames = [client.encode_post(3, "append", (i,), 9, stamp) for i, stamp in enumerate(stamps)]
    data = b"".join(f for f in frames if f is not None)
    got: list[tuple[float, object]] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        server.feed_posts(data[pos : pos + cut])
        pos += cut
        while (stamp := server.next_post_stamp()) is not None:
            got.append((stamp, server.next_post()))
        if pos >= len(data):
            break
    assert got == [(s, Post(3, "append", (i,), 9, s)) for i, s in enumerate(stamps)]
    assert not server.has_posts_buffered()
    assert server.next_event() is NEED_DATA  # (the requests' stream saw none of it)


def test_anything_but_a_post_in_the_post_pipe_is_a_protocol_violation() -> None:
    server, client = connected()
    server.feed_posts(client.send(Control(1, "ping", ())))
    assert server.next_post_stamp() == float("-inf")  # (complete, and no post)
    with pytest.raises(ProtocolError, match="post pipe"):
        server.next_post()
