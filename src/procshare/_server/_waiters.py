"""Parked callers: a fair FIFO wait queue and a deadline heap, with no threads.

A blocking operation that cannot complete now (``Lock.acquire``, ``Queue.get``, ...) becomes a
:class:`Waiter` parked in the object's :class:`WaitQueue`; the operation that satisfies it later
unparks it and answers its request. Every lock, semaphore, condition, event, barrier and queue
uses this one queue, as trio builds every primitive on its ParkingLot.

Invariants:
* FIFO: ``first()``/``pop()`` return waiters in the order they parked. (Whether a newcomer may
  overtake them is the primitive's choice: a Lock briefly may, see ``Lock``.)
* A waiter is in at most one queue; ``cancel()`` removes it in O(1) (lazy deletion: the deque
  keeps a dead slot that is skipped later, and is compacted when dead slots outnumber live ones).
* A waiter is settled (woken, timed out or cancelled) once per parking; a deadline counts only
  for the parking it was set for (the heap entry must still match ``waiter.deadline``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._host import Host
    from ._session import Session

__all__ = ["DeadlineHeap", "WaitQueue", "Waiter"]

PARKED: Final = 0
DONE: Final = 1


class Waiter:
    """A request parked until another operation (or its deadline) settles it.

    Attributes:
        session: the connection that asked; its death cancels the waiter.
        req_id: the request to answer.
        owner: the owner tag of the request (lock ownership).
        deadline: monotonic time after which ``on_timeout`` answers it, or ``None``.
        data: what the primitive needs to finish the operation (the item to put, say).
        on_timeout: called with (host, waiter) when its deadline passes while parked; it must
            take the waiter out of its queue and answer it.
        on_cancel: called with (host, waiter) after its session went away while it was parked
            (a barrier breaks); the waiter is already out of its queue.
        on_withdraw: called with (host, waiter) when its caller abandons the request while it
            is parked (``Cancel``), in place of the default (taken out, answered
            ``CallWithdrawn``): a Condition wait re-acquires its lock, a Barrier renumbers.
    """

    __slots__ = (
        "data",
        "deadline",
        "on_cancel",
        "on_timeout",
        "on_withdraw",
        "owner",
        "queue",
        "req_id",
        "session",
        "since",
        "state",
    )

    def __init__(
        self,
        session: Session,
        req_id: int,
        owner: int,
        *,
        since: float,
        deadline: float | None = None,
        data: Any = None,
        on_timeout: Callable[[Host, Waiter], None] | None = None,
        on_cancel: Callable[[Host, Waiter], None] | None = None,
        on_withdraw: Callable[[Host, Waiter], None] | None = None,
    ) -> None:
        self.session = session
        self.req_id = req_id
        self.owner = owner
        self.since = since
        self.deadline = deadline
        self.data = data
        self.on_timeout = on_timeout
        self.on_cancel = on_cancel
        self.on_withdraw = on_withdraw
        self.queue: WaitQueue | None = None
        self.state = PARKED

    @property
    def parked(self) -> bool:
        """Still waiting."""
        return self.state == PARKED

    def __repr__(self) -> str:
        return (
            f"<Waiter session={self.session.id} req={self.req_id} owner={self.owner:#x} "
            f"{'parked' if self.parked else 'done'}>"
        )


class WaitQueue:
    """A fair FIFO queue of parked waiters."""

    __slots__ = ("_items", "live")

    def __init__(self) -> None:
        self._items: deque[Waiter] = deque()
        #: how many are parked (read where a call would cost too much: ``Lock.release``)
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def __bool__(self) -> bool:
        return self.live > 0

    def __iter__(self) -> Iterator[Waiter]:
        """Live waiters, oldest first."""
        return (w for w in self._items if w.queue is self)

    def park(self, waiter: Waiter) -> None:
        """Append ``waiter`` (it must not be in another queue). A waiter taken out of one queue
        may be parked again in another (a Condition waiter moving on to reacquire its lock)."""
        if waiter.queue is not None:
            raise RuntimeError(f"{waiter!r} is already parked in a queue")
        waiter.state = PARKED
        waiter.queue = self
        self._items.append(waiter)
        self.live += 1

    def first(self) -> Waiter | None:
        """The oldest live waiter, left in place, or ``None``."""
        items = self._items
        while items and items[0].queue is not self:
            items.popleft()
        return items[0] if items else None

    def pop(self) -> Waiter | None:
        """Remove and return the oldest live waiter, or ``None``. It is marked settled."""
        waiter = self.first()
        if waiter is not None:
            self._items.popleft()
            self._detach(waiter)
        return waiter

    def pop_all(self) -> list[Waiter]:
        """Remove and return every live waiter, oldest first."""
        out = [w for w in self._items if w.queue is self]
        self._items.clear()
        for w in out:
            self._detach(w)
        return out

    def remove(self, waiter: Waiter) -> None:
        """Take ``waiter`` out wherever it is (timeout, cancellation)."""
        if waiter.queue is not self:
            return
        self._detach(waiter)
        if len(self._items) > 32 and len(self._items) > 2 * self.live:
            self._items = deque(w for w in self._items if w.queue is self)

    def _detach(self, waiter: Waiter) -> None:
        waiter.queue = None
        waiter.state = DONE
        self.live -= 1


class DeadlineHeap:
    """Waiters with deadlines, earliest first; settled waiters are skipped lazily."""

    __slots__ = ("_seq", "heap")

    def __init__(self) -> None:
        #: ``(deadline, sequence, waiter)``, a heap (the core looks whether it is empty)
        self.heap: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.heap)

    def add(self, waiter: Waiter) -> None:
        """Track ``waiter``'s deadline (it must have one)."""
        if waiter.deadline is None:
            raise ValueError("waiter has no deadline")
        heapq.heappush(self.heap, (waiter.deadline, next(self._seq), waiter))

    def next_deadline(self) -> float | None:
        """The earliest deadline of a still-parked waiter, or ``None``."""
        heap = self.heap
        while heap and not _current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> bool:
        """Whether ``pop_expired(now)`` has something to do: a deadline at or before ``now``,
        or a stale entry on top (dropped at once, so that satisfied waiters with long
        timeouts do not pile up under load)."""
        heap = self.heap
        return bool(heap) and (heap[0][0] <= now or not _current(heap[0]))

    def pop_expired(self, now: float) -> list[Waiter]:
        """Remove and return the parked waiters whose deadline is at or before ``now``."""
        heap = self.heap
        out = []
        while heap and (heap[0][0] <= now or not _current(heap[0])):
            entry = heapq.heappop(heap)
            if _current(entry):
                out.append(entry[2])
        return out


def _current(entry: tuple[float, int, Waiter]) -> bool:
    """Whether a heap entry still describes a parked waiter's deadline."""
    waiter = entry[2]
    return waiter.state == PARKED and waiter.deadline == entry[0]
