"""The same program on the stdlib's manager and on procshare gives the same results: the stdlib
is the oracle (each test runs one scenario on both and compares; nothing is hand-written).

Where procshare does more (a killed process's locks freed, its unfinished items delivered
again), the scenario uses a process that *exits*: the stdlib defines what happens then.
"""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests import _children as children


def both(manager: Any, stdlib_manager: Any, scenario: Callable[[Any], Any]) -> None:
    """Run ``scenario(manager)`` on each and compare what they give."""
    ours, theirs = scenario(manager), scenario(stdlib_manager)
    assert ours == theirs


def test_a_consumer_that_exits_without_task_done_keeps_its_items(
    manager: Any, stdlib_manager: Any, ctx: Any
) -> None:
    def scenario(m: Any) -> Any:
        q = m.JoinableQueue()
        for i in range(5):
            q.put(i)
        p = ctx.Process(target=children.take_and_exit, args=(q, 2))
        p.start()
        p.join(30)
        return p.exitcode, q.qsize(), [q.get(timeout=5) for _ in range(q.qsize())]

    both(manager, stdlib_manager, scenario)


def _kill_a_consumer_of_two(q: Any, ctx: Any) -> None:
    """Put 0..4 in ``q``; a consumer takes two of them and is killed with -9."""
    for i in range(5):
        q.put(i)
    ready = ctx.Event()
    p = ctx.Process(target=children.take_and_hang, args=(q, 2, ready))
    p.start()
    assert ready.wait(30)
    os.kill(p.pid, signal.SIGKILL)
    p.join()


def test_a_killed_consumers_unfinished_items_are_delivered_again(manager: Any, ctx: Any) -> None:
    """(procshare's own: the stdlib loses them) At least once for killed consumers."""
    q = manager.JoinableQueue()
    _kill_a_consumer_of_two(q, ctx)
    assert sorted(q.get(timeout=10) for _ in range(5)) == [0, 1, 2, 3, 4]


def test_at_most_once_if_asked(manager: Any, ctx: Any) -> None:
    q = manager.JoinableQueue(redeliver=False)
    _kill_a_consumer_of_two(q, ctx)
    assert [q.get(timeout=5) for _ in range(3)] == [2, 3, 4]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)  # what the killed consumer took is gone with it
