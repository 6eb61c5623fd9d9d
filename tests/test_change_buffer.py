"""The bounded change queue of watches (sync and asyncio): nothing lost without being counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from procshare import Change
from procshare._client._push import ChangeBuffer

# a step: ("add", n) adds change n; ("lost", k) is the server reporting k missed; "take"
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 10**6)),
        st.tuples(st.just("lost"), st.integers(1, 5)),
        st.just("take"),
    ),
    max_size=60,
)


@given(st.integers(1, 5), steps)
def test_every_change_is_delivered_or_counted_in_order(maxsize: int, script: list) -> None:
    buf = ChangeBuffer(maxsize)
    sent = 0
    seen: list[int] = []
    counted = 0

    def take() -> Change | None:
        nonlocal counted
        change = buf.take()
        if change is not None:
            if change.op == "overflow":
                assert change.missed > 0 and change.args == (change.missed,)
                counted += change.missed
            else:
                seen.append(change.version)
        return change

    version = 0
    for step in script:
        if step == "take":
            take()
        elif step[0] == "add":
            version += 1
            buf.add(Change("set", (step[1],), None, version))
            sent += 1
        else:
            buf.add(Change("overflow", (step[1],), None, version, None, step[1]))
            sent += step[1]
    while take() is not None:
        pass
    assert len(seen) + counted == sent  # delivered, or reported missed: nothing vanishes
    assert seen == sorted(seen)  # in the order the server applied them


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ChangeBuffer(0)
