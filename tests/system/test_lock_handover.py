"""A lock's hand-over between real processes (``Lock`` in ``_server/_objects.py``): a process
that takes the lock again at once may keep it for a moment, but never starves a waiter, and
``fair_locks=True`` hands the lock over in strict arrival order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from tests import _children as children

FORK = procshare.get_context("fork")


@pytest.fixture(scope="module")
def wide() -> Iterator[procshare.SyncManager]:
    """A server whose released locks stay free for 10 ms: long enough for a process taking
    the lock again to be back every time, on any machine, so only the fairness rule can hand a
    waiter the lock."""
    m = procshare.SyncManager(ctx=FORK, spin=0.02)
    m._options["lock_window"] = 0.01
    m.start()
    yield m
    m.shutdown()


def _waiter_against_relocker(m: procshare.SyncManager, ctx: Any, kind: str) -> int:
    """Lock a lock that another process takes again at once; the turns it took meanwhile."""
    lock = getattr(m, kind)()
    started, stop, out = m.Event(), m.Event(), m.Queue()
    limit = 20_000  # seconds of turns: the waiter is due after ~1 ms of them
    hammer = ctx.Process(
        target=children.relock_until_stopped, args=(lock, started, stop, limit, out)
    )
    hammer.start()
    try:
        assert started.wait(60)
        got = lock.acquire(timeout=60)
        stop.set()
        if got:
            lock.release()
        turns = int(out.get(timeout=60))
        hammer.join(60)
    finally:
        if hammer.is_alive():
            hammer.kill()
            hammer.join()
    assert got
    assert turns < limit, "the waiter only got the lock when the other process stopped"
    assert hammer.exitcode == 0
    return turns


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_process_taking_the_lock_again_at_once_does_not_starve_a_waiter(
    wide: procshare.SyncManager, ctx: Any, kind: str
) -> None:
    _waiter_against_relocker(wide, ctx, kind)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_fair_locks_hand_over_in_arrival_order(ctx: Any, kind: str) -> None:
    with procshare.Manager(ctx=FORK, fair_locks=True) as m:
        _waiter_against_relocker(m, ctx, kind)
        assert m.stats()["counters"]["lock barges"] == 0
