"""How long the server's loop sleeps in poll() before its next deadline (``poll_timeout``).

poll() sleeps whole milliseconds and rounds a shorter timeout up, so the loop sleeps the whole
milliseconds before a deadline and busy-polls the rest: a parked call's short timeout fires
on time, not up to a millisecond late.
"""

from __future__ import annotations

import pytest

from procshare._server._transport import poll_timeout

NOW = 5000.0


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (None, 1.0),  # nothing due: wake once a second anyway
        (-0.5, 0.0),  # overdue
        (0.0, 0.0),
        (0.0003, 0.0),  # nearer than poll() can sleep: busy-poll to it
        (0.000999, 0.0),
        (0.0015, 0.001),  # sleep the whole millisecond, busy-poll the rest
        (0.0372, 0.037),
        (5.0, 1.0),
    ],
)
def test_the_loop_never_sleeps_past_a_deadline(left: float | None, expected: float) -> None:
    deadline = None if left is None else NOW + left
    timeout = poll_timeout(deadline, NOW)
    assert timeout == pytest.approx(expected)
    if deadline is not None:
        assert NOW + timeout <= deadline or timeout == 0.0
