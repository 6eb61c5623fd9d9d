"""A real ``redis-server`` for the Redis backend's tests, on a free loopback port.

Skipped where ``redis-server`` is not installed, unless ``$PROCSHARE_TEST_REDIS=required``
(CI sets it, and installs the server: ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

import procshare


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a redis-server of its own (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("PROCSHARE_TEST_REDIS") == "required":
            pytest.fail("redis-server is not installed ($PROCSHARE_TEST_REDIS=required)")
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    workdir = tempfile.mkdtemp(prefix="procshare-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The server's URL with a short session ttl (deaths are noticed within a second)."""
    return f"{redis_server}?session_ttl=1&release_delay=0.2"


@pytest.fixture
def rm(redis_url: str) -> Iterator[procshare.SyncManager]:
    """A manager on Redis, in a namespace of its own (deleted at the end)."""
    m = procshare.SyncManager(address=redis_url)
    m.start()
    yield m
    m.shutdown()


@pytest.fixture
def raw(redis_server: str) -> Iterator[object]:
    """A plain redis-py client of the same server (to look at the keys)."""
    import redis

    port = int(redis_server.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    client = redis.Redis(host="127.0.0.1", port=port)
    yield client
    client.close()
