"""The raw pickled socket round trip: what any Python RPC costs on this machine.

Two processes exchange a pickled ``(key, value)`` and a pickled reply over a unix socket, once
with both sleeping in ``recv`` (the floor ``procshare bench`` compares with) and once with both
busy-polling (no sleep, no wake-up: what is left is system calls and pickling).

    python benchmarks/floor.py [--n 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics

from procshare._bench import _floor_client, _time_floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for spin, label in ((False, "both sides sleep in recv"), (True, "both sides busy-poll")):
        with _floor_client(spin) as call:
            _time_floor(call, max(1, args.n // 10))  # settle
            samples = [_time_floor(call, args.n) for _ in range(args.rounds)]
        print(
            f"{label:26s} median {statistics.median(samples):6.1f} us"
            f"   (min {min(samples):.1f}, max {max(samples):.1f})"
        )


if __name__ == "__main__":
    main()
