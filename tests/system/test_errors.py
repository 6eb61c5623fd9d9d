"""Errors users meet across real processes: wrong keys, dead servers, unpicklable values."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import procshare
from procshare.managers import BaseManager
from tests import _children as children


def test_wrong_authkey_is_an_authentication_error() -> None:
    with procshare.Manager() as m:
        intruder = BaseManager(address=m.address, authkey=b"not the key")
        with pytest.raises(procshare.AuthenticationError) as info:
            intruder.connect()
        assert isinstance(info.value, procshare.ProcshareError)
        assert isinstance(info.value, multiprocessing.AuthenticationError)
        d = m.dict(ok=1)  # the server carries on
        assert d["ok"] == 1


def test_an_unpicklable_argument_is_a_clear_error_and_nothing_is_lost() -> None:
    with procshare.Manager() as m:
        d = m.dict(kept=1)
        lock = threading.Lock()
        with pytest.raises(procshare.SerializationError, match="lock") as info:
            d["bad"] = lock
        assert isinstance(info.value, TypeError)  # what the stdlib raised
        assert dict(d) == {"kept": 1}
        d["good"] = 2
        assert dict(d) == {"kept": 1, "good": 2}


def test_a_value_the_server_cannot_import_is_refused_without_harm() -> None:
    script = textwrap.dedent(
        """
        import sys, procshare
        from procshare.managers import BaseManager
        address, key = sys.argv[1], bytes.fromhex(sys.argv[2])
        class OnlyHere:  # defined in this client only: the server cannot unpickle it
            pass
        m = BaseManager(address=address, authkey=key)
        BaseManager.register("dict")
        m.connect()
        d = m.dict()
        try:
            d["x"] = OnlyHere()
        except procshare.SerializationError as exc:
            print("refused:", type(exc).__name__)
        d["y"] = 1
        print(dict(d))
        """
    )
    with procshare.Manager() as m:
        out = subprocess.run(
            [sys.executable, "-c", script, m.address, m._authkey.hex()],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["refused: SerializationError", "{'y': 1}"]


def _env() -> dict[str, str]:
    return dict(os.environ)


def test_calls_after_the_server_died_fail_promptly() -> None:
    m = procshare.Manager()
    d = m.dict(a=1)
    os.kill(m._process.pid, signal.SIGKILL)
    m._process.join(10)
    started = time.monotonic()
    with pytest.raises(procshare.ConnectionLost):
        d["a"]
    with pytest.raises(procshare.ConnectionLost):
        d["b"] = 2  # and again: no hang, no half-applied call
    assert time.monotonic() - started < 10
    m.shutdown()


def test_a_blocked_call_is_woken_when_the_server_dies() -> None:
    m = procshare.Manager()
    lock = m.Lock()
    lock.acquire()
    results: Any = multiprocessing.get_context("fork").SimpleQueue()
    p = multiprocessing.get_context("fork").Process(
        target=children.blocked_call_reports, args=(lock, results)
    )
    p.start()
    time.sleep(0.5)  # the child is now parked on the server
    os.kill(m._process.pid, signal.SIGKILL)
    p.join(20)
    assert p.exitcode == 0
    assert results.get() == "ConnectionLost"
    m.shutdown()


def test_manager_state_errors() -> None:
    m = procshare.managers.SyncManager()
    with pytest.raises(procshare.ManagerStateError):
        m.dict()
    m.start()
    with pytest.raises(procshare.ManagerStateError, match="Already started"):
        m.start()
    m.shutdown()
    with pytest.raises(procshare.ManagerStateError, match="shut down"):
        m.dict()
    with pytest.raises(procshare.ManagerStateError):
        m.start()


def test_start_reports_a_bad_address_from_the_child() -> None:
    m = procshare.managers.SyncManager(address="/nonexistent-dir/for/sure.sock")
    with pytest.raises(OSError):
        m.start()


def test_bad_initializer_and_serializer() -> None:
    with pytest.raises(TypeError):
        procshare.managers.SyncManager().start(initializer=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="serializer"):
        procshare.managers.SyncManager(serializer="json")


def test_connecting_to_nothing_is_a_connection_error() -> None:
    m = BaseManager(address="/tmp/procshare-nobody-listens-here.sock", authkey=b"k")
    with pytest.raises(ConnectionError):
        m.connect()


def test_pickling_a_manager_is_refused() -> None:
    import pickle

    with procshare.Manager() as m, pytest.raises(TypeError):
        pickle.dumps(m)


def test_a_message_over_the_frame_limit_is_refused_before_sending() -> None:
    with procshare.Manager(max_frame=64 * 1024) as m:
        d = m.dict(kept=1)
        with pytest.raises(procshare.FrameTooLarge):
            d["big"] = b"x" * (128 * 1024)
        d["small"] = b"x" * 1024
        assert sorted(d.keys()) == ["kept", "small"]


def test_a_server_bug_met_by_one_request_drops_that_connection_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception the server did not expect (a bug) must not stop it for everyone: the
    client that met it loses its connection, the others go on."""
    from procshare._server._core import Core

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(Core, "_read_leasing", broken)  # the forked server inherits it
    with procshare.Manager(ctx=multiprocessing.get_context("fork")) as m:
        d = m.dict(k=1)
        other = multiprocessing.get_context("fork").Process(
            target=children.set_item, args=(d, "from_child", 1)
        )
        assert d["k"] == 1  # a plain read: leases are asked from the second time on
        if d._channel().leases is None:
            pytest.skip("leases are off on this platform: no #READ to break")
        with pytest.raises(procshare.ConnectionLost):
            d["k"]  # the #READ meets the bug
        other.start()
        other.join(30)
        assert other.exitcode == 0
        fresh = m.dict()  # and this process reconnects
        fresh["x"] = 2
        assert fresh.copy() == {"x": 2} and d.copy() == {"k": 1, "from_child": 1}


def test_a_connection_over_the_limit_is_refused_and_the_others_go_on() -> None:
    with procshare.managers.SyncManager(max_connections=1) as m:
        d = m.dict(a=1)  # this process's one connection
        code = (
            "import sys, procshare.managers as pm\n"
            "m = pm.SyncManager(address=sys.argv[1], authkey=bytes.fromhex(sys.argv[2]))\n"
            "try:\n"
            "    m.connect()\n"
            "except procshare.ServerBusy as exc:\n"
            "    print('busy:', exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", "import procshare\n" + code, m.address, bytes(m._authkey).hex()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("busy:") and "the most it allows" in out.stdout
        assert isinstance(procshare.ServerBusy("x"), ConnectionError)
        assert d["a"] == 1  # the connection it serves goes on
    with pytest.raises(ValueError, match="max_connections"):
        procshare.managers.SyncManager(max_connections=0)
