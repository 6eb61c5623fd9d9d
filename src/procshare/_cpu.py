"""CPU facts the busy-polling decisions need: how many CPUs we may use, which one we're on.

``sched_getcpu`` is read through the vDSO: about 0.1 us, cheap enough for every call.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

__all__ = ["available_cpus", "current_cpu"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_getcpu() -> Callable[[], int]:
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return lambda: -1
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu


#: The CPU the calling thread runs on now, or -1 where the platform cannot tell.
current_cpu: Callable[[], int] = _load_getcpu()
