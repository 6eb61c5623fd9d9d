"""The lease invariant, on random interleavings of reads, writes and lock hand-overs.

A lease answers a read while its object's epoch in the page is the one it was granted at. So
the invariant is: **whenever the page still shows a lease's epoch, the leased value is what
the read would return now.** Several sessions here lease reads (``LeasedRead``, and with a lock's
grant), write through every mutating method of every leasable kind, and take and free a lock
in any order; after each step, every lease still valid by the page is checked against a plain
read made by an onlooker that holds no leases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procshare._leases import LeasePage, slot_of

from .harness import World

Call = tuple[str, tuple[Any, ...]]

# kind, constructor arguments, leasable reads, writes (``None`` in the arguments: a number drawn)
OBJECTS: list[tuple[str, tuple[Any, ...], list[Call], list[Call]]] = [
    (
        "dict",
        ({"a": 1, "b": "x"},),
        [
            ("__getitem__", ("a",)),
            ("get", ("b", None)),
            ("get", ("c", 0)),
            ("__contains__", ("a",)),
            ("__len__", ()),
        ],
        [
            ("__setitem__", ("a", None)),
            ("__setitem__", ("c", None)),
            ("__delitem__", ("a",)),
            ("pop", ("b", None)),
            ("setdefault", ("a", 5)),
            ("update", ({"b": "y"},)),
            ("__setitem__", ("b", (1, ("x", None)))),  # a tuple: leased too
            ("increment", ("a",)),
            ("compare_and_set", ("a", 1, 2)),
            ("popitem", ()),
            ("clear", ()),
        ],
    ),
    (
        "list",
        ([1, 2],),
        [("__getitem__", (0,)), ("__getitem__", (-1,)), ("__len__", ()), ("__contains__", (3,))],
        [
            ("append", (3,)),
            ("pop", ()),
            ("insert", (0, None)),
            ("__setitem__", (0, None)),
            ("remove", (3,)),
            ("reverse", ()),
            ("extend", ([3, 1],)),
            ("sort", ()),
            ("clear", ()),
        ],
    ),
    (
        "set",
        ({1},),
        [("__contains__", (1,)), ("__len__", ())],
        [("add", (1,)), ("add", (2,)), ("discard", (1,)), ("update", ([1, 3],)), ("pop", ())],
    ),
    (
        "Value",
        ("i", 0),
        [("get", ())],
        [("set", (None,)), ("increment", ()), ("swap", (7,)), ("compare_and_set", (0, 1))],
    ),
    (
        "Namespace",
        (),
        [("__getattribute__", ("x",))],
        [("__setattr__", ("x", None)), ("__delattr__", ("x",))],
    ),
    (
        "Array",
        ("i", [0, 0]),
        [("__getitem__", (0,)), ("__len__", ())],
        [("__setitem__", (0, None))],
    ),
    ("Event", (), [("is_set", ())], [("set", ()), ("clear", ())]),
]
CLIENTS = 3

_read = st.tuples(
    st.just("read"),
    st.integers(0, CLIENTS - 1),
    st.integers(0, len(OBJECTS) - 1),
    st.integers(0, 4),
)
_write = st.tuples(
    st.just("write"),
    st.integers(0, CLIENTS - 1),
    st.integers(0, len(OBJECTS) - 1),
    st.integers(0, 9),
    st.integers(-2, 3),
)
_acquire = st.tuples(
    st.just("acquire"),
    st.integers(0, CLIENTS - 1),
    st.lists(st.tuples(st.integers(0, len(OBJECTS) - 1), st.integers(0, 4)), max_size=4),
)
_release = st.tuples(st.just("release"), st.integers(0, CLIENTS - 1))
STEPS = st.lists(st.one_of(_read, _read, _write, _write, _acquire, _release), max_size=40)


@pytest.fixture(scope="module")
def page() -> Iterator[LeasePage]:
    made = LeasePage.create("00" * 8)
    if made is None:
        pytest.skip("no memfd on this platform: leases are off")
    yield made
    made.close()


def _fill(args: tuple[Any, ...], number: int) -> tuple[Any, ...]:
    return tuple(number if a is None else a for a in args)


def _outcome(client: Any, obj: int, method: str, args: tuple[Any, ...]) -> Any:
    try:
        return ("value", client.do(obj, method, *args))
    except Exception as exc:  # (the outcome is what the read does)
        return ("raises", type(exc))


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_a_lease_valid_by_the_page_always_holds_the_current_value(
    page: LeasePage, steps: list[tuple[Any, ...]]
) -> None:
    world = World()
    world.core.leasing.page = page
    clients = [world.client(f"c{i}") for i in range(CLIENTS)]
    onlooker = world.client("onlooker")  # plain reads only: holds no leases
    owner = clients[0]
    objs = [owner.create(kind, *args) for kind, args, _, _ in OBJECTS]
    owner.do(objs[4], "__setattr__", "x", 1)  # the Namespace starts with x
    lock = owner.create("Lock")
    # (client index, (obj, method, args)) -> (epoch, value)
    leases: dict[tuple[int, tuple[int, str, tuple[Any, ...]]], tuple[int, Any]] = {}

    def read_of(index: int, which: int) -> tuple[int, str, tuple[Any, ...]]:
        reads = OBJECTS[index][2]
        method, args = reads[which % len(reads)]
        return (objs[index], method, args)

    for step in steps:
        kind, c = step[0], step[1]
        client = clients[c]
        if kind == "read":
            obj, method, args = read_of(step[2], step[3])
            try:
                epoch, value = client.leased_read(obj, method, args)
            except Exception:  # noqa: S112 - a read that raises is not leased
                continue
            if epoch is not None:
                leases[(c, (obj, method, args))] = (epoch, value)
        elif kind == "write":
            method, args = OBJECTS[step[2]][3][step[3] % len(OBJECTS[step[2]][3])]
            with contextlib.suppress(Exception):  # a write may fail (pop of nothing): fine
                client.do(objs[step[2]], method, *_fill(args, step[4]))
        elif kind == "acquire":
            reads = tuple(read_of(i, w) for i, w in step[2])
            answer = client.do_lease(lock, False, -1, reads, owner=1)
            if answer:
                for index, (epoch, value) in answer[1].items():
                    leases[(c, reads[index])] = (epoch, value)
        else:
            with contextlib.suppress(RuntimeError):  # not locked
                client.do(lock, "release", owner=1)
        for (holder, (obj, method, args)), (epoch, value) in leases.items():
            if page.epoch(slot_of(obj)) != epoch:
                continue  # ended: the client asks the server again
            now = _outcome(onlooker, obj, method, args)
            assert now == ("value", value) and type(now[1]) is type(value), (
                f"a lease of {method}{args} by client {holder} still valid at epoch {epoch} "
                f"holds {value!r}, but the read gives {now!r} (after {step})"
            )
