"""Shared fixtures: managers per start method, child-process helpers."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procshare

START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS, scope="module")
def ctx(request: pytest.FixtureRequest) -> Any:
    """A multiprocessing context for each start method whose behaviour differs."""
    return multiprocessing.get_context(request.param)


@pytest.fixture(scope="module")
def manager(ctx: Any) -> Iterator[procshare.SyncManager]:
    """A procshare manager whose server (and children) use ``ctx``'s start method."""
    with procshare.Manager(ctx=ctx, release_delay=0.5) as m:
        yield m


@pytest.fixture(scope="module")
def stdlib_manager(ctx: Any) -> Iterator[Any]:
    """The standard library's manager, with ``ctx``: the oracle where it defines behaviour."""
    with ctx.Manager() as m:
        yield m


@pytest.fixture
def run(ctx: Any) -> Callable[..., None]:
    """Run ``target(*args)`` in a child process of ``ctx`` and check it exited cleanly."""

    def run_child(target: Callable[..., Any], *args: Any, timeout: float = 60) -> None:
        p = ctx.Process(target=target, args=args)
        p.start()
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"{target.__name__} did not finish in {timeout} s")
        assert p.exitcode == 0, f"{target.__name__} exited with {p.exitcode}"

    return run_child


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


def pytest_configure(config: pytest.Config) -> None:
    # Children started by the tests must find the tests package.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
