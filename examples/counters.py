"""Counting from four processes: a lock around ``+= 1``, or one atomic step on the server.

    python examples/counters.py

Both reach the exact count; the atomic increment needs one round trip per count instead of
four (acquire, read, write, release) and no process ever waits for another.
"""

from __future__ import annotations

import time
from typing import Any

import procshare as multiprocessing


def locked(hits: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            hits.value += 1


def atomic(hits: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        hits.increment()


def count(manager: Any, worker: Any, procs: int = 4, n: int = 500) -> tuple[int, float]:
    hits, lock = manager.Value("i", 0), manager.Lock()
    workers = [multiprocessing.Process(target=worker, args=(hits, lock, n)) for _ in range(procs)]
    start = time.perf_counter()
    for p in workers:
        p.start()
    for p in workers:
        p.join()
    return hits.value, time.perf_counter() - start


if __name__ == "__main__":
    with multiprocessing.Manager() as m:
        for name, worker in (("with lock: v.value += 1", locked), ("v.increment()", atomic)):
            total, seconds = count(m, worker)
            print(f"{name:24s} count={total}  {seconds * 1000:.0f} ms")
        # a pipeline: 1000 writes, one round trip per batch
        d = m.dict()
        with d.pipeline() as pd:
            for i in range(1000):
                pd[i] = i * i
        print("pipelined", len(d), "items; d[999] =", d[999])
