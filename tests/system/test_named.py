"""Named objects: ``m.named(name).<factory>(...)`` gets or creates; a name lives until deleted."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
import procshare.managers
from tests._serve import serving

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK, release_delay=0.05) as manager:
        yield manager


def _wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_first_call_creates_and_later_ones_get_the_same_object(
    m: procshare.SyncManager,
) -> None:
    config = m.named("config").dict({"mode": "run"})
    again = m.named("config").dict({"mode": "ignored"})  # the initial value is not used again
    assert again.copy() == {"mode": "run"}
    again["seen"] = True
    assert config["seen"] is True
    assert m.named("n").Value("i", 3).value == m.named("n").Value("i", 9).value == 3
    assert m.names() == {"config": "dict", "n": "Value"}


def test_a_name_of_another_type_is_a_clear_error(m: procshare.SyncManager) -> None:
    m.named("jobs").Queue()
    with pytest.raises(procshare.NameTakenError, match="'jobs' belongs to a 'Queue'"):
        m.named("jobs").dict()
    with pytest.raises(TypeError):  # (it is one)
        m.named("jobs").Lock()
    assert m.names() == {"jobs": "Queue"}


def test_bad_names_and_unknown_types_are_refused(m: procshare.SyncManager) -> None:
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty str"):
            m.named(bad)  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="teleport"):
        m.named("x").teleport()
    with pytest.raises(KeyError):
        m.delete("never-named")


def _creator(address: Any, authkey: bytes) -> None:
    m = procshare.managers.SyncManager(address=address, authkey=authkey)
    m.connect()
    m.named("kept").list([1, 2])
    m.list([3, 4])  # anonymous: freed once this process is gone


def test_a_named_object_outlives_its_creator_and_an_anonymous_one_does_not(
    m: procshare.SyncManager,
) -> None:
    p = FORK.Process(target=_creator, args=(m.address, bytes(m._authkey)))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    # Wait until the anonymous list (the only other object) is freed: the creator is gone.
    _wait_until(lambda: len(m.stats()["objects"]) == 1, "the anonymous list to be freed")
    assert m.named("kept").list()[:] == [1, 2]


def test_delete_leaves_the_object_to_its_proxies(m: procshare.SyncManager) -> None:
    lock = m.named("db").Lock()
    lock.acquire()
    m.delete("db")
    assert m.names() == {}
    lock.release()  # still there: this proxy holds it
    fresh = m.named("db").Lock()  # the name is free: a new lock
    assert fresh._id != lock._id
    del lock, fresh
    _wait_until(lambda: len(m.stats()["objects"]) == 1, "the deleted lock to be freed")


class Employee:
    def __init__(self, name: str, salary: int) -> None:
        time.sleep(0.05)  # slow: creates from many processes overlap
        self.name, self.salary = name, salary

    def get(self) -> tuple[str, int]:
        return self.name, self.salary


class Staff(procshare.managers.BaseManager):
    pass


Staff.register("Employee", Employee)


def _hire(address: Any, authkey: bytes, out: Any) -> None:
    staff = Staff(address=address, authkey=authkey)
    staff.connect()
    emp = staff.named("emp").Employee("zhangsan", os.getpid())
    out.put((emp._id, emp.get()))


def test_processes_racing_to_create_a_registered_type_share_one_object() -> None:
    with Staff(ctx=FORK) as staff:
        out = FORK.SimpleQueue()
        procs = [
            FORK.Process(target=_hire, args=(staff.address, bytes(staff._authkey), out))
            for _ in range(4)
        ]
        for p in procs:
            p.start()
        got = [out.get() for _ in procs]
        for p in procs:
            p.join(30)
        assert len({obj_id for obj_id, _ in got}) == 1, got
        assert len({value for _, value in got}) == 1, got
        assert staff.names() == {"emp": "Employee"}


PRODUCER = textwrap.dedent(
    """
    import sys
    from procshare.managers import SyncManager
    m = SyncManager(address=sys.argv[1], authkey=b"named-secret")
    m.connect()
    jobs = m.named("jobs").Queue()
    for i in range(5):
        jobs.put(i)
    m.named("config").dict({"mode": "batch"})
    """
)

CONSUMER = textwrap.dedent(
    """
    import sys
    from procshare.managers import SyncManager
    m = SyncManager(address=sys.argv[1], authkey=b"named-secret")
    m.connect()
    jobs = m.named("jobs").Queue()
    print([jobs.get(timeout=10) for _ in range(5)], m.named("config").dict()["mode"])
    """
)


def test_two_unrelated_programs_share_a_queue_through_serve(tmp_path: pathlib.Path) -> None:
    sock = str(tmp_path / "named.sock")
    env = dict(os.environ, PROCSHARE_AUTHKEY="named-secret")
    with serving("--address", f"unix://{sock}", env=env):
        produced = subprocess.run(
            [sys.executable, "-c", PRODUCER, sock], capture_output=True, text=True, timeout=60
        )
        assert produced.returncode == 0, produced.stderr  # it has exited: nobody holds a proxy
        consumed = subprocess.run(
            [sys.executable, "-c", CONSUMER, sock], capture_output=True, text=True, timeout=60
        )
        assert consumed.returncode == 0, consumed.stderr
        assert consumed.stdout.strip() == "[0, 1, 2, 3, 4] batch"
