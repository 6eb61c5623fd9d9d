"""Reading a large shared dict whole again and again: unchanged, after a few changes, after many.

A procshare proxy that reads a large object whole more than once keeps what it read and asks
the server for what changed since (nothing, a few changes to replay, or everything again);
the stdlib sends and decodes every item each time. The last column is the worst case for
procshare: so many changes between copies that the whole dict is sent again.

``--read`` picks the read: ``copy`` (the default), ``items``, ``values`` or ``keys``; a proxy
that holds a copy answers the other three from it.

    python benchmarks/whole_reads.py [--sizes 1000,10000,100000] [--copies 20] [--rounds 3]
        [--read copy]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from procshare._bench import both_managers

# Changes made before each copy: none, one, and an update of a quarter of the items (more
# than the server replays: the whole object is sent again).
PATTERNS: dict[str, Callable[[Any, int, int], None]] = {
    "unchanged": lambda d, i, size: None,
    "1 change": lambda d, i, size: d.__setitem__(i % size, -i),
    "many changes": lambda d, i, size: d.update({k: -i for k in range(size // 4)}),
}


def _us_per_read(
    d: Any, read: str, pattern: Callable[[Any, int, int], None], size: int, n: int
) -> float:
    method = getattr(d, read)
    method()
    method()  # a reader that reads again and again, past its first reads
    start = time.perf_counter()
    for i in range(n):
        pattern(d, i, size)
        method()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--copies", type=int, default=20, help="reads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read", choices=("copy", "items", "values", "keys"), default="copy")
    args = parser.parse_args()
    with both_managers() as (stdlib, ours):
        print(
            f"{'items':>7s} {'changes before each ' + args.read + '()':26s} {'stdlib':>9s} "
            f"{'procshare':>10s}  us/read   ratio"
        )
        for size in (int(s) for s in args.sizes.split(",")):
            for name, pattern in PATTERNS.items():
                samples: dict[str, list[float]] = {"stdlib": [], "procshare": []}
                dicts = {"stdlib": stdlib.dict(), "procshare": ours.dict()}
                for d in dicts.values():
                    d.update({k: k for k in range(size)})
                for _ in range(args.rounds):  # alternating rounds on the same dicts
                    for impl, d in dicts.items():
                        samples[impl].append(_us_per_read(d, args.read, pattern, size, args.copies))
                a, b = statistics.median(samples["stdlib"]), statistics.median(samples["procshare"])
                print(f"{size:7d} {name:26s} {a:9.1f} {b:10.1f}          {b / a:6.2f}")


if __name__ == "__main__":
    main()
