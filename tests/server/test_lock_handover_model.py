"""The lock's hand-over on random interleavings: acquires (blocking, non-blocking, with
timeouts), releases, deaths and the clock moving by any amount.

After every step:
* **one holder**: at most one client believes it holds the lock, and the server agrees;
* **nobody is stranded**: a free lock with waiters always has an open window, which a tick at
  its end closes by handing the lock over;
* **bounded barging**: nobody takes the lock past a waiter that has waited more than
  ``FAIR_AFTER`` plus one window.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from procshare._server._objects import FAIR_AFTER, Lock

from .harness import Client, World

WINDOW = 50e-6
CLIENTS = 4


@dataclass
class _State:
    client: Client
    holding: bool = False
    waiting: int | None = None  # the parked request
    since: float = 0.0
    deadline: float | None = None


class LockHandover(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.world.core.lock_window = WINDOW
        owner = self.world.client("owner")
        self.lock_id = owner.create("Lock")
        self.lock = self.world.core.objects[self.lock_id].referent
        assert isinstance(self.lock, Lock)
        self.clients = [_State(self.world.client(f"c{i}")) for i in range(CLIENTS)]

    @property
    def now(self) -> float:
        return self.world.clock.now

    def _settle(self) -> None:
        """Take in the answers to parked acquires."""
        for state in self.clients:
            if state.waiting is not None and not state.client.pending(state.waiting):
                granted = state.client.result(state.waiting)
                if granted:
                    state.holding = True
                else:
                    assert state.deadline is not None and self.now >= state.deadline
                state.waiting = None

    def _longest_wait(self) -> float:
        waits = [self.now - s.since for s in self.clients if s.waiting is not None]
        return max(waits, default=0.0)

    def _idle(self) -> list[_State]:
        return [s for s in self.clients if s.client.alive and not s.holding and s.waiting is None]

    @precondition(lambda self: self._idle())
    @rule(data=st.data(), timeout=st.sampled_from([None, None, 0.0, WINDOW, 1e-3]))
    def acquire(self, data: st.DataObject, timeout: float | None) -> None:
        state = data.draw(st.sampled_from(self._idle()))
        longest = self._longest_wait()
        args = (True,) if timeout is None else (True, timeout)
        rid = state.client.call(self.lock_id, "acquire", *args)
        if not state.client.pending(rid):
            got = state.client.result(rid)
            if got:
                assert longest <= FAIR_AFTER + WINDOW, "barged past a waiter parked too long"
                state.holding = True
            else:
                assert timeout == 0.0
            return
        assert timeout != 0.0
        state.waiting, state.since = rid, self.now
        state.deadline = None if timeout is None else self.now + timeout

    @precondition(lambda self: any(s.holding for s in self.clients))
    @rule()
    def release(self) -> None:
        [state] = [s for s in self.clients if s.holding]
        state.client.do(self.lock_id, "release")
        state.holding = False
        self._settle()

    @rule(dt=st.sampled_from([1e-6, 10e-6, WINDOW / 2, WINDOW, 0.3e-3, FAIR_AFTER]))
    def advance(self, dt: float) -> None:
        self.world.advance(dt)
        self._settle()

    @precondition(lambda self: sum(s.client.alive for s in self.clients) > 2)
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        state = data.draw(st.sampled_from([s for s in self.clients if s.client.alive]))
        state.client.die()
        state.holding, state.waiting = False, None
        self._settle()

    @invariant()
    def one_holder(self) -> None:
        holders = [s for s in self.clients if s.holding]
        assert len(holders) <= 1
        if holders:
            assert self.lock.holder is not None
            assert self.lock.holder[0] is holders[0].client.session
        else:
            assert self.lock.holder is None

    @invariant()
    def nobody_is_stranded(self) -> None:
        if self.lock.holder is None and self.lock.waiters:
            assert self.lock._open_until > 0.0, "a free lock with waiters and no window"
            assert self.lock._open_until <= self.now + WINDOW


TestLockHandover = LockHandover.TestCase
TestLockHandover.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
