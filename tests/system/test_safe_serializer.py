"""``serializer="msgpack"``: plain data only, and a server that never unpickles what it gets."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import pickle
import queue
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
import procshare.managers
from procshare._protocol import NEED_DATA, Op, pack
from tests._raw import logged_in

pytest.importorskip("msgpack")

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(serializer="msgpack", ctx=FORK) as manager:
        yield manager


VALUES = [
    None,
    True,
    -(2**63),
    2**64 + 1,  # past msgpack's ints: tagged
    1.5,
    "text",
    b"\x00bytes",
    [1, [2, "x"]],
    (1, (2, 3)),  # tuples stay tuples
    {"a": 1, "b": {"c": None}},
    {1: "int key", (2, 3): "tuple key", "~t": "a key like a tag"},
    {1, 2},
    frozenset({"x"}),
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_plain_data_arrives_as_it_was_sent(m: procshare.SyncManager, value: Any) -> None:
    d = m.dict()
    d["k"] = value
    got = d["k"]
    assert got == value and type(got) is type(value)


def test_every_shared_type_works(m: procshare.SyncManager) -> None:
    lst = m.list(range(5))
    assert lst[1:3] == [1, 2]
    q = m.Queue()
    q.put({"job": (1, 2)})
    assert q.get() == {"job": (1, 2)}
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    lock = m.Lock()
    with lock:
        assert lock.locked()
    v = m.Value("i", 1)
    v.value += 1
    assert v.value == 2
    ns = m.Namespace(a=(1,))
    assert ns.a == (1,)
    with pytest.raises(KeyError):
        m.dict()["missing"]
    inner = m.dict(x=1)
    assert m.list([inner])[0]["x"] == 1  # a proxy travels as its token
    with inner.watch() as changes:
        inner["y"] = 2
        assert changes.get(timeout=10).args == ("y", 2)


def test_an_object_is_refused_before_anything_is_sent(m: procshare.SyncManager) -> None:
    d = m.dict()

    class Job:
        pass

    with pytest.raises(procshare.SerializationError, match="Job"):
        d["job"] = Job()
    with pytest.raises(TypeError):  # (what except clauses written for pickle catch)
        d["f"] = len
    assert d.copy() == {}


class _Creates:
    """Unpickled, it creates a file: what a crafted pickle does to a server that loads it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_crafted_pickle_is_refused_and_runs_nothing(
    m: procshare.SyncManager, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "created-by-the-server"
    d = m.dict(kept=1)
    sock, proto = logged_in(m, "msgpack")
    try:
        payload = pickle.dumps((d._id, "__setitem__", ("x", _Creates(target)), None, 0))
        sock.sendall(pack(Op.CALL, 0, 7, payload))
        # The server answers that request with an error, or drops the connection.
        reply: Any = NEED_DATA
        while reply is NEED_DATA:
            data = sock.recv(65536)
            proto.receive_data(data)
            if not data:
                break
            reply = proto.next_event()
    finally:
        sock.close()
    assert not target.exists()
    assert d.copy() == {"kept": 1}  # and it serves on
    assert not os.path.exists(str(target))


def test_a_client_with_another_serializer_is_told_at_connect(m: procshare.SyncManager) -> None:
    other = procshare.managers.BaseManager(address=m.address, authkey=bytes(m._authkey))
    with pytest.raises(procshare.ProtocolError, match=r"'pickle'.*it accepts 'msgpack'"):
        other.connect()


def test_without_the_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from procshare import _serializers

    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.delitem(_serializers._SERIALIZERS, "msgpack", raising=False)
    with pytest.raises(ValueError, match=r"procshare\[msgpack\]"):
        _serializers.get_serializer("msgpack")
