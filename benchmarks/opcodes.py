"""Python bytecodes executed per operation, in the client and in the server: procshare's and
the stdlib Manager's, the same calls.

On a busy machine a round trip costs about what the two processes' code costs to run, and
on a virtual machine that figure swings by half between two runs of the same code. The
number of bytecodes a call executes does not swing at all: it tells a change to a hot path
apart from the noise (each bytecode costs ~10 ns warm, ~15 ns on a cold cache after a
context switch, as under load). C code (pickle, the system calls) is not counted: a call
into it counts as one bytecode.

Each server's serving threads are traced from the start (the server process is forked with
the tracer in place); the server's count per operation is its total, warm-up included,
divided by the requests it served. Work driven by the clock (``CLOCK_DRIVEN``: the running
clients' count every 2 ms, housekeeping every 0.5 s) is left out: tracing slows the server
so much that it would run at nearly every request.

    python benchmarks/opcodes.py [--calls 2000] [--only "dict get"]
"""

from __future__ import annotations

import argparse
import collections
import glob
import multiprocessing
import multiprocessing.managers as stdlib_managers
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import procshare
from procshare._bench import _round_trips
from procshare._server import _transport

#: functions the server runs by the clock, not per request (see the module docstring)
CLOCK_DRIVEN = frozenset(
    {
        "_update_running",
        "_watch_ours",
        "_housekeeping",
        "_advise",
        "<dictcomp>",
        "<listcomp>",
        "<genexpr>",
        "loaded",
        "watch",
        "running",
        "runnable_tasks",
    }
)
#: how often (in bytecodes) a serving thread writes its counts down: the stdlib's server
#: process ends without letting its threads finish (what they counted since is left out)
_DUMP_EVERY = 1000

Counts = collections.Counter[str]


def _tracer(counts: Counts, dump_to: str | None = None) -> Any:
    """A ``sys.settrace`` function counting each bytecode under its function's name."""

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code.co_name] += 1
            if dump_to is not None:
                counts[""] += 1
                if counts[""] % _DUMP_EVERY == 0:
                    _dump(counts, dump_to)
        return trace

    return trace


def _dump(counts: Counts, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        for name, n in counts.items():
            if name:
                f.write(f"{n} {name}\n")
    os.replace(path + ".tmp", path)


def _traced(run: Callable[..., Any], out_dir: str) -> Callable[..., Any]:
    """``run`` (a serving thread's body), its bytecodes counted into a file in ``out_dir``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts: Counts = collections.Counter()
        path = os.path.join(out_dir, f"{os.getpid()}-{threading.get_ident()}.ops")
        sys.settrace(_tracer(counts, path))
        try:
            return run(*args, **kwargs)
        finally:
            sys.settrace(None)
            _dump(counts, path)

    return wrapper


def _read_counts(out_dir: str) -> Counts:
    total: Counts = collections.Counter()
    for path in glob.glob(os.path.join(out_dir, "*.ops")):
        with open(path) as f:
            for line in f:
                n, name = line.split(maxsplit=1)
                total[name.strip()] += int(n)
    return total


# each case: (setup(manager) -> state, one operation(state, i), requests the server serves
# per operation for both managers)
CASES: dict[str, tuple[Callable[[Any], Any], Callable[[Any, int], Any], int]] = {
    "dict get": (
        lambda m: m.dict({i: i for i in range(128)}),
        lambda d, i: d[i & 127],
        1,
    ),
    "dict set": (lambda m: m.dict(), lambda d, i: d.__setitem__(i & 1023, i), 1),
    "Value read": (lambda m: m.Value("i", 7), lambda v, i: v.value, 1),
    "Queue put+get": (lambda m: m.Queue(), lambda q, i: (q.put(i), q.get()), 2),
    "Lock acquire+release": (lambda m: m.Lock(), lambda lk, i: (lk.acquire(), lk.release()), 2),
}


def measure(name: str, calls: int, stdlib: bool) -> tuple[float, float, Counts]:
    """Bytecodes per operation of case ``name``: the client's, the server's, and the
    server's per function (per operation)."""
    setup, operation, _requests = CASES[name]
    with tempfile.TemporaryDirectory() as out_dir:
        if stdlib:
            serve = stdlib_managers.Server.serve_client
            stdlib_managers.Server.serve_client = _traced(serve, out_dir)  # type: ignore[method-assign]
            try:
                manager: Any = multiprocessing.get_context("fork").Manager()
            finally:
                stdlib_managers.Server.serve_client = serve  # type: ignore[method-assign]
        else:
            run = _transport._Reactor.run
            _transport._Reactor.run = _traced(run, out_dir)  # type: ignore[method-assign]
            try:
                manager = procshare.Manager(ctx=multiprocessing.get_context("fork"), spin=0)
            finally:
                _transport._Reactor.run = run  # type: ignore[method-assign]
        with manager:
            state = _round_trips(setup(manager))  # (both managers serve the same requests)
            warm = max(50, calls // 4)
            for i in range(warm):
                operation(state, i)
            client: Counts = collections.Counter()
            sys.settrace(_tracer(client))
            try:
                for i in range(calls):
                    operation(state, i)
            finally:
                sys.settrace(None)
        server = _read_counts(out_dir)  # (the server has ended: its threads wrote them)
    for clock_driven in CLOCK_DRIVEN:
        server.pop(clock_driven, None)
    # (the server also served the setup and the warm-up: counted in, a few percent at most)
    operations = calls + warm
    per_function: Counts = collections.Counter(
        {k: round(v / operations) for k, v in server.items()}
    )
    return sum(client.values()) / calls, sum(server.values()) / operations, per_function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--only", action="append", choices=list(CASES), help="this case only")
    parser.add_argument("--top", type=int, default=0, help="also show procshare's top functions")
    args = parser.parse_args()
    print(f"{'operation':22s} {'client':>16s} {'server':>16s}  bytecodes per operation")
    print(f"{'':22s} {'stdlib':>7s} {'ours':>8s} {'stdlib':>7s} {'ours':>8s}")
    for name in args.only or list(CASES):
        s_client, s_server, _ = measure(name, args.calls, stdlib=True)
        o_client, o_server, functions = measure(name, args.calls, stdlib=False)
        print(f"{name:22s} {s_client:7.0f} {o_client:8.0f} {s_server:7.0f} {o_server:8.0f}")
        for function, n in functions.most_common(args.top):
            print(f"    {n:6d}  {function}")


if __name__ == "__main__":
    main()
