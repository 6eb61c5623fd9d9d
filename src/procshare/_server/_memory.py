"""``max_memory``: a server that refuses changes past a memory budget (Redis's ``maxmemory``
with ``noeviction``), instead of growing until the machine swaps or the OOM killer strikes.

One call can allocate without bound (``lst *= 10**9`` asks for 8 GB at once), so a check after
the fact is too late: the limit is enforced by the kernel, at the allocation. The server sets
its own ``RLIMIT_DATA`` (private writable memory: the heap, Python's arenas, large buffers) to
what it used when it started plus the budget; an allocation that would pass it fails in the
operation that made it, as a ``MemoryError``, which the core turns into ``MemoryLimitError``
for that call alone (CPython leaves a container unchanged when growing it fails).

Two details make that safe:

* **Thread stacks count** against ``RLIMIT_DATA`` (8 MB each, touched or not), so the limit
  grows by a stack for every thread the server starts and shrinks when it ends: the budget is
  for data only.
* **Headroom.** At the limit every allocation fails, the server's own too (reading the next
  request, encoding a reply). So while calls come the server looks at what it uses (every
  ``CHECK_EVERY``: under 1 us from ``/proc/self/statm``) and turns *full* within
  ``headroom`` of the budget (16 MiB, or an eighth of a small budget; it looks when the kernel
  refused an
  allocation): it refuses at once the calls that would add data (``ADDING``, creating an
  object) and serves the others (reads, removals, locks), until a check finds room again.

Linux only (``/proc/self/statm`` and ``RLIMIT_DATA`` as Linux 4.7+ counts it).
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import threading
import time
from collections.abc import Callable
from typing import Final

from .._errors import MemoryLimitError

__all__ = ["ADDING", "MemoryGuard", "describe_size", "parse_size"]

#: how close to the budget the server turns full, at most (module docstring)
HEADROOM: Final = 16 * 1024 * 1024
#: how often the server looks at what it uses, while calls come (seconds)
CHECK_EVERY: Final = 0.001
#: near its limit, it also asks malloc what is free inside: as often, unless that takes long
#: (it walks malloc's free lists: ~1.5 ms with 10,000 free chunks); then this many times as
#: long between two asks
FREE_CHECK_SPACING: Final = 10
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
#: the built-in kinds' methods that add data, refused while the server is full (an Array's
#: ``__setitem__`` excepted: its size is fixed); the others (reads, removals, locks, events,
#: a Value's set) are served
ADDING: Final = frozenset(
    {
        "__setitem__",
        "__setattr__",
        "__ior__",
        "__iadd__",
        "__imul__",
        "append",
        "extend",
        "insert",
        "setdefault",
        "update",
        "add",
        "symmetric_difference_update",
        "put",
        "put_nowait",
    }
)

_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: int | str) -> int:
    """Bytes from ``1_000_000``, ``"512MiB"``, ``"2GB"``, ``"1.5g"`` (k/m/g/t: powers of 1000;
    KiB/MiB/GiB/TiB: of 1024). Raises ``ValueError`` (``TypeError`` for other types)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"a size is an int of bytes or a string such as '512MiB', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"not a size: {value!r} (write bytes, or e.g. '512MiB', '2GB')")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a memory limit must be positive, not {value!r}")
    return size


def describe_size(size: int) -> str:
    """``size`` bytes for people: ``"512 MiB"``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} B"


def _data_bytes(fd: int) -> int:
    """This process's private writable memory, in bytes: the data (and stack) field of
    ``/proc/self/statm`` (open as ``fd``), what ``RLIMIT_DATA`` limits."""
    return int(os.pread(fd, 256, 0).split()[5]) * _PAGE


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_free_function() -> Callable[[], int]:
    """A function giving the bytes free inside malloc's heap (glibc 2.33+'s ``mallinfo2``:
    freed, not returned to the kernel, reused by the next allocations), or 0 without it."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return lambda: 0
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    return lambda: int(mallinfo2().fordblks)


def _stack_size() -> int:
    """The bytes a new thread's stack takes (glibc: ``threading.stack_size()``, else the
    soft ``RLIMIT_STACK``, else 8 MiB), with its guard page."""
    size = threading.stack_size()
    if not size:
        soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
        size = soft if 0 < soft < 1 << 40 else 8 * 1024 * 1024
    return size + os.sysconf("SC_PAGE_SIZE")


class MemoryGuard:
    """Keeps the server within ``budget`` bytes of data beyond what it used at ``start()``."""

    def __init__(self, budget: int) -> None:
        if not os.path.exists("/proc/self/statm") or not hasattr(resource, "RLIMIT_DATA"):
            raise ValueError("max_memory needs Linux (RLIMIT_DATA and /proc)")
        self.budget = budget
        self.headroom = min(HEADROOM, budget // 8)
        self.base = 0
        #: refusing changes that add data (module docstring)
        self.full = False
        self.refusals = 0
        self.next_check = 0.0
        self._next_free_check = 0.0
        self._malloc_free = _malloc_free_function()
        self._base_free = 0
        self._fd = -1
        self._stack = _stack_size()
        self._threads = 0
        self._lock = threading.Lock()
        self._hard = resource.RLIM_INFINITY

    def start(self) -> None:
        """Apply the limit to this process (the server's), from what it uses now."""
        self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self._hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        self.base = _data_bytes(self._fd)
        self._base_free = self._malloc_free()  # (a forked server inherits its parent's heap)
        with self._lock:
            self._apply()

    def stop(self) -> None:
        """Lift the limit (the process may go on: ``serve_forever`` in a user's process)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            resource.setrlimit(resource.RLIMIT_DATA, (self._hard, self._hard))

    def _apply(self) -> None:
        if self._fd < 0:
            return
        limit = self.base + self.budget + self._threads * self._stack
        if self._hard != resource.RLIM_INFINITY:
            limit = min(limit, self._hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, self._hard))

    def thread_starting(self) -> None:
        """Make room for the stack of a thread about to start (``thread_ended`` after)."""
        with self._lock:
            self._threads += 1
            self._apply()

    def thread_ended(self) -> None:
        with self._lock:
            self._threads -= 1
            self._apply()

    def mapped(self) -> int:
        """Data bytes mapped beyond ``base`` (what the kernel's limit counts), stacks aside."""
        if self._fd < 0:
            return 0
        return max(0, _data_bytes(self._fd) - self.base - self._threads * self._stack)

    def used(self) -> int:
        """Data bytes in use beyond ``base``: mapped, less what malloc holds free (memory a
        ``del`` freed stays mapped, and is reused by the next allocations)."""
        return max(0, self.mapped() - max(0, self._malloc_free() - self._base_free))

    def check(self, now: float) -> bool:
        """Look at what the server uses (``now``: the monotonic clock; the next look is due
        ``CHECK_EVERY`` later); whether it is full (within ``headroom`` of the budget)."""
        self.next_check = now + CHECK_EVERY
        threshold = self.budget - self.headroom
        if self.mapped() < threshold:
            self.full = False  # (the usual case: one read of /proc)
        elif now >= self._next_free_check:
            start = time.perf_counter()
            # Full from the threshold on; room again only well below it, so that the
            # server does not flap at it (what a refused call had allocated is free again).
            used = self.used()
            self.full = used >= threshold - (self.headroom // 2 if self.full else 0)
            spent = time.perf_counter() - start
            self._next_free_check = now + max(CHECK_EVERY, FREE_CHECK_SPACING * spent)
        return self.full

    def refused(self) -> MemoryLimitError:
        """The kernel refused an allocation at the limit: the error its caller gets. (Whether
        the server is full now depends on what it holds: one huge request refused leaves it
        far from its limit.)"""
        self.full = self.full or self.used() >= self.budget - self.headroom
        self._next_free_check = 0.0
        self.refusals += 1
        return MemoryLimitError(
            f"the server's max_memory ({describe_size(self.budget)}) would be exceeded: "
            "the call was refused"
        )

    def refusal(self) -> MemoryLimitError:
        """The error of a change refused because the server is full."""
        self.refusals += 1
        return MemoryLimitError(
            f"the server is at its max_memory ({describe_size(self.budget)}): changes that add "
            "data are refused until some is freed (del, pop, clear)"
        )

    def describe(self) -> dict[str, object]:
        return {
            "max": self.budget,
            "used": self.used(),
            "mapped": self.mapped(),
            "full": self.full,
            "refusals": self.refusals,
        }
