"""The server's advice to its clients (``Flag.SPIN``, ``Flag.CROWDED``) and where it serves them.

Driven on a server that is not serving, with stand-in sessions: what the transport decides
from which clients ran lately, which computed between calls, and what the load gauge says.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from procshare._client._proxies import RebuildProxy
from procshare._manager import SyncManager, _server_types
from procshare._protocol import Flag, ServerProtocol
from procshare._sched import LoadGauge
from procshare._server import _transport
from procshare._server._session import Session
from procshare._server._transport import Server, _Conn

NOW = 100.0


_peers: list[socket.socket] = []


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(
        _server_types(SyncManager._registry), None, b"advice", rebuild=RebuildProxy, reactors=2
    )
    for reactor in srv._reactors:
        reactor.open()
    yield srv
    srv._close_everything()
    while _peers:
        _peers.pop().close()


def run(server: Server, running: int = 0, parked: int = 0, thinking: int = 0) -> None:
    """Stand-in clients on reactor 0 that sent something at NOW: ``running`` of them plain
    (``thinking`` of those computed before their call), ``parked`` waiting for a lock."""
    reactor = server._reactors[0]
    sessions = server.core.sessions
    sessions.clear()
    reactor.recent.clear()
    server._thinking.clear()
    server._active.clear()
    for sid in range(running + parked):
        sessions[sid] = SimpleNamespace(  # type: ignore[assignment]
            waiters=["a parked call"] if sid >= running else None, pid=None, host=""
        )
        server._active[sid] = NOW
        if sid < running:
            reactor.recent[sid] = NOW
        if sid < thinking:
            server._thinking[sid] = NOW
    server._update_running(NOW)


def advice(server: Server, loaded: bool = False) -> tuple[bool, bool]:
    """(SPIN, CROWDED) as every reactor's replies carry them."""
    server._gauge = SimpleNamespace(loaded=lambda now, ours, ours_running: loaded)  # type: ignore[assignment]
    spin = server._advise(NOW)
    flags = {r.home.flags & (Flag.SPIN | Flag.CROWDED) for r in server._reactors}
    assert len(flags) == 1, "the reactors advise alike"
    (flag,) = flags
    assert spin == bool(flag & Flag.SPIN)
    return bool(flag & Flag.SPIN), bool(flag & Flag.CROWDED)


def test_a_lone_client_on_an_idle_machine_is_told_to_spin(server: Server) -> None:
    run(server, running=1)
    assert advice(server) == (True, False)


def test_nobody_spins_while_a_process_not_ours_waits_for_a_cpu(server: Server) -> None:
    run(server, running=1)
    assert advice(server, loaded=True) == (False, False)


def test_clients_calling_back_to_back_spin_together(server: Server) -> None:
    run(server, running=3)
    assert advice(server) == (True, True)  # they yield to each other; but must not crowd


def test_nobody_spins_while_a_client_computes_between_calls(server: Server) -> None:
    run(server, running=2, thinking=1)
    assert advice(server) == (False, True)
    run(server, running=1, thinking=1)
    assert advice(server) == (True, False)  # alone, a computing client may spin for its reply


def test_a_parked_client_is_not_running(server: Server) -> None:
    run(server, running=1, parked=5)
    assert server.running == 1
    assert server.active == 6  # (yet its process is runnable as soon as it is answered)
    assert advice(server) == (True, False)


def test_clients_quiet_for_a_while_no_longer_count(server: Server) -> None:
    run(server, running=3, thinking=2)
    server._update_running(NOW + 1.0)  # a second later, none of them has sent anything
    assert (server.running, server.thinking, server.active) == (0, 0, 0)
    assert advice(server) == (True, False)


def test_the_gauge_counts_the_server_and_its_active_clients_as_ours(server: Server) -> None:
    run(server, running=2, parked=2)
    asked: list[int] = []
    server._gauge = SimpleNamespace(  # type: ignore[assignment]
        loaded=lambda now, ours, ours_running: asked.append(ours) or False
    )
    server._advise(NOW)
    assert asked == [5]
    assert isinstance(Server._advise, object) and LoadGauge  # (the real gauge: test_sched)


def test_the_states_of_the_active_clients_here_are_read_where_they_are_few(
    server: Server,
) -> None:
    """Which tasks' states tell ours from others: the active clients on this machine (a
    parked one too: it runs once answered); none where one is elsewhere, or too many."""
    run(server, running=2, parked=1)
    for sid, session in server.core.sessions.items():
        session.pid = 1000 + sid
    server._update_running(NOW)
    assert server.ours == ("/proc/1000/stat", "/proc/1001/stat", "/proc/1002/stat")
    server.core.sessions[1].host = "10.0.0.7"  # a client on another machine
    server._update_running(NOW)
    assert server.ours is None
    server.core.sessions[1].host = ""
    server._update_running(NOW)
    assert server.ours is not None
    run(server, running=_transport._MOST_TASKS_READ + 1)
    for sid, session in server.core.sessions.items():
        session.pid = 1000 + sid
    server._update_running(NOW)
    assert server.ours is None


def connect(server: Server) -> tuple[_Conn, socket.socket]:
    """A connection on reactor 0 with an authenticated session, and its peer socket."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    sid = server.core.new_session_id()
    proto = ServerProtocol(b"advice")
    conn = _Conn(ours, proto, sid, NOW, server._reactors[0])
    server._reactors[0].conns[conn.fd] = conn
    server._interest(conn)  # (registers it with reactor 0)
    session = Session(sid, proto, {}, NOW)
    server.core.sessions[sid] = session
    session.home = server._reactors[0].home
    conn.session = session
    server._by_session[sid] = conn
    _peers.append(peer)
    return conn, peer


def requests(server: Server, conn: _Conn, thinks: bool, count: int) -> None:
    for i in range(count):
        conn.proto.client_thinks = thinks
        assert conn.session is not None
        server._ran(conn, conn.session, NOW + i * 1e-3)


def test_a_client_that_computes_gets_a_reactor_of_its_own(server: Server) -> None:
    busy, _peer1 = connect(server)
    worker, _peer2 = connect(server)
    requests(server, busy, thinks=False, count=1)  # (another client runs on reactor 0)
    requests(server, worker, thinks=True, count=_transport._PLACE_AFTER - 1)
    assert worker.reactor.index == 0  # not yet: it must show it, a few requests in a row
    requests(server, worker, thinks=True, count=1)
    assert worker.reactor.index == 1
    assert worker.session is not None and worker.session.home is server._reactors[1].home
    assert worker.fd in server._reactors[1].conns and worker.fd not in server._reactors[0].conns
    requests(server, worker, thinks=False, count=_transport._PLACE_AFTER)
    assert worker.reactor.index == 0  # back with the clients that call back to back
    assert busy.reactor.index == 0


def test_a_lone_computing_client_stays_where_it_is(server: Server) -> None:
    worker, _peer = connect(server)
    requests(server, worker, thinks=True, count=3 * _transport._PLACE_AFTER)
    assert worker.reactor.index == 0


def test_a_request_of_another_kind_breaks_the_streak(server: Server) -> None:
    busy, _peer1 = connect(server)
    worker, _peer2 = connect(server)
    requests(server, busy, thinks=False, count=1)
    for _ in range(3):
        requests(server, worker, thinks=True, count=_transport._PLACE_AFTER - 1)
        requests(server, worker, thinks=False, count=1)
    assert worker.reactor.index == 0


def test_a_reactor_thread_that_fails_stops_the_whole_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its clients must see their connections end, never wait on a thread that is gone."""
    srv = Server(
        _server_types(SyncManager._registry), None, b"advice", rebuild=RebuildProxy, reactors=2
    )
    real_run = _transport._Reactor.run

    def run_or_fail(reactor: _transport._Reactor) -> None:
        if reactor.index == 1:
            raise RuntimeError("a bug in reactor 1")
        real_run(reactor)

    monkeypatch.setattr(_transport._Reactor, "run", run_or_fail)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    with caplog.at_level(logging.CRITICAL, logger="procshare.server"):
        thread.start()
        assert srv.wait_stopped(30), "the server kept serving without its reactor"
        thread.join(30)
    assert "reactor 1 failed" in caplog.text
