"""Leases in the core: reads granted with a lock, and every way they end (see ``_leases``).

A lease is valid while its session's epoch in the page stays what the grant said; these tests
read the page as a client would and check when the server bumps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from procshare._leases import LeasePage

from .harness import Client, World


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    page = LeasePage.create("00" * 8)
    if page is None:
        pytest.skip("no memfd on this platform: leases are off")
    w.core.lease_page = page
    yield w
    page.close()


def _epoch(world: World, client: Client) -> int:
    page = world.core.lease_page
    assert page is not None
    return page.epoch(client.session.lease_slot)


def _lease(client: Client, lock: int, reads: tuple[Any, ...], owner: int = 1) -> int:
    return client.call(lock, "#LEASE", True, -1, reads, owner=owner)


def test_the_grant_carries_the_reads_made_when_it_is_granted(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 5)
    d = a.create("dict", {"k": "x", "big": [1, 2]})
    reads = ((v, "get", ()), (d, "__getitem__", ("k",)), (d, "get", ("nope", None)))
    ok, epoch, values = a.result(_lease(a, lock, reads))
    assert ok is True and epoch == _epoch(world, a)
    assert values == {0: 5, 1: "x", 2: None}

    # parked behind a holder: the reads are made when the lock is handed over, not before
    waiting = _lease(b, lock, reads, owner=2)
    assert b.pending(waiting)
    a.do(v, "set", 6)
    a.do(lock, "release", owner=1)
    _, epoch_b, values_b = b.result(waiting)
    assert values_b[0] == 6 and epoch_b == _epoch(world, b)


def test_reads_that_cannot_be_leased_are_left_out(world: World) -> None:
    a = world.client()
    lock = a.create("Lock")
    d = a.create("dict", {"big": [1, 2], "k": 1})
    reads = (
        (d, "__getitem__", ("big",)),  # a list: mutable, read it plainly
        (d, "__getitem__", ("missing",)),  # raises: the holder's own read raises it
        (d, "copy", ()),  # a whole copy is not a quick read
        (d, "__setitem__", ("k", 2)),  # not a read at all: never run
        (999_999, "get", ()),  # no such object
    )
    _, _, values = a.result(_lease(a, lock, reads))
    assert values == {}
    assert a.do(d, "__getitem__", "k") == 1


def test_any_change_to_a_leased_object_bumps_the_holders_epoch(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v, other = a.create("Lock"), a.create("Value", "i", 0), a.create("Value", "i", 0)
    _, epoch, _ = a.result(_lease(a, lock, ((v, "get", ()),)))
    b.do(other, "set", 1)  # not leased: nothing happens
    assert _epoch(world, a) == epoch
    b.do(v, "set", 1)  # another session's write ends the lease before its reply is sent
    assert _epoch(world, a) != epoch
    assert not a.session.leased and world.core.objects[v].leased is None


def test_the_holders_own_write_and_the_release_end_its_leases(world: World) -> None:
    a = world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 0)
    _, epoch, _ = a.result(_lease(a, lock, ((v, "get", ()),)))
    a.do(v, "set", 1)
    assert _epoch(world, a) != epoch
    a.do(lock, "release", owner=1)
    _, epoch, _ = a.result(_lease(a, lock, ((v, "get", ()),)))
    a.do(lock, "release", owner=1)
    assert _epoch(world, a) != epoch
    assert not a.session.leased and world.core.objects[v].leased is None


def test_freeing_the_lock_any_other_way_ends_the_leases(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 0)
    # released by another process (a plain Lock allows it)
    _, epoch, _ = a.result(_lease(a, lock, ((v, "get", ()),)))
    b.do(lock, "release", owner=2)
    assert _epoch(world, a) != epoch
    # its holder dying
    _, epoch, _ = b.result(_lease(b, lock, ((v, "get", ()),), owner=2))
    b.die()
    assert world.core.objects[v].leased is None


def test_an_rlock_released_once_of_twice_keeps_its_leases(world: World) -> None:
    a = world.client()
    rlock, v = a.create("RLock"), a.create("Value", "i", 0)
    _, epoch, _ = a.result(_lease(a, rlock, ((v, "get", ()),)))
    a.do(rlock, "acquire", owner=1)
    a.do(rlock, "release", owner=1)
    assert _epoch(world, a) == epoch
    a.do(rlock, "release", owner=1)
    assert _epoch(world, a) != epoch


def test_a_leasing_acquire_keeps_the_locks_semantics(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 0)
    reads = ((v, "get", ()),)
    assert a.result(_lease(a, lock, reads))[0] is True
    assert b.do(lock, "#LEASE", False, -1, reads, owner=2) is False  # non-blocking
    timed = b.call(lock, "#LEASE", True, 0.5, reads, owner=2)
    world.advance(1.0)
    assert b.result(timed) is False
    with pytest.raises(ValueError):
        b.do(lock, "#LEASE", False, 1.0, reads, owner=2)  # threading's own rule


@pytest.mark.parametrize(
    "args",
    [
        (True, -1),  # too few
        (True, -1, [(1, "get", ())]),  # a list
        (True, -1, ((1, "get"),)),
        (True, -1, (("1", "get", ()),)),
        (True, -1, ((1, "get", ([1],)),)),  # unhashable argument
        (True, -1, ((1, "get", (1.0,)),)),  # 1.0 == 1: could answer the wrong read
        (True, -1, tuple((1, "get", ()) for _ in range(9))),  # too many
    ],
)
def test_malformed_leasing_acquires_fail_without_acquiring(world: World, args: Any) -> None:
    a = world.client()
    lock = a.create("Lock")
    with pytest.raises(TypeError):
        a.do(lock, "#LEASE", *args)
    assert a.do(lock, "locked") is False


def test_objects_that_are_no_lock_of_ours_decline(world: World) -> None:
    a = world.client()
    sem, v = a.create("Semaphore"), a.create("Value", "i", 0)
    assert a.do(sem, "#LEASE", True, -1, ((v, "get", ()),)) is None
    assert a.do(sem, "get_value") == 1  # declined without acquiring
    world.core.lease_page = None  # leases off: even a lock declines
    lock = a.create("Lock")
    assert a.do(lock, "#LEASE", True, -1, ()) is None
    assert a.do(lock, "locked") is False


# -- #READ: a plain read that comes with a lease ------------------------------------------------


def test_a_read_comes_with_the_epoch_it_was_made_at(world: World) -> None:
    a = world.client()
    d, v = a.create("dict", {"k": "x", "n": 1}), a.create("Value", "i", 5)
    assert a.do(d, "#READ", "__getitem__", ("k",)) == (_epoch(world, a), "x")
    assert a.do(d, "#READ", "get", ("nope", 0)) == (_epoch(world, a), 0)
    assert a.do(d, "#READ", "__len__", ()) == (_epoch(world, a), 2)
    assert a.do(v, "#READ", "get", ()) == (_epoch(world, a), 5)
    assert world.core.objects[d].leased == {a.session}


def test_a_change_by_anyone_ends_a_read_lease_before_its_reply(world: World) -> None:
    a, b = world.client(), world.client()
    d, other = a.create("dict", {"k": 1}), a.create("dict")
    epoch, _ = a.do(d, "#READ", "__getitem__", ("k",))
    b.do(other, "__setitem__", "k", 2)  # not leased: nothing happens
    assert _epoch(world, a) == epoch
    b.do(d, "update", {"j": 0})
    assert _epoch(world, a) != epoch
    assert world.core.objects[d].leased is None
    epoch, _ = a.do(d, "#READ", "__getitem__", ("k",))
    a.do(d, "__setitem__", "k", 3)  # the reader's own write too
    assert _epoch(world, a) != epoch
    epoch, _ = a.do(d, "#READ", "__getitem__", ("k",))
    a.die()
    assert world.core.objects[d].leased is None


def test_a_mutable_value_is_read_without_a_lease(world: World) -> None:
    a = world.client()
    d = a.create("dict", {"big": [1, 2]})
    assert a.do(d, "#READ", "__getitem__", ("big",)) == (None, [1, 2])
    assert world.core.objects[d].leased is None


def test_a_read_that_raises_fails_as_the_plain_read_does(world: World) -> None:
    a = world.client()
    d = a.create("dict")
    with pytest.raises(KeyError):
        a.do(d, "#READ", "__getitem__", ("missing",))
    assert world.core.objects[d].leased is None


@pytest.mark.parametrize(
    "args",
    [
        ("__setitem__", ("k", 1)),  # a write: never made
        ("copy", ()),  # a whole copy is no quick read
        ("get", ("k", 0.0)),  # arguments that compare equal across types
        ("get", (["unhashable"],)),
        ("__getitem__",),  # malformed
        ("__getitem__", "k"),
        (1, ()),
        (["unhashable"], ()),
    ],
)
def test_what_cannot_be_leased_is_declined_without_reading(world: World, args: Any) -> None:
    a = world.client()
    d = a.create("dict", {"k": 0})
    assert a.do(d, "#READ", *args) is None
    assert a.do(d, "__getitem__", "k") == 0 and world.core.objects[d].leased is None


def test_reads_are_not_leased_where_leases_are_off(world: World) -> None:
    a = world.client()
    world.core.lease_page = None
    d = a.create("dict", {"k": 1})
    assert a.do(d, "#READ", "__getitem__", ("k",)) == (None, 1)
    lock = a.create("Lock")
    assert a.do(lock, "#READ", "locked", ()) is None  # no leasable read of a lock


def test_disposing_of_an_object_ends_its_leases(world: World) -> None:
    """A read of a disposed object must fail (ObjectNotFound), not be answered by a lease."""
    a = world.client()
    d = a.create("dict", {"k": 1})
    epoch, _ = a.do(d, "#READ", "__getitem__", ("k",))
    a.release(d)
    world.advance(10)
    assert d not in world.core.objects
    assert _epoch(world, a) != epoch and not a.session.leased
