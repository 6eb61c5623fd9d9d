"""The server's own cost per call, in one process, with nobody asleep.

A real server (transport and core) serves one connection of a socketpair from this very
thread: each request is written, the server takes one turn (poll, read, decode, dispatch,
reply, send) and the reply is read back. Nothing waits for another process. The bare socket work
(the same requests and replies written and read, decoded the same way, with no server in
between) is timed too and taken off: what is left is the server's own work per request, its
Python and its poll. It is the steadiest figure these noisy machines give: use it to judge a
change to the server's hot path.

    python benchmarks/server_path.py [--calls 50000] [--rounds 5] [--profile 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import time
from collections.abc import Callable
from typing import Any

from procshare._client._proxies import RebuildProxy
from procshare._manager import SyncManager, _server_types
from procshare._protocol import NEED_DATA, ClientProtocol, Create, Result, ServerProtocol
from procshare._server._transport import Server, _Conn

KEY = b"server-path"


class Rig:
    """A server and one authenticated connection to it, driven turn by turn."""

    def __init__(self) -> None:
        self.server = Server(
            _server_types(SyncManager._registry), None, KEY, rebuild=RebuildProxy, reactors=1
        )
        self.server.core.bind_loop_thread()
        self.reactor = self.server._reactors[0]
        self.reactor.open()
        self.poll = self.reactor.poller.waiter()
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        sid = self.server.core.new_session_id()
        proto = ServerProtocol(KEY, info={"session": sid})
        conn = _Conn(ours, proto, sid, time.monotonic(), self.reactor)
        self.reactor.conns[conn.fd] = conn
        self.reactor.poller.register(conn.fd)
        self.client = ClientProtocol(KEY)
        self.client.receive_data(conn.proto.data_to_send())
        self.client.next_event()  # HELLO; LOGIN queued
        self.peer.sendall(self.client.data_to_send())
        self.turn()
        self.client.receive_data(self.peer.recv(65536))
        self.client.next_event()  # Ready

    def turn(self) -> None:
        """One turn of the server's loop, as ``Server._loop`` takes it when a request is in."""
        server, core = self.server, self.server.core
        now = time.monotonic()
        for fd, _mask in self.poll(0.0):
            server._on_readable(self.reactor.conns[fd], now)
        if core.dirty:
            server._flush()
        core.tick(now)

    def request(self, frame: bytes) -> Any:
        self.peer.sendall(frame)
        self.turn()
        self.client.receive_data(self.peer.recv(65536))
        event = self.client.next_event()
        assert self.client.next_event() is NEED_DATA
        return event

    def create(self, typeid: str) -> int:
        event = self.request(self.client.send(Create(1, typeid, (), None, 0)))
        assert type(event) is Result, event
        proxy = event.value
        proxy._close = lambda: None  # the rig's session lives as long as the script
        return int(proxy._id)


def _time(run: Callable[[], None], calls: int, rounds: int) -> float:
    """Best of ``rounds``: microseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, metavar="TOP", help="also show cProfile's top")
    args = parser.parse_args()

    rig = Rig()
    objects = {"dict": rig.create("dict"), "Lock": rig.create("Lock"), "Queue": rig.create("Queue")}
    # each case: (object, its calls in turn as (method, args) of call i); a lock's and a queue's
    # calls alternate (acquire, release; put, get) so that none waits
    cases: dict[str, tuple[str, Callable[[int], tuple[str, tuple[Any, ...]]]]] = {
        "dict set": ("dict", lambda i: ("__setitem__", (i & 1023, i))),
        "dict get": ("dict", lambda i: ("__getitem__", (i & 1023,))),
        "Lock acquire/release": (
            "Lock",
            lambda i: ("acquire", (True,)) if i % 2 == 0 else ("release", ()),
        ),
        "Queue put/get": (
            "Queue",
            lambda i: ("put", (i, True, None)) if i % 2 == 0 else ("get", ()),
        ),
    }
    encode = rig.client.encode_call
    conn = next(iter(rig.reactor.conns.values()))
    server_end, server_proto = conn.sock, conn.proto
    print(f"{'call':22s} {'round trip':>11s} {'bare sockets':>13s} {'server work':>12s}  (us/call)")
    for name, (kind, make_call) in cases.items():
        obj_id = objects[kind]
        frames = [encode(i + 10, obj_id, *make_call(i), None, 0) for i in range(args.calls & ~1)]

        def served(frames: list[bytes] = frames) -> None:
            for frame in frames:
                rig.request(frame)

        replies = [server_proto.encode_result(i + 10, None) for i in range(len(frames))]

        def bare(frames: list[bytes] = frames, replies: list[bytes] = replies) -> None:
            # the same requests, a reply each, the same client-side decoding: no server
            peer, client = rig.peer, rig.client
            for frame, reply in zip(frames, replies, strict=True):
                peer.sendall(frame)
                server_end.recv(65536)
                server_end.send(reply)
                client.receive_data(peer.recv(65536))
                client.next_event()
                client.next_event()

        served(frames[:2000])  # warm up (and fill the dict for the gets)
        total = _time(served, len(frames), args.rounds)
        socket_work = _time(bare, len(frames), args.rounds)
        print(f"{name:22s} {total:11.2f} {socket_work:13.2f} {total - socket_work:12.2f}")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            served(frames[: min(len(frames), 20_000)])
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
    rig.server.close()


if __name__ == "__main__":
    main()
