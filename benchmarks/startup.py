"""What a short program pays: import, Manager start, a Pool of 4 over proxies, shutdown.

Each round runs the same little program twice in fresh interpreters, once with
``import multiprocessing as mp`` and once with ``import procshare as mp`` (alternating which
goes first), and reports the median of each phase and of the whole run as seen from outside
(interpreter start and exit included), with procshare / stdlib ratios. ``import procshare``
imports its managers at once; ``import multiprocessing`` leaves ``multiprocessing.managers``
to ``Manager()``, so the stdlib's "start" includes that import: compare "import + start".

    python benchmarks/startup.py [--rounds 15] [--start-method fork|spawn|forkserver]

Bytecode caching is on in the children (``PYTHONDONTWRITEBYTECODE`` removed) and a warm-up run
of each comes first, as for an installed package: with caching off every import compiles its
modules again, which is what an editable install under ``PYTHONDONTWRITEBYTECODE=1`` measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROGRAM = """
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "procshare":
    import procshare as mp
else:
    import multiprocessing as mp
t1 = time.perf_counter()


def square(args):
    d, i = args
    d[i] = i * i
    return i


if __name__ == "__main__":
    mp.set_start_method(sys.argv[2], force=True)
    t2 = time.perf_counter()
    m = mp.Manager()
    t3 = time.perf_counter()
    d = m.dict()
    with mp.Pool(4) as pool:
        pool.map(square, [(d, i) for i in range(8)])
    assert dict(d) == {i: i * i for i in range(8)}
    t4 = time.perf_counter()
    m.shutdown()
    t5 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "start": t3 - t2, "pool": t4 - t3, "shutdown": t5 - t4}))
"""

PHASES = ("import", "start", "import + start", "pool", "shutdown", "program")
LIBS = ("stdlib", "procshare")


def run_once(script: str, lib: str, start_method: str, env: dict[str, str]) -> dict[str, float]:
    """One run of the program: its phases (seconds), and the whole run from outside."""
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, script, lib, start_method],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    whole = time.perf_counter() - began
    phases: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    # (the stdlib imports multiprocessing.managers in Manager(): its "start" includes that)
    phases["import + start"] = phases["import"] + phases["start"]
    phases["program"] = whole
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--start-method", default="fork", choices=("fork", "spawn", "forkserver"))
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples: dict[str, dict[str, list[float]]] = {lib: {p: [] for p in PHASES} for lib in LIBS}
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "short_program.py")
        with open(script, "w") as f:
            f.write(PROGRAM)
        for lib in LIBS:  # warm-up: bytecode written, files in the page cache
            run_once(script, lib, args.start_method, env)
        for n in range(args.rounds):
            for lib in LIBS if n % 2 == 0 else LIBS[::-1]:
                for phase, value in run_once(script, lib, args.start_method, env).items():
                    samples[lib][phase].append(value)
    print(f"short program, {args.rounds} rounds, start method {args.start_method}, median ms")
    print(f"{'phase':14s} {'stdlib':>9s} {'procshare':>10s} {'ratio':>7s}")
    for phase in PHASES:
        theirs = statistics.median(samples["stdlib"][phase]) * 1000
        ours = statistics.median(samples["procshare"][phase]) * 1000
        print(f"{phase:14s} {theirs:9.1f} {ours:10.1f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
