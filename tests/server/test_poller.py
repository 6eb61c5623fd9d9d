"""The server's poller, with epoll (Linux) and with poll (elsewhere)."""

from __future__ import annotations

import socket

import pytest

from procshare._server import _poller
from procshare._server._poller import OUT, Poller


@pytest.fixture(params=["epoll", "poll"])
def poller(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Poller:
    if request.param == "poll":
        monkeypatch.setattr(_poller, "_EPOLL", False)
    elif not _poller._EPOLL:
        pytest.skip("no epoll here")
    p = Poller()
    p.open()
    yield p
    p.close()


def test_readable_writable_and_hang_up(poller: Poller) -> None:
    wait = poller.waiter()
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno())
        assert wait(0) == []
        b.send(b"x")
        [(fd, mask)] = wait(1.0)
        assert fd == a.fileno() and mask & ~OUT and not mask & OUT
        a.recv(1)
        poller.modify(a.fileno(), write=True)
        [(fd, mask)] = wait(1.0)
        assert mask & OUT and not mask & ~OUT  # writable only
        poller.modify(a.fileno(), write=False)
        assert wait(0) == []
        b.close()
        [(fd, mask)] = wait(1.0)
        assert mask & ~OUT  # a hang-up reads as "read it" (recv then reports the end)
        poller.unregister(a.fileno())
        poller.unregister(a.fileno())  # twice is harmless
        assert wait(0) == []


def test_a_poller_that_is_not_open() -> None:
    p = Poller()
    p.unregister(3)
    p.close()
    with pytest.raises(RuntimeError, match="not serving"):
        p.register(0)
    with pytest.raises(RuntimeError, match="not serving"):
        p.waiter()
