"""The core on its own: every primitive's semantics, ownership, deaths, and references.

No sockets and no real time: sessions are in-memory and the clock is advanced by hand.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from procshare._errors import CallWithdrawn, MethodNotExposed, ObjectNotFound, ProcshareError
from procshare._server._core import Handle

from .harness import World


@pytest.fixture
def world() -> World:
    return World()


# -- locks ----------------------------------------------------------------------------------------


def test_lock_is_handed_to_waiters_in_arrival_order(world: World) -> None:
    a, b, c = world.client("a"), world.client("b"), world.client("c")
    lock = a.create("Lock")
    assert a.do(lock, "acquire") is True
    rb = b.call(lock, "acquire")
    rc = c.call(lock, "acquire")
    assert b.pending(rb) and c.pending(rc)
    a.do(lock, "release")
    assert b.result(rb) is True and c.pending(rc)
    b.do(lock, "release")
    assert c.result(rc) is True


def test_lock_nonblocking_and_timeout(world: World) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    assert b.do(lock, "acquire", False) is False
    assert b.do(lock, "acquire", True, 0) is False
    rid = b.call(lock, "acquire", True, 2.0)
    world.advance(1.0)
    assert b.pending(rid)
    world.advance(1.5)
    assert b.result(rid) is False
    a.do(lock, "release")
    assert a.do(lock, "locked") is False  # the timed-out waiter did not get it later


def test_satisfied_waiters_with_long_timeouts_do_not_pile_up(world: World) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    for _ in range(1000):
        a.do(lock, "acquire")
        rid = b.call(lock, "acquire", True, 60.0)  # parked with a deadline a minute away
        a.do(lock, "release")
        assert b.result(rid) is True
        b.do(lock, "release")
        world.advance(0.001)  # a turn of the loop
    assert len(world.core.deadlines.heap) <= 1  # not 1000 entries waiting for their minute


def test_lock_argument_errors_match_threading(world: World) -> None:
    a = world.client()
    lock = a.create("Lock")
    with pytest.raises(ValueError, match="non-blocking"):
        a.do(lock, "acquire", False, 1)
    with pytest.raises(ValueError, match="non-negative"):
        a.do(lock, "acquire", True, -5)
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        a.do(lock, "release")


def test_a_dead_holder_releases_the_lock_to_the_next_waiter(world: World) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rid = b.call(lock, "acquire")
    a.die()
    assert b.result(rid) is True


def test_a_dead_waiter_is_skipped(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    b.call(lock, "acquire")
    rc = c.call(lock, "acquire")
    b.die()
    a.do(lock, "release")
    assert c.result(rc) is True


def test_a_waiter_whose_peer_vanished_is_skipped_before_its_close_is_processed(
    world: World,
) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    b.call(lock, "acquire")
    rc = c.call(lock, "acquire")
    b.alive = False  # hung up, but the transport has not noticed yet
    a.do(lock, "release")
    assert c.result(rc) is True
    assert b.session.closed  # the core closed it right away


def test_rlock_counts_and_belongs_to_one_owner(world: World) -> None:
    a, b = world.client(), world.client()
    rlock = a.create("RLock")
    assert a.do(rlock, "acquire", owner=1)
    assert a.do(rlock, "acquire", owner=1)
    assert a.do(rlock, "acquire", False, owner=2) is False  # another thread of the same process
    with pytest.raises(RuntimeError, match="un-acquired"):
        a.do(rlock, "release", owner=2)
    rid = b.call(rlock, "acquire")
    a.do(rlock, "release", owner=1)
    assert b.pending(rid)
    a.do(rlock, "release", owner=1)
    assert b.result(rid) is True


def test_a_dead_process_holding_an_rlock_twice_releases_it_fully(world: World) -> None:
    a, b = world.client(), world.client()
    rlock = a.create("RLock")
    a.do(rlock, "acquire", owner=7)
    a.do(rlock, "acquire", owner=7)
    rid = b.call(rlock, "acquire")
    a.die()
    assert b.result(rid) is True
    b.do(rlock, "release")
    assert b.do(rlock, "locked") is False


# -- semaphores -----------------------------------------------------------------------------


def test_semaphore_counts_and_returns_a_dead_holders_slots(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    sem = a.create("Semaphore", 2)
    assert a.do(sem, "acquire") and b.do(sem, "acquire")
    rid = c.call(sem, "acquire")
    assert c.pending(rid)
    a.die()
    assert c.result(rid) is True
    assert c.do(sem, "get_value") == 0


def test_semaphore_used_for_signalling_gives_nothing_back_on_exit(world: World) -> None:
    producer, consumer = world.client(), world.client()
    sem = producer.create("Semaphore", 0)
    producer.do(sem, "release")  # a signal from a process holding no slot
    assert consumer.do(sem, "acquire")
    consumer.die()  # exits after consuming: it must not invent a signal
    assert producer.do(sem, "get_value") == 0


def test_bounded_semaphore_refuses_over_release(world: World) -> None:
    a = world.client()
    sem = a.create("BoundedSemaphore", 1)
    with pytest.raises(ValueError, match="too many"):
        a.do(sem, "release")


def test_semaphore_timeout(world: World) -> None:
    a = world.client()
    sem = a.create("Semaphore", 0)
    rid = a.call(sem, "acquire", True, 0.5)
    world.advance(0.6)
    assert a.result(rid) is False


# -- conditions -----------------------------------------------------------------------------


def test_condition_wait_releases_and_notify_hands_back(world: World) -> None:
    a, b = world.client(), world.client()
    cond = a.create("Condition")
    with pytest.raises(RuntimeError, match="un-acquired"):
        a.do(cond, "wait")
    a.do(cond, "acquire", owner=1)
    waiting = a.call(cond, "wait", owner=1)
    assert a.pending(waiting)
    assert b.do(cond, "acquire", owner=2)  # the waiter released the lock
    b.do(cond, "notify", owner=2)
    assert a.pending(waiting)  # notified, but b still holds the lock
    b.do(cond, "release", owner=2)
    assert a.result(waiting) is True
    a.do(cond, "release", owner=1)


def test_condition_wait_timeout_still_reacquires(world: World) -> None:
    a, b = world.client(), world.client()
    cond = a.create("Condition")
    a.do(cond, "acquire")
    waiting = a.call(cond, "wait", 1.0)
    b.do(cond, "acquire")
    world.advance(2.0)
    assert a.pending(waiting)  # timed out, waiting to get the lock back
    b.do(cond, "release")
    assert a.result(waiting) is False


def test_a_holder_killed_inside_wait_does_not_block_others(world: World) -> None:
    a, b = world.client(), world.client()
    cond = a.create("Condition")
    a.do(cond, "acquire")
    a.call(cond, "wait")
    a.die()
    assert b.do(cond, "acquire", False) is True
    b.do(cond, "notify_all")  # nobody left to notify
    b.do(cond, "release")


def test_a_notified_waiter_dying_before_reacquiring_releases_nothing_it_never_had(
    world: World,
) -> None:
    a, b = world.client(), world.client()
    cond = a.create("Condition")
    a.do(cond, "acquire")
    a.call(cond, "wait")
    b.do(cond, "acquire")
    b.do(cond, "notify")
    a.die()
    b.do(cond, "release")
    assert b.do(cond, "acquire", False) is True


# -- events and barriers --------------------------------------------------------------------


def test_event_wakes_every_waiter(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    ev = a.create("Event")
    rb, rc = b.call(ev, "wait"), c.call(ev, "wait", 10)
    a.do(ev, "set")
    assert b.result(rb) is True and c.result(rc) is True
    assert a.do(ev, "wait") is True
    a.do(ev, "clear")
    rid = a.call(ev, "wait", 1)
    world.advance(1.1)
    assert a.result(rid) is False


def test_barrier_releases_all_parties_with_distinct_indices(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    barrier = a.create("Barrier", 3)
    ra, rb = a.call(barrier, "wait"), b.call(barrier, "wait")
    assert c.do(barrier, "__getattribute__", "n_waiting") == 2
    idx = c.do(barrier, "wait")
    assert sorted([a.result(ra), b.result(rb), idx]) == [0, 1, 2]


def test_a_dead_party_breaks_the_barrier(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    barrier = a.create("Barrier", 3)
    ra = a.call(barrier, "wait")
    b.call(barrier, "wait")
    b.die()
    with pytest.raises(threading.BrokenBarrierError):
        a.result(ra)
    with pytest.raises(threading.BrokenBarrierError):
        c.do(barrier, "wait")
    c.do(barrier, "reset")
    assert c.do(barrier, "__getattribute__", "broken") is False


def test_barrier_timeout_and_abort(world: World) -> None:
    a, b = world.client(), world.client()
    barrier = a.create("Barrier", 2)
    ra = a.call(barrier, "wait", 1.0)
    world.advance(1.5)
    with pytest.raises(threading.BrokenBarrierError):
        a.result(ra)
    a.do(barrier, "reset")
    rb = b.call(barrier, "wait")
    a.do(barrier, "abort")
    with pytest.raises(threading.BrokenBarrierError):
        b.result(rb)
    with pytest.raises(AttributeError):
        a.do(barrier, "__getattribute__", "_Barrier__secret")


# -- queues ---------------------------------------------------------------------------------


def test_queue_fifo_blocking_and_bounds(world: World) -> None:
    a, b = world.client(), world.client()
    q = a.create("Queue", 1)
    rid = b.call(q, "get")
    a.do(q, "put", "x")
    assert b.result(rid) == "x"
    a.do(q, "put", 1)
    with pytest.raises(queue.Full):
        a.do(q, "put", 2, False)
    blocked = a.call(q, "put", 2)
    assert a.pending(blocked)
    assert b.do(q, "get") == 1
    assert a.result(blocked) is None  # admitted once there was room
    assert b.do(q, "get_nowait") == 2
    with pytest.raises(queue.Empty):
        b.do(q, "get_nowait")
    rid = b.call(q, "get", True, 0.5)
    world.advance(1)
    with pytest.raises(queue.Empty):
        b.result(rid)
    with pytest.raises(ValueError, match="non-negative"):
        b.do(q, "get", True, -1)


def test_queue_item_is_never_given_to_a_dead_consumer(world: World) -> None:
    producer, ghost, live = world.client(), world.client(), world.client()
    q = producer.create("Queue")
    ghost.call(q, "get")
    rid = live.call(q, "get")
    ghost.alive = False  # died; its hang-up not processed yet
    producer.do(q, "put", "precious")
    assert live.result(rid) == "precious"


def test_queue_item_waits_when_the_only_consumer_is_dead(world: World) -> None:
    producer, ghost = world.client(), world.client()
    q = producer.create("Queue")
    ghost.call(q, "get")
    ghost.alive = False
    producer.do(q, "put", "kept")
    assert producer.do(q, "qsize") == 1
    assert world.client().do(q, "get") == "kept"


def test_join_and_task_done(world: World) -> None:
    a, b = world.client(), world.client()
    q = a.create("JoinableQueue")
    a.do(q, "put", 1)
    a.do(q, "put", 2)
    joined = a.call(q, "join")
    b.do(q, "get")
    b.do(q, "task_done")
    assert a.pending(joined)
    b.do(q, "get")
    b.do(q, "task_done")
    assert a.result(joined) is None
    with pytest.raises(ValueError, match="too many"):
        b.do(q, "task_done")


def test_joinable_queue_redelivers_a_dead_consumers_unfinished_items(world: World) -> None:
    producer, dead, live = world.client(), world.client(), world.client()
    q = producer.create("JoinableQueue")
    producer.do(q, "put", "job-1")
    producer.do(q, "put", "job-2")
    joined = producer.call(q, "join")
    assert dead.do(q, "get") == "job-1"
    dead.die()
    assert live.do(q, "get") == "job-1"  # back at the front, not lost
    live.do(q, "task_done")
    assert live.do(q, "get") == "job-2"
    live.do(q, "task_done")
    assert producer.result(joined) is None


def test_joinable_queue_redelivers_nothing_of_a_consumer_that_exited(world: World) -> None:
    """An exit (``Goodbye``) is not a death: what the consumer took is its own, as with the
    stdlib (nothing is done twice); its unfinished tasks are settled, so join() returns."""
    producer, exited, live = world.client(), world.client(), world.client()
    q = producer.create("JoinableQueue")
    producer.do(q, "put", "job-1")
    producer.do(q, "put", "job-2")
    joined = producer.call(q, "join")
    assert exited.do(q, "get") == "job-1"
    assert exited.do(q, "qsize") == 1  # (its next call: job-1 arrived)
    exited.exit()
    assert live.do(q, "get") == "job-2"
    live.do(q, "task_done")
    assert producer.result(joined) is None
    assert producer.do(q, "qsize") == 0


@pytest.mark.parametrize("typeid", ["Queue", "JoinableQueue"])
def test_a_queue_made_to_deliver_at_most_once_redelivers_nothing(world: World, typeid: str) -> None:
    producer, dead, live = world.client(), world.client(), world.client()
    q = producer.create(typeid, 0, redeliver=False)
    producer.do(q, "put", "job-1")
    producer.do(q, "put", "job-2")
    assert dead.do(q, "get") == "job-1"  # (still on its way, even)
    dead.die()
    assert live.do(q, "get") == "job-2"
    assert live.do(q, "qsize") == 0


def test_plain_queue_settles_an_exited_consumers_tasks_so_join_returns(world: World) -> None:
    producer, done = world.client(), world.client()
    q = producer.create("Queue")
    producer.do(q, "put", "a")
    joined = producer.call(q, "join")
    done.do(q, "get")
    done.exit()  # it had the item: not delivered again
    assert producer.result(joined) is None
    assert producer.do(q, "qsize") == 0


def test_an_item_on_its_way_to_a_killed_consumer_goes_back_to_the_front(world: World) -> None:
    """Killed before its next call, a consumer may never have received the item: the item
    goes back (at least once for killed consumers; a consumer that calls again, or exits,
    has it)."""
    producer, dead, live = world.client(), world.client(), world.client()
    q = producer.create("Queue")
    waiting = dead.call(q, "get")  # parked: the item will be handed to it
    producer.do(q, "put", "first")
    producer.do(q, "put", "second")
    assert dead.result(waiting) == "first"
    dead.die()
    assert live.do(q, "get") == "first"  # back at the front, not lost
    assert live.do(q, "get") == "second"


def test_a_consumers_next_call_means_its_item_arrived(world: World) -> None:
    producer, consumer, other = world.client(), world.client(), world.client()
    q = producer.create("Queue")
    producer.do(q, "put", "a")
    producer.do(q, "put", "b")
    assert consumer.do(q, "get") == "a"
    assert consumer.do(q, "qsize") == 1  # a call of the same owner: "a" arrived
    consumer.die()
    assert other.do(q, "get") == "b"
    assert other.do(q, "qsize") == 0  # "a" was not delivered again


def test_an_abandoned_get_is_withdrawn_and_the_next_item_is_not_lost(world: World) -> None:
    producer, consumer, other = world.client(), world.client(), world.client()
    q = producer.create("Queue")
    abandoned = consumer.call(q, "get")
    consumer.cancel(abandoned)
    with pytest.raises(CallWithdrawn):
        consumer.result(abandoned)
    producer.do(q, "put", "x")
    assert other.do(q, "get") == "x"


def test_an_item_that_crossed_the_cancel_goes_back_to_the_front(world: World) -> None:
    producer, consumer, other = world.client(), world.client(), world.client()
    q = producer.create("Queue")
    waiting = consumer.call(q, "get")
    producer.do(q, "put", "x")
    producer.do(q, "put", "y")
    # the answer is on its way when the consumer gives up on it
    consumer.cancel(waiting)
    assert other.do(q, "get") == "x"
    assert other.do(q, "get") == "y"


def test_an_abandoned_acquire_is_withdrawn_and_the_lock_goes_to_the_next(world: World) -> None:
    holder, quitter, next_one = world.client(), world.client(), world.client()
    lock = holder.create("Lock")
    assert holder.do(lock, "acquire")
    abandoned = quitter.call(lock, "acquire")
    waiting = next_one.call(lock, "acquire")
    quitter.cancel(abandoned)
    with pytest.raises(CallWithdrawn):
        quitter.result(abandoned)
    holder.do(lock, "release")
    world.advance(0.01)  # (past any window a release leaves open)
    assert next_one.result(waiting) is True


def test_a_grant_that_crossed_the_cancel_is_given_back(world: World) -> None:
    holder, quitter = world.client(), world.client()
    for typeid in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        prim = holder.create(typeid)
        waiting = quitter.call(prim, "acquire")  # (free: granted at once, on its way)
        quitter.cancel(waiting)
        assert holder.do(prim, "acquire", False) is True, typeid


def test_an_abandoned_condition_wait_ends_holding_the_lock(world: World) -> None:
    waiter, other = world.client(), world.client()
    cond = waiter.create("Condition")
    assert waiter.do(cond, "acquire")
    waiting = waiter.call(cond, "wait")
    waiter.cancel(waiting)
    assert waiter.result(waiting) is False  # not notified, as a timeout, lock held again
    assert other.do(cond, "acquire", False) is False
    waiter.do(cond, "release")
    assert other.do(cond, "acquire", False) is True


def test_a_condition_wait_abandoned_once_notified_still_ends_holding_the_lock(
    world: World,
) -> None:
    """Notified, the waiter waits for the lock the notifier holds; abandoned then (an asyncio
    task cancelled), it goes on waiting for it, gets it, and is answered ``True``: the server
    does not fail (it used to park the waiter a second time and drop the connection)."""
    waiter, notifier, other = world.client(), world.client(), world.client()
    cond = waiter.create("Condition")
    assert waiter.do(cond, "acquire")
    waiting = waiter.call(cond, "wait")
    assert notifier.do(cond, "acquire")
    notifier.do(cond, "notify")
    waiter.cancel(waiting)
    assert waiter.pending(waiting)  # (the notifier still holds the lock)
    notifier.do(cond, "release")
    assert waiter.result(waiting) is True
    assert other.do(cond, "acquire", False) is False  # the waiter holds it again
    waiter.do(cond, "release")
    assert other.do(cond, "acquire", False) is True


def test_an_abandoned_barrier_wait_leaves_the_others_waiting_for_one_more(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    barrier = a.create("Barrier", 3)
    first = a.call(barrier, "wait")
    second = b.call(barrier, "wait")
    a.cancel(first)
    with pytest.raises(CallWithdrawn):
        a.result(first)
    assert b.pending(second)  # not broken
    third = c.call(barrier, "wait")
    again = a.call(barrier, "wait")
    assert sorted([b.result(second), c.result(third), a.result(again)]) == [0, 1, 2]


def test_task_done_by_another_process_retires_the_oldest_item(world: World) -> None:
    producer, taker, marker = world.client(), world.client(), world.client()
    q = producer.create("JoinableQueue")
    producer.do(q, "put", "x")
    taker.do(q, "get")
    marker.do(q, "task_done")  # someone else does the bookkeeping
    taker.die()  # must not redeliver an item already marked done
    assert producer.do(q, "qsize") == 0


# -- containers and errors ------------------------------------------------------------------


def test_dict_and_list_operations(world: World) -> None:
    a = world.client()
    d = a.create("dict", {"x": 1})
    a.do(d, "__setitem__", "y", 2)
    assert a.do(d, "items") == [("x", 1), ("y", 2)]
    with pytest.raises(KeyError):
        a.do(d, "__getitem__", "zz")
    lst = a.create("list", [3, 1, 2])
    a.do(lst, "sort", reverse=True)
    assert a.do(lst, "copy") == [3, 2, 1]
    with pytest.raises(IndexError):
        a.do(lst, "__getitem__", 10)


def test_errors_for_unknown_objects_methods_and_types(world: World) -> None:
    a = world.client()
    d = a.create("dict")
    with pytest.raises(ObjectNotFound):
        a.do(424242, "__len__")
    with pytest.raises(MethodNotExposed):
        a.do(d, "__class__")
    with pytest.raises(TypeError):
        a.do(d, "__len__", 1, 2, 3)
    with pytest.raises(ProcshareError, match="unknown typeid"):
        a.create("NoSuchType")
    with pytest.raises(ProcshareError, match="unknown command"):
        a.control("format-disk")


def test_namespace_hides_dunders(world: World) -> None:
    a = world.client()
    ns = a.create("Namespace", x=1)
    assert a.do(ns, "__getattribute__", "x") == 1
    with pytest.raises(AttributeError):
        a.do(ns, "__getattribute__", "__class__")
    a.do(ns, "__setattr__", "y", 2)
    assert a.do(ns, "__repr__") == "Namespace(x=1, y=2)"


def test_versions_count_mutations_only(world: World) -> None:
    a = world.client()
    d = a.create("dict")
    a.do(d, "__setitem__", 1, 1)
    a.do(d, "__getitem__", 1)
    a.do(d, "update", {2: 2})
    assert world.core.objects[d].version == 2


# -- references -----------------------------------------------------------------------------


def test_objects_live_while_referenced_and_go_after_the_delay(world: World) -> None:
    a, b = world.client(), world.client()
    d = a.create("dict")
    b.retain(d)
    a.release(d)
    world.advance(10)
    assert d in world.core.objects  # b still holds it
    b.release(d)
    world.advance(4)
    assert d in world.core.objects  # within the release delay
    world.advance(2)
    assert d not in world.core.objects


def test_a_retain_within_the_delay_keeps_the_object(world: World) -> None:
    a, b = world.client(), world.client()
    d = a.create("dict")
    a.release(d)
    world.advance(3)
    b.retain(d)  # e.g. a child process that received the proxy announces itself
    world.advance(10)
    assert d in world.core.objects


def test_a_dead_session_drops_its_references(world: World) -> None:
    a = world.client()
    objs = [a.create("list") for _ in range(5)]
    a.die()
    world.advance(6)
    assert not any(o in world.core.objects for o in objs)


def test_a_proxy_in_a_reply_counts_once_however_often_it_is_pickled(world: World) -> None:
    # The pickle serializer tries twice when a value needs its fallback reducers (a dict view):
    # a shared object pickled by the failed first try must not be counted twice.
    a = world.client()
    inner, outer = a.create("dict"), a.create("list")
    held = world.core.objects[inner].refs
    world.core.objects[outer].referent.extend(
        [Handle(world.core, world.core.objects[inner]), {}.keys()]
    )
    proxy, view = a.do(outer, "__getitem__", slice(None))
    assert proxy._id == inner and view == []
    assert world.core.objects[inner].refs == held + 1
    assert a.session.refs[inner] == 2


def test_references_lent_to_a_reply_that_could_not_be_sent_are_given_back(world: World) -> None:
    a = world.client()
    inner, outer = a.create("dict"), a.create("list")
    held = world.core.objects[inner].refs
    world.core.objects[outer].referent.extend(
        [Handle(world.core, world.core.objects[inner]), threading.Lock()]
    )
    with pytest.raises(ProcshareError, match="could not be serialized"):
        a.do(outer, "__getitem__", slice(None))
    assert world.core.objects[inner].refs == held
    assert a.session.refs[inner] == 1


def test_changes_naming_shared_objects_are_never_sent_as_changes(world: World) -> None:
    a = world.client()
    d, inner = a.create("dict", {i: i for i in range(5000)}), a.create("list")
    _, version = a.since(d, "copy", -1)
    entry, held = world.core.objects[d], world.core.objects[inner].refs
    handle = Handle(world.core, world.core.objects[inner])
    entry.referent["inner"] = handle  # as a call storing a proxy does
    world.core._changed(entry, "__setitem__", ("inner", handle), None, None)
    value, newer = a.since(d, "copy", version)  # the whole object, not the change
    assert newer == version + 1 and value["inner"]._id == inner
    assert world.core.objects[inner].refs == held + 1  # lent once, for the reply sent
    assert a.session.refs[inner] == 2


class _InternalRef:
    """Stands for a proxy rebuilt inside the server: counts a reference, drops it when freed."""

    def __init__(self, world: World, obj_id: int) -> None:
        self.core, self.obj_id = world.core, obj_id
        self.core.references.adopt(obj_id)

    def __del__(self) -> None:
        self.core.references.disown(self.obj_id)


def test_what_a_disposed_object_held_goes_one_release_delay_later_without_other_traffic(
    world: World,
) -> None:
    # Disposing of the outer dict drops its reference to the inner list during a tick; that
    # tick must schedule the list's disposal too, not leave it for some later message.
    a = world.client()
    outer, inner = a.create("dict"), a.create("list")
    world.core.objects[outer].referent["x"] = _InternalRef(world, inner)
    a.release(inner, outer)
    world.advance(5.01)
    assert outer not in world.core.objects
    assert world.core.objects[inner].refs == 0
    deadline = world.core.next_deadline()
    assert deadline is not None and deadline <= world.clock.now + 5.0
    world.advance(5.01)
    assert inner not in world.core.objects


def test_releases_never_go_negative(world: World) -> None:
    a, b = world.client(), world.client()
    d = a.create("dict")
    b.release(d)  # b never held it: ignored
    b.release(d)
    world.advance(10)
    assert d in world.core.objects


# -- custom classes -------------------------------------------------------------------------


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def bump(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def fail(self) -> None:
        raise LookupError("custom failure")

    def _private(self) -> None:
        pass


def test_custom_classes_run_on_workers_and_report_errors(world: World) -> None:
    from procshare._manager import Registration, _server_types
    from procshare._protocol import Create
    from procshare._server._core import Core

    world.core.types.update(_server_types({"Counter": Registration(Counter, None, None, None)}))
    a = world.client()
    rid = next(a._ids)
    a.send(Create(rid, "Counter", (5,), None, 0))
    assert a.pending(rid)  # constructors run on a worker too
    world.run_jobs()
    obj = a.result(rid)._id
    call = a.call(obj, "bump", 2)
    world.run_jobs()
    assert a.result(call) == 7
    call = a.call(obj, "fail")
    world.run_jobs()
    with pytest.raises(LookupError, match="custom failure"):
        a.result(call)
    with pytest.raises(MethodNotExposed):
        a.do(obj, "_private")
    assert isinstance(world.core, Core)


def test_stats_show_holders_and_waiters(world: World) -> None:
    a, b = world.client("holder"), world.client("waiter")
    lock = a.create("Lock")
    a.do(lock, "acquire", owner=5)
    b.call(lock, "acquire")
    stats = a.control("stats")
    [obj] = [o for o in stats["objects"] if o["id"] == lock]
    assert obj["state"]["holder"]["name"] == "holder"
    assert obj["state"]["holder"]["owner"] == 5
    assert [w["name"] for w in obj["state"]["waiters"]] == ["waiter"]
    assert {s["name"] for s in stats["sessions"]} >= {"holder", "waiter"}


# -- reusing encoded snapshots ----------------------------------------------------------------


def test_large_snapshots_are_reused_until_the_object_changes(world: World) -> None:
    a = world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    first = a.do(d, "copy")
    entry = world.core.objects[d]
    assert entry.snapshot is not None and entry.snapshot[1] == "copy"
    cached = entry.snapshot
    assert a.do(d, "copy") == first
    assert entry.snapshot is cached  # reused, not encoded again
    a.do(d, "__setitem__", "new", 1)
    assert entry.snapshot is None
    assert a.do(d, "copy") == {**first, "new": 1}
    assert a.do(d, "items")[-1] == ("new", 1)  # another method: its own snapshot


def test_conditional_reads_answer_none_while_unchanged(world: World) -> None:
    a, b = world.client(), world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    value, version = a.since(d, "copy", -1)
    assert value == {i: i for i in range(5000)}
    assert a.since(d, "copy", version) is None
    assert b.since(d, "items", version) is None  # any reader, any whole-object method
    cached = world.core.objects[d].snapshot
    assert cached is not None and cached[1] == "since copy"
    assert b.since(d, "copy", -1) == (value, version)  # the pair, reused
    assert world.core.objects[d].snapshot is cached
    a.do(d, "__setitem__", "new", 1)
    value, newer = b.since(d, "items", version)  # not answered with changes
    assert newer == version + 1 and value[-1] == ("new", 1)
    assert a.do(d, "copy") == dict(value)  # plain reads keep their own snapshot


def test_conditional_copies_are_answered_with_the_changes_since(world: World) -> None:
    a, b = world.client(), world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    _, version = a.since(d, "copy", -1)  # the first one starts the object's log
    a.do(d, "__setitem__", "new", 1)
    a.do(d, "pop", 0)
    a.do(d, "update", {1: "one"}, two=2)
    with pytest.raises(KeyError):
        a.do(d, "pop", "missing")  # failures change nothing: not logged
    changes, newer, delta = b.since(d, "copy", version)
    assert delta is True and newer == version + 3
    assert changes == [
        ("__setitem__", ("new", 1), None, None),
        ("pop", (0,), None, 0),
        ("update", ({1: "one"},), {"two": 2}, None),
    ]
    assert b.since(d, "copy", version + 2)[0] == changes[2:]
    assert b.since(d, "copy", newer) is None
    lst = a.create("list", list(range(1000)))
    _, version = a.since(lst, "#GETVALUE", -1)
    a.do(lst, "append", "x")
    assert a.since(lst, "#GETVALUE", version) == (
        [("append", ("x",), None, None)],
        version + 1,
        True,
    )


@pytest.mark.parametrize(
    "change",
    [
        ("update", {f"k{i}": i for i in range(1000)}),  # more items than an eighth of the dict
        ("update", {f"k{i}": i for i in range(5000)}),  # more than the log keeps of one change
    ],
)
def test_large_changes_send_the_whole_object(world: World, change: tuple[Any, ...]) -> None:
    a = world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    _, version = a.since(d, "copy", -1)
    a.do(d, "__setitem__", "small", 1)
    a.do(d, *change)
    value, newer = a.since(d, "copy", version)
    assert newer == version + 2 and value == a.do(d, "copy")


def test_changes_older_than_the_log_send_the_whole_object(world: World) -> None:
    a = world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    _, version = a.since(d, "copy", -1)
    for i in range(100):  # more than the log keeps
        a.do(d, "__setitem__", i, -i)
    value, newer = a.since(d, "copy", version)
    assert newer == version + 100 and value[99] == -99
    changes, _, _ = a.since(d, "copy", newer - 3)  # recent ones are still there
    assert [c[1] for c in changes] == [(97, -97), (98, -98), (99, -99)]
    assert a.since(d, "copy", newer + 5)[1] == newer  # a version from nowhere: all


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("copy",), TypeError),
        (("copy", "0"), TypeError),
        (("pop", 0), TypeError),  # not a whole-object read
        ((0, 0), TypeError),
    ],
)
def test_malformed_conditional_reads_are_refused(
    world: World, args: tuple[Any, ...], error: type[Exception]
) -> None:
    a = world.client()
    d = a.create("dict", {"k": 1})
    with pytest.raises(error):
        a.since(d, *args)
    lock = a.create("Lock")
    with pytest.raises(MethodNotExposed):
        a.since(lock, "#GETVALUE", 0)
    lst = a.create("list", [1])
    with pytest.raises(MethodNotExposed):
        a.since(lst, "keys", 0)  # a list has no keys()
    assert a.do(d, "copy") == {"k": 1}


def test_conditional_reads_of_custom_types_say_to_read_plainly(world: World) -> None:
    from procshare._manager import Registration, _server_types
    from procshare._protocol import Create

    world.core.types.update(_server_types({"Counter": Registration(Counter, None, None, None)}))
    a = world.client()
    rid = next(a._ids)
    a.send(Create(rid, "Counter", (5,), None, 0))
    world.run_jobs()
    obj = a.result(rid)._id
    assert a.since(obj, "copy", -1) is False  # a custom class: no versions to compare


def test_small_snapshots_are_not_kept(world: World) -> None:
    a = world.client()
    d = a.create("dict", {"a": 1})
    assert a.do(d, "copy") == {"a": 1}
    assert world.core.objects[d].snapshot is None


def test_a_call_that_fails_part_way_counts_as_a_change(world: World) -> None:
    a, watcher = world.client(), world.client()
    d = a.create("dict", {i: i for i in range(5000)})
    a.do(d, "copy")
    assert world.core.objects[d].snapshot is not None
    watcher.watch(d)
    version = world.core.objects[d].version
    with pytest.raises(ValueError):
        a.do(d, "update", [("new", 1), "bad!"])  # sets "new", then fails on the second item
    entry = world.core.objects[d]
    assert entry.version == version + 1 and entry.snapshot is None
    assert a.do(d, "copy")["new"] == 1
    [event] = watcher.pushes
    assert event.payload[1:4] == (version + 1, "update", ([("new", 1), "bad!"],))
    with pytest.raises(KeyError):
        a.do(d, "pop", "missing")  # fails before changing anything: not a change
    assert world.core.objects[d].version == version + 1 and len(watcher.pushes) == 1


# -- watching -------------------------------------------------------------------------------


def test_watchers_get_each_change_in_order_with_versions(world: World) -> None:
    a, watcher = world.client(), world.client()
    d = a.create("dict")
    sub, answer = watcher.watch(d, snapshot=True)
    assert answer == {"version": 0, "value": {}}
    a.do(d, "__setitem__", "k", 1)
    a.do(d, "__getitem__", "k")  # reads publish nothing
    a.do(d, "pop", "k")
    with pytest.raises(KeyError):
        a.do(d, "pop", "k")  # failures publish nothing
    assert [(p.sub_id, p.payload[1:4]) for p in watcher.pushes] == [
        (sub, (1, "__setitem__", ("k", 1))),
        (sub, (2, "pop", ("k",))),
    ]
    assert watcher.pushes[1].payload[5] == 1  # the result travels too


def test_a_watcher_that_falls_behind_is_told_how_many_it_missed(world: World) -> None:
    a, watcher = world.client(), world.client()
    lst = a.create("list")
    watcher.watch(lst)
    watcher.session.backlog = world.core.watching.backlog + 1  # its connection stopped draining
    for i in range(10):
        a.do(lst, "append", i)
    assert watcher.pushes == []
    watcher.session.backlog = 0  # it caught up
    world.advance(0.01)
    [overflow] = watcher.pushes
    assert overflow.payload[2:4] == ("overflow", (10,))
    a.do(lst, "append", "next")
    assert watcher.pushes[-1].payload[2:4] == ("append", ("next",))


def test_subscriptions_end_with_their_session(world: World) -> None:
    a, watcher = world.client(), world.client()
    d = a.create("dict")
    watcher.watch(d)
    assert world.core.objects[d].watchers
    watcher.die()
    assert not world.core.objects[d].watchers
    a.do(d, "__setitem__", 1, 1)  # publishing to nobody is fine
