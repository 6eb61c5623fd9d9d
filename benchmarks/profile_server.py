"""Where the server's time goes under load: the functions it is in, by share of samples.

N client processes do dict sets while the server is sampled with py-spy (``pip install
py-spy``; it attaches to the server process from outside, so the server runs unmodified). Without
py-spy the server runs under cProfile instead, which slows it down but shows the same places.

    python benchmarks/profile_server.py [--clients 1] [--seconds 3] [--top 20]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import util
from typing import Any

import procshare
from procshare._bench import _FORK, _set_worker, _start_workers


def _load(d: Any, clients: int, seconds: float) -> float:
    """Dict sets from ``clients`` processes for about ``seconds``; returns ops/s."""
    per = 2000
    rate = per * clients / _start_workers(_set_worker, (d, per), clients)
    per = max(per, int(rate * seconds / clients))
    return per * clients / _start_workers(_set_worker, (d, per), clients)


def _py_spy(spy: str, pid: int, seconds: float, run: Any) -> collections.Counter[str]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "stacks.txt")
        proc = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(pid),
                "-r",
                "1000",
                "-d",
                str(int(seconds) + 1),
                "-f",
                "raw",
                "-o",
                raw,
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # attached before the load starts
        run()
        proc.wait(timeout=seconds + 30)
        own: collections.Counter[str] = collections.Counter()
        with open(raw) as f:
            for line in f:
                stack, _, count = line.rstrip().rpartition(" ")
                own[stack.split(";")[-1]] += int(count)
    return own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--cprofile", action="store_true", help="use cProfile even with py-spy")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if args.cprofile:
        spy = None
    if spy:
        with procshare.Manager(ctx=_FORK) as m:
            d = m.dict()
            rates: list[float] = []
            own = _py_spy(
                spy,
                m._process.pid,
                args.seconds,
                lambda: rates.append(_load(d, args.clients, args.seconds)),
            )
        total = sum(own.values()) or 1
        print(f"{rates[0]:.0f} ops/s while sampled; the server's own time by line:")
        for where, count in own.most_common(args.top):
            print(f"{count / total * 100:5.1f}%  {where}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "server.prof")
        m = procshare.managers.SyncManager(ctx=_FORK)
        m.start(_start_profile, (out,))
        with m:
            d = m.dict()
            print(f"{_load(d, args.clients, args.seconds):.0f} ops/s under cProfile")
        stats = pstats.Stats(out)
        stats.sort_stats("tottime").print_stats(args.top)


_profiler = cProfile.Profile()


def _start_profile(path: str) -> None:
    """Server initializer: profile the server until it exits, then write the stats."""

    def dump() -> None:
        _profiler.disable()
        _profiler.dump_stats(path)

    _profiler.enable()
    util.Finalize(None, dump, exitpriority=10)  # run as the server process exits


if __name__ == "__main__":
    main()
