"""The BUSY hint: clients stop busy-polling once more of them run than there are CPUs."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from procshare._client._proxies import RebuildProxy
from procshare._manager import SyncManager, _server_types
from procshare._protocol import Flag
from procshare._server._transport import Server


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(_server_types(SyncManager._registry), None, b"busy", rebuild=RebuildProxy)
    yield srv
    srv.close()


def busy_with(server: Server, running: int, parked: int = 0, cpus: int = 2) -> bool:
    server._cpus = cpus
    sessions = server.core.sessions
    sessions.clear()
    server._recent.clear()
    for sid in range(running + parked):
        sessions[sid] = SimpleNamespace(waiters=["a parked call"] if sid >= running else None)  # type: ignore[assignment]
        server._recent[sid] = 100.0
    server._update_busy(100.0)
    return bool(server.core.reply_flags & Flag.BUSY)


def test_busy_once_more_clients_run_than_there_are_cpus(server: Server) -> None:
    assert not busy_with(server, running=1)
    assert not busy_with(server, running=2)  # as many as CPUs: they spin next to the loop
    assert busy_with(server, running=3)
    assert not busy_with(server, running=2, parked=5)  # waiting for a lock is not running
    assert busy_with(server, running=5, cpus=4)
    assert not busy_with(server, running=4, cpus=4)


def test_clients_quiet_for_a_while_no_longer_count(server: Server) -> None:
    assert busy_with(server, running=3)
    server._update_busy(100.0 + 1.0)  # a second later, none of them has sent anything
    assert not server.core.reply_flags & Flag.BUSY
