"""For tests that kill a process holding something: start it, and kill it (``kill -9``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

FORK = multiprocessing.get_context("fork")
WAIT = 10.0  # seconds: how long a test waits before calling it a deadlock


def start_holder(target: Callable[..., Any], *args: Any) -> Any:
    """Start ``target(*args, ready)`` in a child and wait until it says it holds the thing."""
    ready = FORK.Event()
    p = FORK.Process(target=target, args=(*args, ready))
    p.start()
    assert ready.wait(WAIT), "the child never got hold of it"
    return p


def kill(p: Any) -> float:
    """SIGKILL ``p``, reap it, and return the time of death."""
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    assert p.exitcode == -signal.SIGKILL
    return time.monotonic()
