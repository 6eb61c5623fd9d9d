"""Programs written for the stdlib's managers, run on both: the same results (issue 17).

Each test runs one scenario on the stdlib's manager and on procshare's and compares what they
give; nothing expected is hand-written. Where procshare deliberately differs (a stdlib bug), the
test says so and checks procshare's behaviour on its own.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.managers
import queue
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procshare
import procshare.managers
from tests import _children as children

FORK = multiprocessing.get_context("fork")


class Raised:
    """What a call raised, as the classes a program could catch it by: the builtin ones, and
    ``RemoteError`` (each library has its own)."""

    def __init__(self, exc: BaseException) -> None:
        self.names = frozenset(
            c.__name__
            for c in type(exc).__mro__
            if c.__module__ == "builtins" or c.__name__ == "RemoteError"
        )

    def __repr__(self) -> str:
        return f"Raised({sorted(self.names)})"


def matches(ours: Any, theirs: Any) -> bool:
    """Whether procshare's outcome is the stdlib's: the same values; where the stdlib raised,
    procshare raised something every ``except`` clause that caught the stdlib's catches (it
    may be more: its own error class too)."""
    if isinstance(theirs, Raised):
        return isinstance(ours, Raised) and theirs.names <= ours.names
    if isinstance(theirs, (list, tuple)):
        return (
            type(ours) is type(theirs)
            and len(ours) == len(theirs)
            and all(matches(o, t) for o, t in zip(ours, theirs, strict=True))
        )
    return bool(ours == theirs)


def same(ours: Any, theirs: Any) -> None:
    assert matches(ours, theirs), f"procshare gave {ours!r}, the stdlib {theirs!r}"


def both(manager: Any, stdlib_manager: Any, scenario: Callable[[Any], Any]) -> None:
    same(scenario(manager), scenario(stdlib_manager))


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call()`` gave: its value, or ``Raised``."""
    try:
        return call()
    except Exception as exc:
        return Raised(exc)


# -- crash safety keeps the stdlib's semantics ----------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "Semaphore", "BoundedSemaphore"])
def test_a_release_after_the_holder_exited_is_accepted_as_the_stdlibs(
    manager: Any, stdlib_manager: Any, ctx: Any, kind: str
) -> None:
    def scenario(m: Any) -> Any:
        lock = getattr(m, kind)()
        p = ctx.Process(target=children.acquire_and_exit, args=(lock,))
        p.start()
        p.join(30)
        releases = [outcome(lock.release) for _ in range(2)]
        takes = 0
        while takes < 5 and lock.acquire(timeout=0.05):  # (how many slots it ends with)
            takes += 1
        return releases, takes

    both(manager, stdlib_manager, scenario)


@pytest.mark.parametrize("kind", ["Lock", "Semaphore"])
def test_released_by_another_thread_then_by_a_new_thread_as_the_stdlibs(
    manager: Any, stdlib_manager: Any, kind: str
) -> None:
    """A thread takes it and ends; another thread gives it back (``threading`` allows that);
    then a new thread (often given the ended one's id) releases again, then takes and gives
    back: no thread is taken for its predecessor."""

    def scenario(m: Any) -> Any:
        lock = getattr(m, kind)()
        seen = []
        for _ in range(10):
            taker = threading.Thread(target=lock.acquire)
            taker.start()
            taker.join(30)
            seen.append(outcome(lock.release))
            late = threading.Thread(target=lambda: seen.append(outcome(lock.release)))
            late.start()
            late.join(30)
            again = threading.Thread(target=lambda: seen.append(lock.acquire(timeout=5)))
            again.start()
            again.join(30)
            seen.append(outcome(lock.release))
        takes = 0
        while takes < 12 and lock.acquire(timeout=0.05):  # (how many slots it ends with)
            takes += 1
        return seen, takes

    both(manager, stdlib_manager, scenario)


def test_a_barrier_action_may_use_shared_objects(manager: Any, stdlib_manager: Any) -> None:
    import functools

    def scenario(m: Any) -> Any:
        d = m.dict()
        b = m.Barrier(1, action=functools.partial(children.mark, d, "tripped"))
        return b.wait(), b.wait(), dict(d)

    both(manager, stdlib_manager, scenario)


def test_a_barrier_whose_action_fails_breaks_as_the_stdlibs(
    manager: Any, stdlib_manager: Any
) -> None:
    import functools

    def scenario(m: Any) -> Any:
        b = m.Barrier(1, action=functools.partial(children.mark, None, "x"))  # (None[...])
        return outcome(b.wait), outcome(lambda: b.broken)

    both(manager, stdlib_manager, scenario)


# -- the API and its namespace -------------------------------------------------------------------


class RaisesWhenPickled:
    def __reduce__(self) -> Any:
        raise RuntimeError("not today")


@pytest.mark.parametrize(
    "value",
    [RaisesWhenPickled(), lambda: 1, threading.Lock()],
    ids=["reduce-raises", "lambda", "lock"],
)
def test_an_unpicklable_argument_raises_what_pickle_raised(
    manager: Any, stdlib_manager: Any, value: Any
) -> None:
    theirs = stdlib_manager.dict()
    with pytest.raises(Exception) as raised:
        theirs["x"] = value
    ours = manager.dict()
    with pytest.raises(type(raised.value)):
        ours["x"] = value
    with pytest.raises(procshare.SerializationError):  # and ours, as before
        ours["x"] = value
    assert "x" not in ours


EXTENSION_NAMES = ["cache", "cached", "watch", "pipeline", "wait_until", "snapshot", "aio"]


@pytest.mark.parametrize("name", EXTENSION_NAMES)
def test_namespace_data_is_never_shadowed_by_an_extension(
    manager: Any, stdlib_manager: Any, name: str
) -> None:
    def scenario(m: Any) -> Any:
        ns = m.Namespace()
        setattr(ns, name, 1)
        return getattr(ns, name), ns._getvalue().__dict__ if hasattr(ns, "_getvalue") else None

    both(manager, stdlib_manager, scenario)


def test_a_namespace_extension_works_while_no_data_shadows_it(manager: Any) -> None:
    ns = manager.Namespace(x=1)
    assert callable(ns.watch)  # procshare's own: there while the namespace has no "watch"


def test_a_container_made_from_a_proxy_copies_its_referent(
    manager: Any, stdlib_manager: Any
) -> None:
    def scenario(m: Any) -> Any:
        d, lst = m.dict(x=1), m.list([1, 2])
        made_d, made_l = m.dict(d), m.list(lst)
        d["y"] = 2  # a copy: not seen
        return dict(made_d), list(made_l), dict(d)

    both(manager, stdlib_manager, scenario)


@pytest.mark.parametrize("address", [("127.0.0.1", 1), "/nonexistent/procshare.sock"])
def test_connecting_where_nothing_listens_raises_the_stdlibs_error(address: Any) -> None:
    def scenario(managers: Any) -> Any:
        return outcome(lambda: managers.BaseManager(address=address, authkey=b"x").connect())

    same(scenario(procshare.managers), scenario(multiprocessing.managers))


def test_a_proxy_used_after_shutdown_raises_the_stdlibs_error() -> None:
    def scenario(start: Callable[[], Any]) -> Any:
        m = start()
        d = m.dict()
        m.shutdown()
        return outcome(lambda: d.__setitem__("x", 1))

    same(scenario(lambda: procshare.Manager(ctx=FORK)), scenario(FORK.Manager))


def test_an_empty_host_binds_every_interface_as_the_stdlibs() -> None:
    with (
        procshare.managers.SyncManager(address=("", 0), ctx=FORK) as ours,
        multiprocessing.managers.SyncManager(address=("", 0), ctx=FORK) as theirs,
    ):
        assert ours.address[0] == theirs.address[0] == "0.0.0.0"
        assert ours.dict(a=1)["a"] == 1


def _shown(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+|owner=\d+", "X", text)


PRIMITIVES: list[tuple[str, Callable[[Any], Any]]] = [
    ("Lock", lambda m: m.Lock()),
    ("held Lock", lambda m: _held(m.Lock())),
    ("RLock", lambda m: m.RLock()),
    ("held RLock", lambda m: _held(m.RLock())),
    ("Semaphore", lambda m: m.Semaphore(2)),
    ("BoundedSemaphore", lambda m: _held(m.BoundedSemaphore(3))),
    ("Condition", lambda m: m.Condition()),
    ("Event", lambda m: m.Event()),
    ("set Event", lambda m: _set(m.Event())),
    ("Barrier", lambda m: m.Barrier(2)),
    ("broken Barrier", lambda m: _aborted(m.Barrier(2))),
    ("Queue", lambda m: m.Queue()),
    ("JoinableQueue", lambda m: m.JoinableQueue()),
]


def _held(lock: Any) -> Any:
    lock.acquire()
    return lock


def _set(event: Any) -> Any:
    event.set()
    return event


def _aborted(barrier: Any) -> Any:
    barrier.abort()
    return barrier


@pytest.mark.parametrize(("label", "make"), PRIMITIVES, ids=[p[0] for p in PRIMITIVES])
def test_primitives_print_as_the_stdlibs(
    manager: Any, stdlib_manager: Any, label: str, make: Callable[[Any], Any]
) -> None:
    def scenario(m: Any) -> Any:
        obj = make(m)
        return _shown(str(obj)), _shown(repr(obj)), type(obj).__name__

    both(manager, stdlib_manager, scenario)


def test_an_rlock_over_release_says_what_the_stdlibs_says(
    manager: Any, stdlib_manager: Any
) -> None:
    def scenario(m: Any) -> Any:
        try:
            m.RLock().release()
        except RuntimeError as exc:
            return str(exc)
        return None

    both(manager, stdlib_manager, scenario)


# -- registration ---------------------------------------------------------------------------------


class StdlibCustom(multiprocessing.managers.BaseManager):
    pass


class OurCustom(procshare.managers.BaseManager):
    pass


children.register_custom(StdlibCustom, multiprocessing.managers)
children.register_custom(OurCustom, procshare.managers)


@pytest.fixture(scope="module")
def customs() -> Iterator[tuple[Any, Any]]:
    with OurCustom(ctx=FORK) as ours, StdlibCustom(ctx=FORK) as theirs:
        yield ours, theirs


def on_both(customs: tuple[Any, Any], scenario: Callable[[Any], Any]) -> None:
    ours, theirs = customs
    same(scenario(ours), scenario(theirs))


def test_method_to_typeid_makes_the_typeids_object_from_the_result(
    customs: tuple[Any, Any],
) -> None:
    def scenario(m: Any) -> Any:
        store = m.Store()
        data, items = store.get_data(), store.get_items()
        data["b"] = 2  # dict(result): a copy; the store is unchanged
        items.append(2)
        return store.size(), type(data).__name__, type(items).__name__

    on_both(customs, scenario)


def test_a_made_proxy_type_can_be_registered(customs: tuple[Any, Any]) -> None:
    def scenario(m: Any) -> Any:
        counter = m.Counter()
        counter.inc()
        return counter.inc(), counter.get(), type(counter).__name__

    on_both(customs, scenario)


def test_one_object_under_two_typeids_gets_each_typeids_methods(
    customs: tuple[Any, Any],
) -> None:
    def scenario(m: Any) -> Any:
        holder = m.Holder()
        a, b = holder.as_a(), holder.as_b()
        return [
            outcome(getattr(p, name)) if hasattr(p, name) else "absent"
            for p, name in (
                (b, "b"),
                (a, "b"),
                (b, "a"),
            )
        ]

    on_both(customs, scenario)
    # (The stdlib then refuses a.a(): its server keeps the exposed methods of the typeid the
    # object was last returned as, a bug. Each of procshare's proxies keeps its own.)
    holder = customs[0].Holder()
    a = holder.as_a()
    holder.as_b()
    assert a.a() == "a"


@pytest.mark.parametrize(
    "call",
    ["BadTypeid.get_data", "Store.unpicklable", "Store.weird_error"],
)
def test_errors_on_less_common_paths_are_the_stdlibs(customs: tuple[Any, Any], call: str) -> None:
    typeid, method = call.split(".")

    def scenario(m: Any) -> Any:
        return outcome(getattr(getattr(m, typeid)(), method))

    on_both(customs, scenario)


def test_an_unstarted_manager_raises_the_stdlibs_error() -> None:
    def scenario(manager_class: Any) -> Any:
        return outcome(lambda: manager_class(ctx=FORK).Store())

    same(scenario(OurCustom), scenario(StdlibCustom))


# -- the xmlrpclib serializer -------------------------------------------------------------------


def _xmlrpc_values(m: Any) -> list[Any]:
    """What XML-RPC's value rules make of a program's data (and what they refuse)."""
    d, lst, ns = m.dict(), m.list([1, (2, 3)]), m.Namespace(a=(1,))
    steps: list[Callable[[], Any]] = [
        lambda: d.__setitem__("k", (1, 2)),
        lambda: d["k"],  # a tuple comes back a list
        lambda: d.get("missing"),
        lambda: d.__setitem__("big", 2**40),  # past XML-RPC's 32-bit ints
        lambda: d.__setitem__("f", threading.Lock()),  # not data
        lambda: d.__setitem__("b", b"xy"),
        lambda: d["b"],
        lambda: d.__setitem__("s", {1, 2}),
        lambda: d.__setitem__("n", {"a": None, "t": True, "fl": 1.5}),
        lambda: d["n"],
        lambda: d.__setitem__(1, "an int key"),
        lambda: d.copy(),  # a dict with an int key: XML-RPC has str keys only
        lambda: lst[1],
        lambda: lst[:],  # a slice is not data
        lambda: ns.a,
        lambda: m.Value("i", 3).value,
    ]
    return [outcome(step) for step in steps]


def test_the_xmlrpclib_serializer_keeps_xml_rpcs_value_rules() -> None:
    def scenario(managers: Any) -> Any:
        with managers.SyncManager(serializer="xmlrpclib", ctx=FORK) as m:
            return _xmlrpc_values(m)

    same(scenario(procshare.managers), scenario(multiprocessing.managers))


def test_with_xmlrpclib_exceptions_and_proxies_still_travel() -> None:
    # Where the stdlib fails (it cannot marshal an exception or a proxy, and says TypeError),
    # procshare sends the error by name and the proxy as its token.
    with procshare.managers.SyncManager(serializer="xmlrpclib", ctx=FORK) as m:
        with pytest.raises(KeyError):
            m.dict()["nokey"]
        with pytest.raises(queue.Empty):
            m.Queue().get(timeout=0.01)
        inner = m.dict(x=1)
        outer = m.list([inner])
        assert outer[0]["x"] == 1


def test_the_object_count_is_of_what_client_proxies_hold(ctx: Any) -> None:
    # CPython's own tests check ``_number_of_objects()`` after each class: proxies stored inside
    # shared objects do not count, nor does anything once its last client proxy is gone.
    def scenario(m: Any) -> Any:
        counts = [m._number_of_objects()]
        pets, supplies = m.dict(ferrets=2), m.dict(water=10)
        nest = m.list([pets, supplies])
        counts.append(m._number_of_objects())
        del pets, supplies
        counts.append(m._number_of_objects())
        outer = m.list([[88, 99], nest])
        del nest
        counts.append(m._number_of_objects())
        del outer
        gc.collect()
        counts.append(m._number_of_objects())
        counts.append(m._debug_info().count("refcount="))
        return counts

    with procshare.Manager(ctx=ctx) as ours, ctx.Manager() as theirs:
        same(scenario(ours), scenario(theirs))


def test_an_xmlrpclib_manager_shuts_down_cleanly_and_pushes_changes() -> None:
    # The manager's own connections (shutdown, the push connection of watch and cache) speak
    # its serializer: a pickle one would be refused, and shutdown would end in terminate().
    with procshare.managers.SyncManager(serializer="xmlrpclib", ctx=FORK) as m:
        d = m.dict()
        with d.watch() as changes:
            d["k"] = (1, 2)
            change = changes.get(timeout=10)
        assert (change.op, change.args) == ("__setitem__", ("k", [1, 2]))
        process = m._process
    assert process.exitcode == 0
