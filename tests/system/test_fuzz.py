"""Throw garbage at a live server; it must keep serving everyone with their data intact."""

from __future__ import annotations

import os
import pathlib
import pickle
import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare._protocol import NEED_DATA, Op, pack
from tests._raw import logged_in, raw_connect
from tests._serve import serving

SEED = 20261125


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[procshare.SyncManager, dict[str, Any]]]:
    with procshare.Manager() as m:
        objects = {
            "d": m.dict({i: str(i) for i in range(100)}),
            "l": m.list(range(50)),
            "lock": m.Lock(),
            "q": m.Queue(),
        }
        objects["q"].put("still here")
        yield m, objects


def check_intact(objects: dict[str, Any]) -> None:
    assert dict(objects["d"].items()) == {i: str(i) for i in range(100)}
    assert objects["l"][:] == list(range(50))
    assert objects["lock"].acquire(timeout=5)
    objects["lock"].release()
    assert objects["q"].qsize() == 1


def send_and_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # drain until the server closes or answers everything
            pass
    except OSError:
        pass  # the server dropped us: fine
    finally:
        sock.close()


def test_garbage_before_authentication(
    server: tuple[procshare.SyncManager, dict[str, Any]],
) -> None:
    m, objects = server
    rng = random.Random(SEED)
    for _ in range(150):
        blob = rng.randbytes(rng.randrange(1, 600))
        send_and_close(raw_connect(m.address), blob)
    # a header claiming gigabytes, then nothing
    send_and_close(raw_connect(m.address), struct.pack("!IBBI", 0xFFFFFFF0, Op.LOGIN, 0, 0))
    # a login that is not JSON, and one with a wrong proof
    send_and_close(raw_connect(m.address), pack(Op.LOGIN, 0, 0, b"\x80\x04not json"))
    send_and_close(
        raw_connect(m.address),
        pack(
            Op.LOGIN,
            0,
            0,
            b'{"protocol":1,"serializer":"pickle","nonce":"'
            + b"00" * 32
            + b'","proof":"'
            + b"11" * 32
            + b'"}',
        ),
    )
    check_intact(objects)


def test_a_deeply_nested_login_drops_the_connection_without_a_traceback(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "deep.sock")
    env = dict(os.environ, PROCSHARE_AUTHKEY="deep")
    with serving("--address", f"unix://{path}", env=env, capture_stderr=True) as served:
        for body in (b"[" * 15_000, b'{"a":' * 3_000):
            send_and_close(raw_connect(path), pack(Op.LOGIN, 0, 0, body))
        m = procshare.BaseManager(address=path, authkey=b"deep")
        m.connect()  # still serving
    err = served.stderr
    assert "Traceback" not in err and "RecursionError" not in err, err[-2000:]


def test_garbage_after_authentication(server: tuple[procshare.SyncManager, dict[str, Any]]) -> None:
    m, objects = server
    rng = random.Random(SEED + 1)
    for _ in range(150):
        sock, _ = logged_in(m)
        kind = rng.randrange(4)
        if kind == 0:  # random frames: any opcode, flags and payload
            data = b"".join(
                pack(
                    rng.randrange(256),
                    rng.randrange(256),
                    rng.randrange(2**32),
                    rng.randbytes(rng.randrange(0, 200)),
                )
                for _ in range(rng.randrange(1, 5))
            )
        elif kind == 1:  # a truncated frame
            frame = pack(Op.CALL, 0, 1, pickle.dumps((1, "append", (1,), None, 0)))
            data = frame[: rng.randrange(1, len(frame))]
        elif kind == 2:  # a length prefix over the limit
            data = struct.pack("!IBBI", 0x7FFFFFFF, Op.CALL, 0, 7)
        else:  # raw bytes
            data = rng.randbytes(rng.randrange(1, 400))
        send_and_close(sock, data)
    check_intact(objects)


def test_wellformed_nonsense_calls_get_errors_and_change_nothing(
    server: tuple[procshare.SyncManager, dict[str, Any]],
) -> None:
    m, objects = server
    rng = random.Random(SEED + 2)
    ids = [p._id for p in objects.values()] + [0, -1, 10**9]
    methods = [
        "__getitem__",
        "__class__",
        "__reduce__",
        "__init__",
        "_private",
        "no_such",
        "acquire",
        "get",
        "__len__",
        "pop",
        "",
        "#GETVALUE",
        "#SINCE",
        "#READ",
        "#LEASE",
    ]
    args_pool: list[tuple[Any, ...]] = [
        (),
        (1,),
        (1, 2, 3),
        ("x",) * 20,
        (None,),
        ([],),
        ("copy", -1),  # whole-object reads, with versions real and not
        ("copy", 10**9),
        ("#GETVALUE", 0),
        ("keys", "x"),
        ("pop", 1),
        ("copy", 2**70),
        ([1], ()),  # reads to lease (#READ): names and arguments of every wrong shape
        ("__getitem__", ("x",)),
        ("get", ([],)),
        ("__len__", "x"),
        (False, 0, ((0, "get", ()), ([], "x", ()))),  # non-blocking leasing acquires
        (False, 0, "x"),
        (False, 0, ((10**9, "__getitem__", ([],)),)),
    ]
    sock, proto = logged_in(m)
    answers = 0
    for rid in range(1, 400):
        method = rng.choice(methods)
        if method in ("pop", "get", "acquire"):
            continue  # these would change state (not nonsense); tested elsewhere
        frame = proto.encode_call(rid, rng.choice(ids), method, rng.choice(args_pool))
        sock.sendall(frame)
        answers += 1
    received = 0
    while received < answers:
        proto.receive_data(sock.recv(65536))
        while proto.next_event() is not NEED_DATA:
            received += 1
    sock.close()
    check_intact(objects)


def test_the_server_still_serves_new_clients(
    server: tuple[procshare.SyncManager, dict[str, Any]],
) -> None:
    m, objects = server
    fresh = m.dict(new="client")
    assert fresh["new"] == "client"
    check_intact(objects)
