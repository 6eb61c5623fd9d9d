"""Leases in the core: reads leased with a grant or a ``LeasedRead``, and every way they end.

A lease is valid while its object's epoch in the page stays what the grant said (see
``_leases``); these tests read the page as a client would and check when the server bumps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from procshare._leases import LeasePage, slot_of

from .harness import Client, World


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    page = LeasePage.create("00" * 8)
    if page is None:
        pytest.skip("no memfd on this platform: leases are off")
    w.core.leasing.page = page
    yield w
    page.close()


def _epoch(world: World, obj: int) -> int:
    page = world.core.leasing.page
    assert page is not None
    return page.epoch(slot_of(obj))


def _lease(client: Client, lock: int, reads: tuple[Any, ...], owner: int = 1) -> int:
    return client.lease(lock, True, -1, reads, owner=owner)


# -- reads granted with a lock --------------------------------------------------------------------


def test_the_grant_carries_the_reads_made_when_it_is_granted(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 5)
    d = a.create("dict", {"k": "x", "big": [1, 2]})
    reads = ((v, "get", ()), (d, "__getitem__", ("k",)), (d, "get", ("nope", None)))
    ok, values = a.result(_lease(a, lock, reads))
    assert ok is True
    assert values == {
        0: (_epoch(world, v), 5),
        1: (_epoch(world, d), "x"),
        2: (_epoch(world, d), None),
    }

    # parked behind a holder: the reads are made when the lock is handed over, not before
    waiting = _lease(b, lock, reads, owner=2)
    assert b.pending(waiting)
    a.do(v, "set", 6)
    a.do(lock, "release", owner=1)
    _, values_b = b.result(waiting)
    assert values_b[0] == (_epoch(world, v), 6)


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
    _, values = a.result(_lease(a, lock, reads))
    assert values == {}
    assert a.do(d, "__getitem__", "k") == 1
    assert not world.core.objects[d].leased


def test_a_change_ends_the_leases_on_that_object_only(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v, other = a.create("Lock"), a.create("Value", "i", 0), a.create("Value", "i", 0)
    _, values = a.result(_lease(a, lock, ((v, "get", ()), (other, "get", ()))))
    epoch, epoch_other = values[0][0], values[1][0]
    b.do(other, "set", 1)  # another session's write ends the lease on it, before its reply
    assert _epoch(world, other) != epoch_other
    assert _epoch(world, v) == epoch  # and not the lease on v
    a.do(v, "set", 1)  # the holder's own write too
    assert _epoch(world, v) != epoch


def test_freeing_the_lock_ends_no_lease(world: World) -> None:
    """A lease depends on its object only: released, passed on, its holder dead, the lock
    leaves the values leased with it valid until they change."""
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 0)
    _, values = a.result(_lease(a, lock, ((v, "get", ()),)))
    epoch = values[0][0]
    a.do(lock, "release", owner=1)
    assert b.result(_lease(b, lock, ((v, "get", ()),), owner=2))[1] == {0: (epoch, 0)}
    b.die()
    assert _epoch(world, v) == epoch
    a.do(v, "set", 2)
    assert _epoch(world, v) != epoch


def test_a_leasing_acquire_keeps_the_locks_semantics(world: World) -> None:
    a, b = world.client(), world.client()
    lock, v = a.create("Lock"), a.create("Value", "i", 0)
    reads = ((v, "get", ()),)
    assert a.result(_lease(a, lock, reads))[0] is True
    assert b.do_lease(lock, False, -1, reads, owner=2) is False  # non-blocking
    timed = b.lease(lock, True, 0.5, reads, owner=2)
    world.advance(1.0)
    assert b.result(timed) is False
    with pytest.raises(ValueError):
        b.do_lease(lock, False, 1.0, reads, owner=2)  # threading's own rule
    rlock = a.create("RLock")
    assert a.result(_lease(a, rlock, reads))[0] is True
    assert a.result(_lease(a, rlock, reads))[0] is True  # reentrant, per owner
    assert b.do_lease(rlock, False, -1, reads, owner=2) is False


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
        a.do_lease(lock, *args)
    assert a.do(lock, "locked") is False


def test_objects_that_are_no_lock_of_ours_decline(world: World) -> None:
    a = world.client()
    sem, v = a.create("Semaphore"), a.create("Value", "i", 0)
    assert a.do_lease(sem, True, -1, ((v, "get", ()),)) is None
    assert a.do(sem, "get_value") == 1  # declined without acquiring
    world.core.leasing.page = None  # leases off: even a lock declines
    lock = a.create("Lock")
    assert a.do_lease(lock, True, -1, ()) is None
    assert a.do(lock, "locked") is False


# -- LeasedRead: a plain read that comes with a lease --------------------------------------


def test_a_read_comes_with_the_epoch_it_was_made_at(world: World) -> None:
    a = world.client()
    d, v = a.create("dict", {"k": "x", "n": 1}), a.create("Value", "i", 5)
    assert a.leased_read(d, "__getitem__", ("k",)) == (_epoch(world, d), "x")
    assert a.leased_read(d, "get", ("nope", 0)) == (_epoch(world, d), 0)
    assert a.leased_read(d, "__len__", ()) == (_epoch(world, d), 2)
    assert a.leased_read(v, "get", ()) == (_epoch(world, v), 5)
    assert world.core.objects[d].leased and world.core.objects[v].leased


def test_a_change_by_anyone_ends_a_read_lease_before_its_reply(world: World) -> None:
    a, b = world.client(), world.client()
    d, other = a.create("dict", {"k": 1}), a.create("dict")
    epoch, _ = a.leased_read(d, "__getitem__", ("k",))
    b.do(other, "__setitem__", "k", 2)  # not leased: nothing happens
    assert _epoch(world, d) == epoch
    b.do(d, "update", {"j": 0})
    assert _epoch(world, d) != epoch and not world.core.objects[d].leased
    bumped = _epoch(world, d)
    b.do(d, "update", {"j": 1})  # no lease out since: no need to bump again
    assert _epoch(world, d) == bumped
    epoch, _ = a.leased_read(d, "__getitem__", ("k",))
    a.do(d, "__setitem__", "k", 3)  # the reader's own write too
    assert _epoch(world, d) != epoch


def test_a_mutable_value_is_read_without_a_lease(world: World) -> None:
    a = world.client()
    d = a.create("dict", {"big": [1, 2]})
    assert a.leased_read(d, "__getitem__", ("big",)) == (None, [1, 2])
    assert not world.core.objects[d].leased


def test_a_read_that_raises_fails_as_the_plain_read_does(world: World) -> None:
    a = world.client()
    d = a.create("dict")
    with pytest.raises(KeyError):
        a.leased_read(d, "__getitem__", ("missing",))
    assert not world.core.objects[d].leased


@pytest.mark.parametrize(
    "args",
    [
        ("__setitem__", ("k", 1)),  # a write: never made
        ("values", ()),  # a whole read is no quick read (a dict's copy alone is leased)
        ("get", ("k", 0.0)),  # arguments that compare equal across types
        ("get", (["unhashable"],)),
        ("__getitem__", "k"),
        (1, ()),
        (["unhashable"], ()),
    ],
)
def test_what_cannot_be_leased_is_declined_without_reading(world: World, args: Any) -> None:
    a = world.client()
    d = a.create("dict", {"k": 0})
    assert a.leased_read(d, *args) is None
    assert a.do(d, "__getitem__", "k") == 0 and not world.core.objects[d].leased


def test_a_dicts_copy_is_leased_whole_and_ends_at_its_next_change(world: World) -> None:
    """The copy a scan reads from (``_client/_scans``): leased whatever its values, since
    its holder answers only with the immutable ones."""
    a, b = world.client(), world.client()
    d = a.create("dict", {"k": 1, "l": [1, 2]})
    epoch, copy = a.leased_read(d, "copy", ())
    assert (epoch, copy) == (_epoch(world, d), {"k": 1, "l": [1, 2]})
    assert world.core.objects[d].leased
    b.do(d, "__setitem__", "k", 2)
    assert _epoch(world, d) != epoch


@pytest.mark.parametrize(("kind", "args"), [("list", ([1, 2],)), ("set", ({1, 2},))])
def test_the_copy_of_another_kind_is_declined(world: World, kind: str, args: Any) -> None:
    a = world.client()
    obj = a.create(kind, *args)
    assert a.leased_read(obj, "copy", ()) is None
    assert not world.core.objects[obj].leased


def test_a_grant_makes_no_copy_among_its_reads(world: World) -> None:
    a = world.client()
    lock, d = a.create("Lock"), a.create("dict", {"k": 1})
    ok, values = a.result(_lease(a, lock, ((d, "copy", ()), (d, "__getitem__", ("k",)))))
    assert (ok, values) == (True, {1: (_epoch(world, d), 1)})


def test_reads_are_not_leased_where_leases_are_off(world: World) -> None:
    a = world.client()
    world.core.leasing.page = None
    d = a.create("dict", {"k": 1})
    assert a.leased_read(d, "__getitem__", ("k",)) == (None, 1)
    lock = a.create("Lock")
    assert a.leased_read(lock, "locked", ()) is None  # no leasable read of a lock


def test_disposing_of_an_object_ends_its_leases(world: World) -> None:
    """A read of a disposed object must fail (ObjectNotFound), not be answered by a lease."""
    a = world.client()
    d = a.create("dict", {"k": 1})
    epoch, _ = a.leased_read(d, "__getitem__", ("k",))
    a.release(d)
    world.advance(10)
    assert d not in world.core.objects
    assert _epoch(world, d) != epoch


def test_the_stats_count_leases_and_their_ends(world: World) -> None:
    a = world.client()
    d = a.create("dict", {"k": 1})
    counters = world.core.stats_counters
    leased, ended = counters["leased"], counters["lease ends"]
    a.leased_read(d, "__getitem__", ("k",))
    a.leased_read(d, "__len__", ())
    a.do(d, "__setitem__", "k", 2)  # ends both (one bump: the object's)
    a.do(d, "__setitem__", "k", 3)  # none out since: nothing to end
    assert (counters["leased"] - leased, counters["lease ends"] - ended) == (2, 1)
    assert a.control("stats")["counters"]["leased"] == counters["leased"]


@pytest.mark.parametrize(
    ("value", "leased"),
    [
        (1, True),
        ("s", True),
        (None, True),
        ((1, "a", b"b"), True),
        ((1, (2, (3,))), True),  # nested twice
        (frozenset({1, 2}), True),
        ((1, (2, (3, (4,)))), False),  # nested deeper: not worth checking at every read
        (tuple(range(17)), False),  # too long to check at every read
        ((1, [2]), False),  # a mutable part: the reader could change a shared value
        ([1], False),
        ({"k": 1}, False),
    ],
)
def test_which_values_are_leased(world: World, value: Any, leased: bool) -> None:
    a = world.client()
    d = a.create("dict", {"k": value})
    epoch, got = a.leased_read(d, "__getitem__", ("k",))
    assert got == value and (epoch is not None) == leased
