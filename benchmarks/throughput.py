"""Dict sets per second with N client processes, procshare next to the stdlib, same run.

For procshare it also shows the server's CPU per operation and how its loop found the work:
``polled`` (busy-polling caught the request) or ``woken`` (the server slept and was woken).

    python benchmarks/throughput.py [--clients 1,2,4,8,16,64] [--ops 8000] [--rounds 3]
        [--plot throughput.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from procshare._bench import BenchResult, _set_worker, _start_workers, both_managers, plot


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _us_per_op(d: Any, clients: int, ops: int) -> float:
    per = max(50, ops // clients)
    return _start_workers(_set_worker, (d, per), clients) / (per * clients) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,2,4,8,16,64")
    parser.add_argument("--ops", type=int, default=8000, help="operations per round, all clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", metavar="FILE.png")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    results = []
    with both_managers() as (stdlib, ours):
        dicts = {"stdlib": stdlib.dict(), "procshare": ours.dict()}
        server_pid = ours._process.pid
        print(
            f"{'clients':>7s} {'stdlib':>10s} {'procshare':>10s} ops/s   ratio   "
            "server CPU/op  polled  woken"
        )
        for clients in counts:
            samples: dict[str, list[float]] = {"stdlib": [], "procshare": []}
            cpu = 0.0
            before = dict(ours.stats()["counters"])
            for _ in range(args.rounds):
                for impl, d in dicts.items():
                    start = _cpu_seconds(server_pid) if impl == "procshare" else 0.0
                    samples[impl].append(_us_per_op(d, clients, args.ops))
                    if impl == "procshare":
                        cpu += _cpu_seconds(server_pid) - start
            after = ours.stats()["counters"]
            std = statistics.median(samples["stdlib"])
            mine = statistics.median(samples["procshare"])
            ops = args.rounds * max(50, args.ops // clients) * clients
            results.append(
                BenchResult(
                    f"dict sets, {clients} clients", std, mine, "throughput", args.rounds, clients
                )
            )
            print(
                f"{clients:7d} {1e6 / std:10.0f} {1e6 / mine:10.0f}         {std / mine:5.2f}x"
                f"   {cpu / ops * 1e6:8.1f} us  {after['polled'] - before['polled']:6d}"
                f" {after['woken'] - before['woken']:6d}"
            )
    if args.plot:
        plot(results, args.plot)
        print(f"chart written to {args.plot}")


if __name__ == "__main__":
    main()
