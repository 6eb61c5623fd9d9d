"""Unrelated programs sharing objects by address and authkey (the stdlib docs' remote pattern)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

SERVER = textwrap.dedent(
    """
    import queue, sys
    from procshare.managers import BaseManager
    jobs = queue.Queue()
    shared = {}
    class QueueManager(BaseManager):
        pass
    QueueManager.register("get_queue", callable=lambda: jobs)
    QueueManager.register("get_dict", callable=lambda: shared,
                          proxytype=__import__("procshare").managers.DictProxy)
    address = sys.argv[1]
    if address.startswith("tcp:"):
        address = ("127.0.0.1", int(address[4:]))
    m = QueueManager(address=address, authkey=b"abracadabra")
    server = m.get_server()
    print("ready", flush=True)
    server.serve_forever()
    """
)

CLIENT = textwrap.dedent(
    """
    import sys
    from procshare.managers import BaseManager
    class QueueManager(BaseManager):
        pass
    QueueManager.register("get_queue")
    QueueManager.register("get_dict")
    address = sys.argv[1]
    if address.startswith("tcp:"):
        address = ("127.0.0.1", int(address[4:]))
    m = QueueManager(address=address, authkey=b"abracadabra")
    m.connect()
    q = m.get_queue()
    d = m.get_dict()
    if sys.argv[2] == "put":
        q.put("hello")
        d["from"] = "producer"
    else:
        print(q.get(timeout=30), d["from"], q.get(timeout=30) if False else "", flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_unrelated_programs_share_a_queue_and_a_dict(
    tmp_path: os.PathLike[str], transport: str
) -> None:
    address = str(tmp_path / "q.sock") if transport == "unix" else f"tcp:{_free_port()}"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        put = subprocess.run(
            [sys.executable, "-c", CLIENT, address, "put"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert put.returncode == 0, put.stderr
        get = subprocess.run(
            [sys.executable, "-c", CLIENT, address, "get"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert get.returncode == 0, get.stderr
        assert get.stdout.split() == ["hello", "producer"]
    finally:
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


def test_a_stale_socket_file_does_not_block_a_new_server(tmp_path: os.PathLike[str]) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # a file left behind by a crashed server; nobody listens on it
    dead.close()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        started = time.monotonic()
        put = subprocess.run(
            [sys.executable, "-c", CLIENT, path, "put"], capture_output=True, text=True, timeout=60
        )
        assert put.returncode == 0, put.stderr
        assert time.monotonic() - started < 60
    finally:
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
