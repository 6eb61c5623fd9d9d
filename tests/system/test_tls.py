"""TLS on TCP: the server presents a certificate (and may require clients' own); clients check
it; a plain client to a TLS server, and a TLS client to a plain one, fail clearly."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from tests._serve import serving

trustme = pytest.importorskip("trustme")

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    where = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {k: str(where / f"{k}.pem") for k in ("cert", "key", "ca", "client")}
    cert.private_key_and_cert_chain_pem.write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    ca.cert_pem.write_to_path(paths["ca"])
    client_cert = ca.issue_cert("client@example.org")
    client_cert.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


def trusting(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_manager(ca: Any, files: dict[str, str]) -> Iterator[procshare.SyncManager]:
    with procshare.managers.SyncManager(
        address=("127.0.0.1", 0),
        ctx=FORK,
        tls=trusting(ca),
        tls_cert=files["cert"],
        tls_key=files["key"],
    ) as manager:
        yield manager


def test_everything_works_over_tls(tls_manager: procshare.SyncManager) -> None:
    d = tls_manager.dict(a=1)
    d["big"] = "x" * 300_000  # (many TLS records each way)
    assert d["big"] == "x" * 300_000
    lst = tls_manager.list(range(50_000))
    assert lst[:] == list(range(50_000))
    q = tls_manager.Queue()
    q.put(("job", 1))
    assert q.get(timeout=10) == ("job", 1)
    with d.watch() as changes:  # (its own connection, with TLS too)
        d["b"] = 2
        assert changes.get(timeout=10).args == ("b", 2)


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """In a process of its own: its connections know nothing of this one's TLS settings."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_plain_client_to_a_tls_server_fails_clearly(tls_manager: procshare.SyncManager) -> None:
    host, port = tls_manager.address
    out = _run(
        """
        import sys, procshare
        try:
            procshare.connect(sys.argv[1], authkey=bytes.fromhex(sys.argv[2]), timeout=1)
        except procshare.ProcshareError as exc:
            print(type(exc).__name__, exc)
        """,
        f"tcp://{host}:{port}",
        bytes(tls_manager._authkey).hex(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ServerUnreachable") and "tls://" in out.stdout, out.stdout


def test_a_tls_client_to_a_plain_server_fails_clearly(ca: Any) -> None:
    with procshare.managers.SyncManager(address=("127.0.0.1", 0), ctx=FORK) as plain:
        host, port = plain.address
        with pytest.raises(procshare.ConnectionLost, match="is it a TLS server"):
            procshare.connect(
                f"tls://{host}:{port}", authkey=bytes(plain._authkey), tls=trusting(ca)
            )


def test_an_untrusted_certificate_is_refused(tls_manager: procshare.SyncManager) -> None:
    host, port = tls_manager.address
    out = _run(
        """
        import sys, procshare
        try:
            procshare.connect(sys.argv[1], authkey=bytes.fromhex(sys.argv[2]))  # system CAs
        except procshare.AuthenticationError as exc:
            print("refused:", exc)
        """,
        f"tls://{host}:{port}",
        bytes(tls_manager._authkey).hex(),
    )
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "not trusted" in out.stdout, out.stdout


CLIENT = """
import ssl, sys, procshare
context = ssl.create_default_context(cafile=sys.argv[3])
if len(sys.argv) > 4:
    context.load_cert_chain(sys.argv[4])
try:
    m = procshare.connect(sys.argv[1], authkey=sys.argv[2], tls=context, timeout=5)
    print("served", m.dict(x=1)["x"])
except procshare.ProcshareError as exc:
    print("refused", type(exc).__name__)
"""


def test_serve_with_tls_and_client_certificates(files: dict[str, str]) -> None:
    env = dict(os.environ, PROCSHARE_AUTHKEY="tls-secret")
    tls = ("--tls-cert", files["cert"], "--tls-key", files["key"], "--tls-ca", files["ca"])
    with serving("--address", "127.0.0.1:0", *tls, env=env) as served:
        url = served.url
        assert url.startswith("tls://127.0.0.1:"), url
        with_cert = _run(CLIENT, url, "tls-secret", files["ca"], files["client"])
        assert with_cert.stdout.strip() == "served 1", with_cert.stdout + with_cert.stderr
        without = _run(CLIENT, url, "tls-secret", files["ca"])
        assert without.stdout.startswith("refused"), without.stdout + without.stderr


def test_tls_options_are_checked() -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        procshare.managers.SyncManager(tls_cert="only-a-cert.pem")
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        procshare.managers.SyncManager(tls_ca="ca.pem")


def test_inspect_reaches_a_tls_server_by_pid(
    tls_manager: procshare.SyncManager, files: dict[str, str], tmp_path: pathlib.Path
) -> None:
    tls_manager.named("over-tls").dict()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "procshare",
            "inspect",
            str(tls_manager._process.pid),
            "--tls-ca",
            files["ca"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "name='over-tls'" in out.stdout


def test_garbage_to_a_tls_server_costs_only_that_connection(
    tls_manager: procshare.SyncManager,
) -> None:
    import random
    import socket

    d = tls_manager.dict(kept=1)
    rng = random.Random(20261203)
    for size in (1, 5, 100, 5000):
        with socket.create_connection(tls_manager.address, timeout=10) as sock:
            sock.sendall(bytes(rng.randrange(256) for _ in range(size)))
            sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while sock.recv(65536):  # until the server drops it
                    pass
    assert d.copy() == {"kept": 1}
    assert tls_manager.list([1])[:] == [1]  # and serves new work


def test_asyncio_speaks_tls_and_checks_the_certificate(
    tls_manager: procshare.SyncManager, ca: Any
) -> None:
    import asyncio

    import procshare.aio

    host, port = tls_manager.address
    key = bytes(tls_manager._authkey)
    d = tls_manager.dict(a=1)

    async def main() -> None:
        async with await procshare.aio.connect(
            f"tls://{host}:{port}", key, tls=trusting(ca)
        ) as client:
            shared = client.proxy(d)
            assert await shared.getitem("a") == 1
            await shared.setitem("b", 2)
        with pytest.raises(procshare.AuthenticationError, match="not trusted"):
            default = ssl.create_default_context()
            await procshare.aio.connect(f"tls://{host}:{port}", key, tls=default)
        with pytest.raises(procshare.ConnectionLost):  # a plain client to a TLS server
            client = await procshare.aio.connect(f"tcp://{host}:{port}", key, timeout=2)
            await client.stats()

    asyncio.run(main())
    assert d.copy() == {"a": 1, "b": 2}


def test_asyncio_refuses_tls_over_a_unix_socket() -> None:
    import asyncio

    import procshare.aio

    with procshare.Manager(ctx=FORK) as m:

        async def main() -> None:
            await procshare.aio.connect(m.address, tls=ssl.create_default_context())

        with pytest.raises(ValueError, match="TCP"):
            asyncio.run(main())
