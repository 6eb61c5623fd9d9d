"""``procshare.connect(url)`` and ``$PROCSHARE_URL``: an unchanged script uses a running server."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import procshare

FORK = multiprocessing.get_context("fork")
SECRET = b"connect-secret"


@pytest.fixture
def server() -> Iterator[procshare.SyncManager]:
    with procshare.managers.SyncManager(
        address=("127.0.0.1", 0), authkey=SECRET, ctx=FORK
    ) as manager:
        yield manager


def test_connect_by_url(server: procshare.SyncManager) -> None:
    host, port = server.address
    for url in (f"tcp://{host}:{port}", f"{host}:{port}"):
        with procshare.connect(url, authkey=SECRET) as m:
            m.named("seen").list().append(url)
    assert server.named("seen").list()[:] == [f"tcp://{host}:{port}", f"{host}:{port}"]


def test_connect_reads_the_environment(
    server: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = server.address
    monkeypatch.setenv("PROCSHARE_URL", f"tcp://{host}:{port}")
    monkeypatch.setenv("PROCSHARE_AUTHKEY", SECRET.decode())
    m = procshare.connect()
    assert m.dict(a=1)["a"] == 1
    m.shutdown()  # disconnects only
    assert server.dict(b=2)["b"] == 2


def test_connect_errors_are_clear(
    server: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROCSHARE_URL", raising=False)
    with pytest.raises(ValueError, match=r"\$PROCSHARE_URL"):
        procshare.connect()
    host, port = server.address
    with pytest.raises(procshare.AuthenticationError):
        procshare.connect(f"{host}:{port}", authkey=b"wrong")
    with pytest.raises(ConnectionRefusedError):
        procshare.connect("127.0.0.1:1", authkey=SECRET)


UNCHANGED_SCRIPT = textwrap.dedent(
    """
    import procshare
    with procshare.Manager() as m:
        m.named("from-script").dict({"ran": True})
        print(type(m).__name__, sorted(m.names()))
    """
)


def test_an_unchanged_script_uses_the_server_named_in_the_environment(
    server: procshare.SyncManager,
) -> None:
    host, port = server.address
    env = dict(os.environ, PROCSHARE_URL=f"tcp://{host}:{port}", PROCSHARE_AUTHKEY="connect-secret")
    out = subprocess.run(
        [sys.executable, "-c", UNCHANGED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SyncManager ['from-script']"
    # Leaving its ``with`` block did not stop the server the script shared.
    assert server.named("from-script").dict()["ran"] is True
