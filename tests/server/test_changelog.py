"""The bounded log of recent changes that lets re-reads of large objects be answered with them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from procshare._server._changelog import ChangeLog


def test_the_last_changes_come_back_oldest_first() -> None:
    log = ChangeLog()
    for i in range(5):
        log.record("__setitem__", (i, -i), None, None)
    assert log.last(2, budget=100) == [
        ("__setitem__", (3, -3), None, None),
        ("__setitem__", (4, -4), None, None),
    ]
    assert log.last(5, budget=100) is not None
    assert log.last(6, budget=100) is None  # older than the log
    assert log.last(0, budget=100) is None
    assert log.last(2, budget=1) is None  # replaying would cost more than sending it all


def test_the_log_keeps_a_bounded_number_of_changes() -> None:
    log = ChangeLog()
    for i in range(ChangeLog.MAX_CHANGES * 3):
        log.record("append", (i,), None, None)
    assert len(log) == ChangeLog.MAX_CHANGES
    newest = log.last(1, budget=10)
    assert newest == [("append", (ChangeLog.MAX_CHANGES * 3 - 1,), None, None)]


def test_heavy_changes_are_not_kept_alive() -> None:
    log = ChangeLog()
    log.record("__setitem__", ("small", 1), None, None)
    log.record("__setitem__", ("big", "x" * (ChangeLog.MAX_WEIGHT + 1) * 1024), None, None)
    assert len(log) == 0  # emptied: readers behind it get the whole object
    log.record("update", ({i: i for i in range(ChangeLog.MAX_WEIGHT // 2)},), None, None)
    log.record("update", ({i: i for i in range(ChangeLog.MAX_WEIGHT // 2)},), None, None)
    assert len(log) == 1  # the older one was dropped to stay within the weight
    log.record("pop", ("k",), None, b"y" * (ChangeLog.MAX_WEIGHT + 1) * 1024)  # results weigh too
    assert len(log) == 0


@given(st.lists(st.integers(0, 3000), max_size=200))
def test_whatever_is_recorded_the_log_stays_within_its_bounds(sizes: list[int]) -> None:
    log = ChangeLog()
    for size in sizes:
        log.record("extend", (list(range(size)),), None, None)
        assert len(log) <= ChangeLog.MAX_CHANGES
        kept = log.last(len(log), budget=10**9) or []
        assert sum(1 + len(change[1][0]) for change in kept) <= ChangeLog.MAX_WEIGHT
        if kept:
            assert kept[-1][1][0] == list(range(size))  # the newest is always the last one
