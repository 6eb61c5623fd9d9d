"""What requests travel through: a pipe each way for a client on the same machine (asked for
at login, sent by the server with its welcome), the socket otherwise."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time

import procshare
from procshare.managers import SyncManager
from tests import _children as children

FORK = multiprocessing.get_context("fork")


def test_a_local_client_talks_through_pipes() -> None:
    with procshare.Manager(ctx=FORK) as m:
        d = m.dict()
        d["a"] = 1
        channel = d._channel()
        assert channel._sock is None  # the socket closed once the pipes came
        assert os.fstat(channel._rfd).st_mode & 0o170000 == 0o010000  # S_IFIFO
        assert d.copy() == {"a": 1}
        big = list(range(200_000))  # several pipe-fulls each way
        d["big"] = big
        assert d["big"] == big


def test_a_tcp_client_keeps_its_socket() -> None:
    m = SyncManager(address=("127.0.0.1", 0), authkey=b"wire", ctx=FORK)
    m.start()
    try:
        d = m.dict()
        d["a"] = 1
        channel = d._channel()
        assert channel._sock is not None and channel._sock.family == socket.AF_INET
        assert d["a"] == 1
    finally:
        m.shutdown()


def test_the_death_of_a_client_on_pipes_frees_what_it_held() -> None:
    with procshare.Manager(ctx=FORK) as m:
        lock = m.Lock()
        ready = FORK.Event()
        p = FORK.Process(target=children.hold_and_die, args=(lock, "sleep", ready))
        p.start()
        assert ready.wait(30)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        deadline = time.monotonic() + 30
        while not lock.acquire(timeout=0.1):
            assert time.monotonic() < deadline, "the dead holder's lock was never freed"
        lock.release()
