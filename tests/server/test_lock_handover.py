"""How a released lock reaches its next holder: a short window for whoever asks first, with
eventual fairness (``Lock`` in ``_server/_objects.py``).

The core is driven by hand, with the window the transport sets when it busy-polls (the other
core tests run with no window: there the lock goes straight to its first waiter).
"""

from __future__ import annotations

import pytest

from procshare._server._objects import FAIR_AFTER

from .harness import World

WINDOW = 50e-6
TICK = 1e-6  # the clock moves a little between messages, as it does on a real server


@pytest.fixture
def world() -> World:
    world = World()
    world.core.lock_window = WINDOW
    return world


def _barges(world: World) -> int:
    return int(world.core.stats_counters["lock barges"])


def test_a_releaser_coming_back_within_the_window_takes_the_lock_again(world: World) -> None:
    a, b = world.client("a"), world.client("b")
    lock = a.create("Lock")
    a.do(lock, "acquire")
    waiting = b.call(lock, "acquire")
    world.advance(TICK)
    a.do(lock, "release")
    assert b.pending(waiting)  # not handed over yet: the lock is free for a moment
    assert a.do(lock, "locked") is False
    world.advance(WINDOW / 2)
    assert a.do(lock, "acquire") is True  # the releaser is back first
    assert _barges(world) == 1
    world.advance(2 * WINDOW)
    assert b.pending(waiting)  # the window closed when a took it: nothing handed over
    a.do(lock, "release")
    world.advance(2 * WINDOW)
    assert b.result(waiting) is True  # nobody came: the waiter has it
    assert a.do(lock, "acquire", False) is False  # ... and nobody else


def test_a_window_nobody_uses_hands_the_lock_to_the_first_waiter(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    rc = c.call(lock, "acquire")
    a.do(lock, "release")
    world.advance(WINDOW - TICK)
    assert b.pending(rb) and c.pending(rc)
    world.advance(2 * TICK)
    assert b.result(rb) is True and c.pending(rc)
    assert _barges(world) == 0


def test_a_non_blocking_acquire_may_take_an_open_lock(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    a.do(lock, "release")
    assert c.do(lock, "acquire", False) is True  # as threading.Lock's would
    c.do(lock, "release")
    world.advance(2 * WINDOW)
    assert b.result(rb) is True


def test_an_old_window_does_not_hand_over_a_lock_released_again_later(world: World) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    a.do(lock, "release")  # window 1: until t + WINDOW
    world.advance(WINDOW / 4)
    a.do(lock, "acquire")
    world.advance(WINDOW / 4)
    a.do(lock, "release")  # window 2: until t + 1.5 WINDOW
    world.advance(WINDOW * 0.75)  # past window 1 only
    assert b.pending(rb)
    assert a.do(lock, "acquire") is True  # window 2 is still open
    assert _barges(world) == 2
    a.do(lock, "release")
    world.advance(2 * WINDOW)
    assert b.result(rb) is True


def test_a_waiter_parked_long_enough_is_handed_the_lock_at_the_next_release(
    world: World,
) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    turns = 0
    while b.pending(rb):
        # a takes the lock again each time, as fast as it can
        world.advance(10e-6)
        a.do(lock, "release")
        if b.pending(rb):
            world.advance(TICK)
            assert a.do(lock, "acquire") is True
        turns += 1
        assert turns < 1000, "the waiter starved"
    # handed over at the first release after FAIR_AFTER, with no window
    assert FAIR_AFTER <= world.clock.now - 1000.0 < FAIR_AFTER + 20e-6
    assert a.do(lock, "acquire", False) is False


def test_unused_windows_make_the_next_releases_hand_over_at_once(world: World) -> None:
    a, b = world.client(), world.client()
    lock = a.create("Lock")

    def release_with_waiter() -> bool:
        """Release with b waiting; whether b had the lock at once (then b gives it back)."""
        rb = b.call(lock, "acquire")
        a.do(lock, "release")
        at_once = not b.pending(rb)
        if not at_once:
            world.advance(2 * WINDOW)  # nobody came back: a miss
        assert b.result(rb) is True
        b.do(lock, "release")
        a.do(lock, "acquire")
        world.advance(TICK)
        return at_once

    a.do(lock, "acquire")
    pattern = [release_with_waiter() for _ in range(1 + 2 + 1 + 4 + 1 + 8)]
    # a miss, then 2 at once; a miss, then 4 at once; a miss, then 8 at once
    assert pattern == [False, True, True, False, True, True, True, True, False] + [True] * 8
    # a window used resets the count: after the next miss, 2 at once again
    rb = b.call(lock, "acquire")
    a.do(lock, "release")
    assert a.do(lock, "acquire") is True  # used
    a.do(lock, "release")
    world.advance(2 * WINDOW)  # missed
    assert b.result(rb) is True
    b.do(lock, "release")
    a.do(lock, "acquire")
    assert [release_with_waiter() for _ in range(3)] == [True, True, False]


def test_a_dead_holder_and_a_condition_wait_hand_over_at_once(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    a.die()  # nobody is coming back for it
    assert b.result(rb) is True

    cond = b.create("Condition")
    b.do(cond, "acquire")
    rc = c.call(cond, "acquire")
    waiting = b.call(cond, "wait")
    assert c.result(rc) is True  # wait gave the lock up at once
    c.do(cond, "notify")
    c.do(cond, "release")
    world.advance(2 * WINDOW)
    assert b.result(waiting) is True


def test_rlock_opens_its_window_only_when_fully_released(world: World) -> None:
    a, b = world.client(), world.client()
    rlock = a.create("RLock")
    a.do(rlock, "acquire")
    a.do(rlock, "acquire")
    rb = b.call(rlock, "acquire")
    a.do(rlock, "release")
    world.advance(2 * WINDOW)
    assert b.pending(rb)  # still a's (once)
    a.do(rlock, "release")
    assert b.pending(rb)
    assert a.do(rlock, "acquire") is True
    a.do(rlock, "release")
    world.advance(2 * WINDOW)
    assert b.result(rb) is True


def test_waiters_that_time_out_or_die_in_a_window_leave_it_free(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire", True, WINDOW / 2)
    c.call(lock, "acquire")
    a.do(lock, "release")
    c.die()
    world.advance(WINDOW / 2)
    assert b.result(rb) is False
    world.advance(2 * WINDOW)
    assert a.do(lock, "locked") is False
    assert a.do(lock, "acquire", False) is True


def test_with_no_window_the_first_waiter_is_handed_the_lock_at_release() -> None:
    world = World()  # lock_window 0: the transport does not busy-poll (one CPU)
    a, b = world.client(), world.client()
    lock = a.create("Lock")
    a.do(lock, "acquire")
    rb = b.call(lock, "acquire")
    a.do(lock, "release")
    assert b.result(rb) is True
