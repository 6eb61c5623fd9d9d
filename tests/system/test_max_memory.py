"""``max_memory``: changes past the budget are refused with a clear error; the server, its
data and every other client go on (issue 16: ``lst *= 10**9`` made a server allocate 22 GiB)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from typing import Any

import pytest

import procshare
from procshare import MemoryLimitError
from procshare._server._memory import describe_size, parse_size
from tests._serve import serving

FORK = multiprocessing.get_context("fork")
BUDGET = 64 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.fixture
def m() -> Any:
    with procshare.Manager(ctx=FORK, max_memory=BUDGET) as manager:
        yield manager


def memory(m: Any) -> dict[str, Any]:
    stats: dict[str, Any] = m.stats()["memory"]
    return stats


def test_one_call_that_would_allocate_without_bound_is_refused(m: Any) -> None:
    lst = m.list([1, 2, 3])
    with pytest.raises(MemoryLimitError, match="max_memory"):
        lst *= 10**9
    assert lst[:] == [1, 2, 3]  # unchanged
    lst.append(4)  # and the server is not full: one huge request refused left it far from it
    assert lst[:] == [1, 2, 3, 4]
    assert memory(m)["refusals"] == 1 and not memory(m)["full"]


def test_a_full_server_refuses_additions_serves_reads_and_removals_then_recovers(
    m: Any,
) -> None:
    d = m.dict()
    other = m.list(["kept"])
    added = 0
    with pytest.raises(MemoryLimitError):
        for added in range(2 * BUDGET // CHUNK):  # bounded: twice the budget, at most
            d[added] = bytes(CHUNK)
    assert BUDGET // CHUNK // 2 < added <= BUDGET // CHUNK + 1
    # (Sets are posted: the refusal is raised by a later call, and those made meanwhile
    # were refused too; what was stored is what came first, whole.)
    stored = len(d)
    assert BUDGET // CHUNK // 2 < stored <= added
    assert d.keys() == list(range(stored))
    assert memory(m)["full"]
    with pytest.raises(MemoryLimitError, match="refused until some is freed"):
        other.append("more")
    with pytest.raises(MemoryLimitError):
        m.dict()  # creating an object adds data too
    assert d[0] == bytes(CHUNK) and other[:] == ["kept"]  # reads are served
    assert len(d) == stored
    d.clear()  # removals too
    for _ in range(1000):  # bounded: each call lets the server look again
        if not memory(m)["full"]:
            break
    assert not memory(m)["full"]
    other.append("more")
    assert other[:] == ["kept", "more"]


def test_a_bad_max_memory_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="not a size"):
        procshare.Manager(max_memory="lots")
    with pytest.raises(ValueError, match="positive"):
        procshare.Manager(max_memory=0)
    with pytest.raises(TypeError):
        procshare.Manager(max_memory=True)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("512MiB", 512 * 1024**2),
        ("2GB", 2 * 1000**3),
        ("1.5g", 1_500_000_000),
        (" 64 kib ", 64 * 1024),
    ],
)
def test_sizes_are_read_as_people_write_them(text: int | str, size: int) -> None:
    assert parse_size(text) == size


def test_sizes_are_shown_as_people_read_them() -> None:
    assert describe_size(64 * 1024**2) == "64 MiB"
    assert describe_size(1536) == "1.5 KiB"
    assert describe_size(10) == "10 B"


def test_serve_max_memory(tmp_path: Any) -> None:
    path = str(tmp_path / "mem.sock")
    env = dict(os.environ, PROCSHARE_AUTHKEY="mem")
    bad = subprocess.run(
        [sys.executable, "-m", "procshare", "serve", "--max-memory", "lots"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode != 0 and "not a size" in bad.stderr
    with serving("--address", path, "--max-memory", "64MiB", env=env):

        class Client(procshare.BaseManager):
            pass

        Client.register("list")
        client = Client(address=path, authkey=b"mem")
        client.connect()
        lst = client.list([1])  # type: ignore[attr-defined]
        with pytest.raises(MemoryLimitError):
            lst.extend(range(10**9))  # (8 GB at once: refused by the kernel's limit)
        assert lst[:] == [1]
