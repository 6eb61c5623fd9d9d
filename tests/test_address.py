"""Addresses as typed, and private socket directories: a server killed with -9 leaves one
behind; the next removes it, and nothing else."""

from __future__ import annotations

import multiprocessing
import os
import pathlib

import pytest

from procshare._address import (
    parse_address,
    parse_command_line_address,
    private_unix_path,
    remove_stale_private_dirs,
)


def a_dead_pid() -> int:
    p = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    assert p.pid is not None
    return p.pid


def test_only_a_gone_servers_directory_holding_only_its_socket_is_removed(
    tmp_path: pathlib.Path,
) -> None:
    dead = a_dead_pid()
    stale = tmp_path / f"procshare-{dead}-abc"
    stale.mkdir()
    (stale / "server.sock").touch()
    empty = tmp_path / f"procshare-{dead}-def"
    empty.mkdir()
    cluttered = tmp_path / f"procshare-{dead}-ghi"
    cluttered.mkdir()
    (cluttered / "server.sock").touch()
    (cluttered / "notes.txt").touch()
    alive = tmp_path / f"procshare-{os.getpid()}-jkl"
    alive.mkdir()
    (alive / "server.sock").touch()
    unrelated = [tmp_path / "procshare-abc", tmp_path / f"procshare-bench-{dead}"]
    for d in unrelated:
        d.mkdir()
    removed = remove_stale_private_dirs(str(tmp_path))
    assert sorted(removed) == sorted([str(stale), str(empty)])
    assert not stale.exists() and not empty.exists()
    assert cluttered.exists() and alive.exists() and all(d.exists() for d in unrelated)


def test_a_private_path_is_named_after_its_server() -> None:
    path = private_unix_path()
    try:
        directory = os.path.basename(os.path.dirname(path))
        assert directory.startswith(f"procshare-{os.getpid()}-")
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    finally:
        os.rmdir(os.path.dirname(path))


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("127.0.0.1:47500", ("127.0.0.1", 47500)),
        ("localhost:5000", ("localhost", 5000)),
        (":5000", ("127.0.0.1", 5000)),
        ("[::1]:5000", ("::1", 5000)),
        ("tcp://127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("unix:///tmp/x.sock", "/tmp/x.sock"),
        ("/tmp/a:1", "/tmp/a:1"),  # a path (it has a /)
        ("./sock", "./sock"),
    ],
)
def test_host_port_on_the_command_line_means_tcp(typed: str, meant: object) -> None:
    assert parse_command_line_address(typed) == meant


def test_a_manager_address_string_stays_a_unix_path_as_in_the_stdlib() -> None:
    assert parse_address("127.0.0.1:47500") == "127.0.0.1:47500"
