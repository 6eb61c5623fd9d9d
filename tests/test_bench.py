"""The bench's own helpers (its cases run end to end in tests/system/test_cli.py)."""

from __future__ import annotations

import time

from procshare._bench import PACED_CALLS_PER_S, _dict_set_paced


class _Stamped(dict[int, int]):
    """A dict that notes when each item was set."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def __setitem__(self, key: int, value: int) -> None:
        self.stamps.append(time.perf_counter())
        super().__setitem__(key, value)


def test_paced_sets_are_all_made_and_never_ahead_of_the_pace() -> None:
    d = _Stamped()
    before = time.perf_counter()  # (the schedule starts after this)
    _dict_set_paced(d, 50)
    assert d == {i: i for i in range(50)}
    period = 1.0 / PACED_CALLS_PER_S
    # (a lower bound only, which sleeping guarantees: never ahead of the schedule; measured
    # from before the schedule's start, not from the first set, which a busy machine may
    # delay: the sets after it then catch up with the schedule, as they should)
    assert all(t - before >= i * period - 1e-6 for i, t in enumerate(d.stamps))
