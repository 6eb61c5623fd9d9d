"""Faults that must cost at most the request (or the connection) that met them: never the
server, never another client's data, never a stall, never a lost item."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from typing import Any

import pytest

import procshare
from procshare import RemoteError, SerializationError

FORK = multiprocessing.get_context("fork")


class ExitsWhenUnpickled:
    """Unpickling it calls ``sys.exit(7)`` (``__reduce__`` chooses what unpickling runs)."""

    def __reduce__(self) -> Any:
        return (sys.exit, (7,))


class InterruptsWhenUnpickled:
    def __reduce__(self) -> Any:
        return (_raise_interrupt, ())


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


class ExitsWhenHashed:
    """A key whose ``__hash__`` calls ``sys.exit`` (in the server, where the dict lives)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __hash__(self) -> int:
        if os.getpid() != self.pid:
            raise SystemExit(3)
        return 1


class ExitsWhenPickledElsewhere:
    """Pickles fine here; pickling it anywhere else (the server, sending it back) exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __reduce__(self) -> Any:
        if os.getpid() != self.pid:
            raise SystemExit(5)
        return (ExitsWhenPickledElsewhere, (self.pid,))


@pytest.fixture
def m() -> Any:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def _still_serving(m: Any, d: Any) -> None:
    assert d["kept"] == "safe"
    assert m._process.is_alive()
    other = m.list([1, 2])  # new objects, new calls: everyone else is served on
    other.append(3)
    assert other[:] == [1, 2, 3]


@pytest.mark.parametrize("value", [ExitsWhenUnpickled(), InterruptsWhenUnpickled()])
def test_a_value_whose_unpickling_exits_costs_only_its_call(m: Any, value: Any) -> None:
    d = m.dict(kept="safe")
    with pytest.raises(SerializationError):
        d["bad"] = value
    _still_serving(m, d)
    assert "bad" not in d


def test_a_key_whose_hash_exits_costs_only_its_call(m: Any) -> None:
    d = m.dict(kept="safe")
    with pytest.raises(RemoteError, match="SystemExit"):
        d[ExitsWhenHashed(os.getpid())] = 1
    _still_serving(m, d)


def test_a_value_whose_pickling_exits_on_the_way_back_costs_only_that_read(m: Any) -> None:
    d = m.dict(kept="safe")
    d["odd"] = ExitsWhenPickledElsewhere(os.getpid())
    with pytest.raises(SerializationError):
        d["odd"]
    _still_serving(m, d)


class SlowToUnpickle:
    """Unpickling it computes (holding the GIL, as pure-Python ``__setstate__`` code does)
    until ``release`` exists, at most 10 s; what it becomes says which came first."""

    def __init__(self, started: str, release: str) -> None:
        self.started, self.release = started, release

    def __reduce__(self) -> Any:
        return (_compute_until, (self.started, self.release))


def _compute_until(started: str, release: str) -> str:
    open(started, "w").close()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if os.path.exists(release):
            return "released"
        sum(range(1000))  # (computes: no sleep hands the GIL over)
    return "timed out"


class Plain:
    """A custom class: unpickling it runs ``__setstate__``-like code the payload names."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plain) and other.x == self.x

    def __hash__(self) -> int:
        return hash(self.x)


def _aside(m: Any) -> int:
    return int(m.stats()["counters"]["decoded aside"])


def test_only_values_that_name_code_are_decoded_off_the_loop(m: Any) -> None:
    """Plain data is decoded on the server's loop even where its bytes look like the pickle
    opcodes that name a global (0x82-0x84, 0x93: inside an int, a str, bytes), and so are
    sets and proxies; a custom class's value is decoded on a worker thread. (Decoding every
    such look-alike on a worker cost a thread hand-off per call: for every call of a process
    whose thread id held one of those bytes.)"""
    d = m.dict()
    inner = m.list([1])
    look_alikes: list[Any] = [0x93, 0x82, 0x8483, 0x93 << 40, "\x93\x82", b"\x82\x83\x84\x93"]
    look_alikes += [{0x93, 1}, frozenset({b"\x93"}), bytearray(b"\x84"), complex(0x93, 1), inner]
    before = _aside(m)
    for i, value in enumerate(look_alikes):
        d[i] = value
        d.update({(i, 0x93): value})  # (another method, keyword-free: the same path)
    assert _aside(m) == before
    assert [d[i] for i in range(len(look_alikes) - 1)] == look_alikes[:-1]
    assert d[len(look_alikes) - 1][:] == [1]
    d["custom"] = Plain(0x93)
    assert _aside(m) == before + 1
    assert d["custom"] == Plain(0x93)


def test_a_value_slow_to_unpickle_stalls_only_its_own_call(m: Any, tmp_path: Any) -> None:
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    d = m.dict()
    other = m.list()

    def slow_set() -> None:
        d["slow"] = SlowToUnpickle(started, release)

    sender = FORK.Process(target=slow_set)
    sender.start()
    for _ in range(1000):  # bounded: the sender's call reaches the server and decoding begins
        if os.path.exists(started):
            break
        time.sleep(0.01)
    assert os.path.exists(started)
    # While that value is still being unpickled, everyone else is served. (Were its decoding
    # on the core's thread, these calls would wait for it to time out: 10 s.)
    for i in range(50):
        other.append(i)
    assert other[:] == list(range(50))
    open(release, "w").close()
    sender.join(30)
    assert sender.exitcode == 0
    assert d["slow"] == "released"
