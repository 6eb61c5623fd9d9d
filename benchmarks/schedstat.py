"""Where a call's time goes on a busy machine: /proc/PID/schedstat of client and server.

With K CPU-bound processes running, one client reads a dict N times (each read a round trip:
procshare's leases off; or puts and gets a queue's item, ``--op "Queue put+get"``) on the
stdlib's Manager and on procshare's (alternating rounds). For the client and the server process
(all its threads) it reads ``/proc/<pid>/task/*/schedstat`` before and after: time on a CPU,
time runnable but waiting for one (the run queue), and how many times they were scheduled in.
Per operation:

    python benchmarks/schedstat.py [--load 2] [--n 3000] [--rounds 3] [--op "dict get"]

Wall time minus the CPU and run-queue time of both is time nobody ran: the wake-ups.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import procshare
from procshare._bench import cpu_load


def _schedstat(pid: int) -> tuple[int, int, int]:
    """(ns on a CPU, ns waiting on a run queue, times scheduled) over the process's threads."""
    run = wait = slices = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                a, b, c = (int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        run, wait, slices = run + a, wait + b, slices + c
    return run, wait, slices


def _dict_get(manager: Any) -> Callable[[int], Any]:
    d = manager.dict({i: i for i in range(10)})
    if hasattr(d, "_leasing"):
        d._leasing = False  # (a read made again is answered locally while unchanged)
    return lambda i: d[i % 10]


def _queue_put_get(manager: Any) -> Callable[[int], Any]:
    q = manager.Queue()

    def put_get(i: int) -> Any:
        q.put(i)
        return q.get()

    return put_get


OPS: dict[str, Callable[[Any], Callable[[int], Any]]] = {
    "dict get": _dict_get,
    "Queue put+get": _queue_put_get,
}


def _round(manager: Any, server_pid: int, n: int, op: str) -> dict[str, float]:
    call = OPS[op](manager)
    for i in range(200):  # settle
        call(i)
    me = os.getpid()
    c0, s0, t0 = _schedstat(me), _schedstat(server_pid), time.perf_counter()
    for i in range(n):
        call(i)
    c1, s1, t1 = _schedstat(me), _schedstat(server_pid), time.perf_counter()
    us = 1e6 / n
    return {
        "wall": (t1 - t0) * us,
        "client cpu": (c1[0] - c0[0]) / 1000 / n,
        "client runq": (c1[1] - c0[1]) / 1000 / n,
        "server cpu": (s1[0] - s0[0]) / 1000 / n,
        "server runq": (s1[1] - s0[1]) / 1000 / n,
        "switches in": (c1[2] - c0[2] + s1[2] - s0[2]) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=2, help="CPU-bound processes running")
    parser.add_argument("--n", type=int, default=3000, help="operations per round")
    parser.add_argument("--op", choices=sorted(OPS), default="dict get")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    rows: dict[str, dict[str, list[float]]] = {"stdlib": {}, "procshare": {}}
    with cpu_load(args.load), ctx.Manager() as theirs, procshare.Manager(ctx=ctx) as ours:
        pids = {"stdlib": theirs._process.pid, "procshare": ours._process.pid}
        managers = {"stdlib": theirs, "procshare": ours}
        for r in range(args.rounds):
            for lib in ("stdlib", "procshare") if r % 2 == 0 else ("procshare", "stdlib"):
                for key, value in _round(managers[lib], pids[lib], args.n, args.op).items():
                    rows[lib].setdefault(key, []).append(value)
    print(f"{args.op} with {args.load} CPU-bound processes running, us per operation (median)")
    print(f"{'':14s} {'stdlib':>9s} {'procshare':>10s}")
    for key in rows["stdlib"]:
        theirs_v = statistics.median(rows["stdlib"][key])
        ours_v = statistics.median(rows["procshare"][key])
        print(f"{key:14s} {theirs_v:9.1f} {ours_v:10.1f}")
    for lib in ("stdlib", "procshare"):
        r = {k: statistics.median(v) for k, v in rows[lib].items()}
        idle = r["wall"] - r["client cpu"] - r["client runq"]
        print(f"{lib}: the client slept {idle:.1f} us of {r['wall']:.1f} (waiting for the reply)")


if __name__ == "__main__":
    main()
