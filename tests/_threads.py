"""Threads for the tests: run some, wait for all, and fail with what any of them raised."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


def run_threads(
    target: Callable[..., Any], args_list: Iterable[tuple[Any, ...]], timeout: float = 60.0
) -> None:
    """Run ``target(*args)`` on one thread per ``args``, wait for them, and raise the first
    exception one of them raised (a thread's own exception is only printed, never failing the
    test); a thread still running after ``timeout`` fails it too."""
    errors: list[BaseException] = []

    def run(*args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    stuck = sum(t.is_alive() for t in threads)
    assert not stuck, f"{stuck} threads still running after {timeout} s"
    if errors:
        raise errors[0]
