"""Reads made again: procshare's leases next to round trips, and next to the stdlib, same run.

Four loops, each timed on the stdlib Manager, on procshare with leases off (every read a round
trip) and on procshare as it is:

* ``poll``: re-reading a flag nobody changes (a worker checking whether to stop);
* ``poll, changing``: the same while another process writes the flag every millisecond (each
  change ends the lease: the next read asks again);
* ``check, then lock``: ``if cfg["mode"] == "run": with lock: v.value += 1`` (the setting
  stays leased while the counter changes: leases are per object);
* ``v.value += 1``: a read whose lease would end unused each time (read plainly after a miss).

    python benchmarks/leases.py [--n 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import procshare
from procshare._bench import _FORK, both_managers


def _poll(state: Any, n: int) -> None:
    flag = state["flag"]
    for _ in range(n):
        _ = flag.value


def _check_then_lock(state: Any, n: int) -> None:
    cfg, v, lock = state["cfg"], state["v"], state["lock"]
    for _ in range(n):
        if cfg["mode"] == "run":
            with lock:
                v.value += 1


def _increment(state: Any, n: int) -> None:
    v = state["v"]
    for _ in range(n):
        v.value += 1


def _writer(flag: Any, stop: Any) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        flag.value = i
        time.sleep(0.001)


def _state(m: Any) -> dict[str, Any]:
    return {
        "flag": m.Value("i", 0),
        "cfg": m.dict(mode="run"),
        "v": m.Value("i", 0),
        "lock": m.Lock(),
    }


def _time(run: Callable[[Any, int], None], state: Any, n: int) -> float:
    run(state, max(1, n // 10))  # warm (connections, leases)
    start = time.perf_counter()
    run(state, n)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = (
        ("poll", _poll, False),
        ("poll, changing", _poll, True),
        ("check, then lock", _check_then_lock, False),
        ("v.value += 1", _increment, False),
    )
    with both_managers() as (stdlib, ours), procshare.Manager(ctx=_FORK, leases=False) as plain:
        states = {"stdlib": _state(stdlib), "round trips": _state(plain), "leases": _state(ours)}
        print(f"{'us per iteration':24s} {'stdlib':>8s} {'round trips':>12s} {'leases':>8s}")
        for name, run, changing in cases:
            samples: dict[str, list[float]] = {impl: [] for impl in states}
            for _ in range(args.rounds):
                for impl, state in states.items():
                    stop = _FORK.Event()
                    writer = None
                    if changing:
                        writer = _FORK.Process(target=_writer, args=(state["flag"], stop))
                        writer.start()
                        time.sleep(0.05)
                    try:
                        samples[impl].append(_time(run, state, args.n))
                    finally:
                        if writer is not None:
                            stop.set()
                            writer.join(10)
            row = [statistics.median(samples[impl]) for impl in states]
            print(f"{name:24s} {row[0]:8.1f} {row[1]:12.1f} {row[2]:8.1f}")


if __name__ == "__main__":
    main()
