"""Drive the server core directly: in-memory sessions, a fake clock, decoded replies."""

from __future__ import annotations

import itertools
from typing import Any

from procshare._client._proxies import BaseProxy, RebuildProxy
from procshare._manager import SyncManager, _server_types
from procshare._protocol import (
    NEED_DATA,
    Call,
    Cancel,
    ClientProtocol,
    Control,
    Create,
    Failure,
    Goodbye,
    LeaseAcquire,
    LeasedRead,
    Push,
    ReadSince,
    Release,
    Result,
    Retain,
    ServerProtocol,
    Watch,
)
from procshare._server._core import Core
from procshare._server._session import Session

KEY = b"core-tests"
ADDRESS = "/nonexistent/core-tests.sock"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Client:
    """One session of the core, with its own in-memory client protocol to read replies."""

    def __init__(self, world: World, pid: int, name: str) -> None:
        self.world = world
        server = ServerProtocol(KEY)
        self.proto = ClientProtocol(KEY, info={"pid": pid, "name": name})
        self.proto.receive_data(server.data_to_send())
        self.proto.next_event()
        server.receive_data(self.proto.data_to_send())
        server.next_event()
        self.proto.receive_data(server.data_to_send())
        self.proto.next_event()
        sid = world.core.new_session_id()
        self.session: Session = world.core.open_session(
            sid, server, {"pid": pid, "name": name}, world.clock.now
        )
        self.alive = True
        self.session.probe = lambda: self.alive
        self._ids = itertools.count(1)
        self.answers: dict[int, Any] = {}
        self.pushes: list[Push] = []

    # -- sending --------------------------------------------------------------------------------

    def send(self, msg: Any) -> int:
        self.world.core.dispatch(self.session, msg, self.world.clock.now)
        self.world.collect()
        return getattr(msg, "req_id", 0)

    def call(self, obj_id: int, method: str, *args: Any, owner: int = 0, **kwargs: Any) -> int:
        """Send a call; return its request id (see ``result``/``pending``)."""
        rid = next(self._ids)
        return self.send(Call(rid, obj_id, method, args, kwargs or None, owner))

    def do(self, obj_id: int, method: str, *args: Any, owner: int = 0, **kwargs: Any) -> Any:
        """Call and return the immediate outcome (raises the error); fails if it parked."""
        rid = self.call(obj_id, method, *args, owner=owner, **kwargs)
        return self.result(rid)

    def since(self, obj_id: int, read: str, known: Any, owner: int = 0) -> Any:
        """A ``ReadSince`` request's immediate outcome."""
        return self.result(self.send(ReadSince(next(self._ids), obj_id, read, known, owner)))

    def lease(self, obj_id: int, blocking: Any, timeout: Any, reads: Any, owner: int = 0) -> int:
        """Send a ``LeaseAcquire``; its request id."""
        rid = next(self._ids)
        return self.send(LeaseAcquire(rid, obj_id, blocking, timeout, reads, False, owner))

    def do_lease(self, obj_id: int, blocking: Any, timeout: Any, reads: Any, owner: int = 0) -> Any:
        """A ``LeaseAcquire``'s immediate outcome (raises the error); fails if it parked."""
        return self.result(self.lease(obj_id, blocking, timeout, reads, owner))

    def leased_read(self, obj_id: int, method: Any, args: Any, owner: int = 0) -> Any:
        """A ``LeasedRead`` request's immediate outcome."""
        return self.result(self.send(LeasedRead(next(self._ids), obj_id, method, args, owner)))

    def create(self, typeid: str, *args: Any, **kwargs: Any) -> int:
        rid = next(self._ids)
        self.send(Create(rid, typeid, args, kwargs or None, 0))
        proxy = self.result(rid)
        assert isinstance(proxy, BaseProxy)
        proxy._ref_pid = 0  # the harness tracks references by hand
        return proxy._id

    def control(self, command: str, *args: Any) -> Any:
        rid = next(self._ids)
        self.send(Control(rid, command, args))
        return self.result(rid)

    def watch(self, obj_id: int, snapshot: bool = False) -> tuple[int, Any]:
        rid = next(self._ids)
        self.send(Watch(rid, obj_id, {"snapshot": snapshot}))
        return rid, self.result(rid)

    def retain(self, *ids: int) -> None:
        self.send(Retain(ids))

    def release(self, *ids: int) -> None:
        self.send(Release(ids))

    # -- receiving ------------------------------------------------------------------------------

    def _read(self, data: bytes) -> None:
        self.proto.receive_data(data)
        while (event := self.proto.next_event()) is not NEED_DATA:
            if isinstance(event, (Result, Failure)):
                self.answers[event.req_id] = event
            elif isinstance(event, Push):
                self.pushes.append(event)

    def pending(self, rid: int) -> bool:
        return rid not in self.answers

    def result(self, rid: int) -> Any:
        if rid not in self.answers:
            raise AssertionError(f"request {rid} is still parked")
        event = self.answers.pop(rid)
        if isinstance(event, Failure):
            raise event.error
        return event.value

    def cancel(self, rid: int) -> None:
        """Abandon request ``rid`` (a signal interrupted the wait for it)."""
        self.send(Cancel(rid))

    def die(self) -> None:
        """The process is gone: the peer hangs up, the transport closes the session."""
        self.alive = False
        self.world.core.close_session(self.session, self.world.clock.now)
        self.world.collect()

    def exit(self) -> None:
        """The process exits on purpose: it says goodbye, then the connection ends."""
        self.send(Goodbye())
        self.die()


class World:
    """A core with SyncManager's types, a fake clock, and clients."""

    def __init__(self, release_delay: float = 5.0) -> None:
        self.clock = Clock()
        self.core = Core(
            _server_types(SyncManager._registry),
            address=ADDRESS,
            rebuild=RebuildProxy,
            release_delay=release_delay,
        )
        self.clients: list[Client] = []
        self._pids = itertools.count(100)

    def client(self, name: str = "") -> Client:
        client = Client(self, next(self._pids), name)
        self.clients.append(client)
        return client

    def collect(self) -> None:
        """Deliver what the core wrote to each session's client."""
        by_session = {c.session.id: c for c in self.clients}
        core = self.core
        while core.dirty:
            dirty, core.dirty = core.dirty, []
            core.answered.clear()  # (the transport sends to them last: no order to keep here)
            for session in dirty:
                data = b"".join(session.out)
                session.out.clear()
                client = by_session.get(session.id)
                if client is not None and data:
                    client._read(data)
        core.ended.clear()

    def advance(self, seconds: float) -> None:
        self.core.tick(self.clock.advance(seconds))
        self.collect()

    def run_jobs(self) -> None:
        """Run custom-class jobs as the transport's workers would, then finish them."""
        while self.core.jobs:
            job = self.core.jobs.popleft()
            job.run()
            self.core.finish(job, self.clock.now)
        self.collect()
