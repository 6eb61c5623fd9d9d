"""``with lock: v.value += 1`` from several processes, taken apart, next to ``v.increment()``.

Each worker times its acquire (mostly waiting for the others), read, write and release; the
counter's throughput is one over the chain that the lock serialises: hand-over to the next
holder, read, write, release.

    python benchmarks/locked_counter.py [--procs 4] [--ops 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from procshare._bench import _FORK, _applied, _start_workers, both_managers


def _locked(v: Any, lock: Any, n: int, out: Any, go: Any, ready: Any) -> None:
    _ = v.value  # connected before the start line
    ready.release()
    go.wait()
    clock = time.perf_counter
    spent = [0.0, 0.0, 0.0, 0.0]
    for _ in range(n):
        t0 = clock()
        lock.acquire()
        t1 = clock()
        x = v.value
        t2 = clock()
        v.value = x + 1
        t3 = clock()
        lock.release()
        t4 = clock()
        spent[0] += t1 - t0
        spent[1] += t2 - t1
        spent[2] += t3 - t2
        spent[3] += t4 - t3
    _applied(v)  # (procshare's write and release are posted: timed until applied)
    out.put([s / n * 1e6 for s in spent])


def _atomic(v: Any, lock: Any, n: int, out: Any, go: Any, ready: Any) -> None:
    _ = v.value
    ready.release()
    go.wait()
    for _ in range(n):
        v.increment()
    _applied(v)
    out.put([0.0, 0.0, 0.0, 0.0])


def _run(m: Any, worker: Any, procs: int, ops: int) -> tuple[float, list[float]]:
    v, lock = m.Value("i", 0), m.Lock()
    out = _FORK.SimpleQueue()
    per = ops // procs
    # (the bench's own start line and finish time: workers exit only once all are done)
    elapsed = _start_workers(worker, (v, lock, per, out), procs)
    if v.value != per * procs:
        raise AssertionError(f"lost updates: {v.value} != {per * procs}")
    phases = [out.get() for _ in range(procs)]
    return per * procs / elapsed, [statistics.mean(p[i] for p in phases) for i in range(4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with both_managers() as (stdlib, ours):
        rows = (
            ("stdlib, locked", stdlib, _locked),
            ("procshare, locked", ours, _locked),
            ("procshare, increment()", ours, _atomic),
        )
        runs: dict[str, list[tuple[float, list[float]]]] = {name: [] for name, _, _ in rows}
        for _ in range(args.rounds):
            for name, manager, worker in rows:
                runs[name].append(_run(manager, worker, args.procs, args.ops))
        base = statistics.median(r[0] for r in runs["stdlib, locked"])
        print(f"{args.procs} processes; us per operation in each worker (acquire includes waiting)")
        print(
            f"{'':24s} {'ops/s':>8s} {'x stdlib':>8s} {'acquire':>8s} {'read':>6s} "
            f"{'write':>6s} {'release':>8s}"
        )
        for name, results in runs.items():
            rate = statistics.median(r[0] for r in results)
            acquire, read, write, release = (
                statistics.median(r[1][i] for r in results) for i in range(4)
            )
            line = f"{name:24s} {rate:8.0f} {rate / base:7.2f}x"
            if acquire:
                line += f" {acquire:8.1f} {read:6.1f} {write:6.1f} {release:8.1f}"
            print(line)


if __name__ == "__main__":
    main()
