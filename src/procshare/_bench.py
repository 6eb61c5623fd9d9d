"""``procshare bench``: each operation timed for multiprocessing.Manager and procshare, same run.

These machines are shared and noisy (DESIGN.md, "Measuring"): one figure means little and a
figure from another run means nothing. So every case runs in alternating rounds (stdlib, ours,
stdlib, ours, ...) against managers started by this process, and the medians are compared.
Each timed round starts with an untimed tenth of its work, for both alike: switching from one
server to the other disturbs where the scheduler places the processes for a moment.
The "floor" is a bare pickled request/reply over a unix socket to a blocking echo process: what
any Python RPC costs here before doing anything.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.managers
import os
import pickle
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CASES", "BenchResult", "run_bench"]

Runner = Callable[[Any, int], Any]


@dataclass(frozen=True)
class Case:
    """One benchmark: ``setup(manager)`` builds its state, ``run(state, n)`` does n operations."""

    name: str
    setup: Callable[[Any], Any]
    run: Runner
    n: int
    kind: str = "latency"  # or "throughput": several processes; reported as ops/s
    measures_itself: bool = False  # run() returns its own figure in us (not wall time / n)


@dataclass
class BenchResult:
    """Medians in microseconds per operation (and ops/s for throughput cases)."""

    name: str
    stdlib_us: float
    procshare_us: float
    kind: str = "latency"
    rounds: int = 0
    stdlib_samples: list[float] = field(default_factory=list)
    procshare_samples: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """procshare time / stdlib time: below 1 is faster."""
        return self.procshare_us / self.stdlib_us if self.stdlib_us else float("nan")


# -- the cases ----------------------------------------------------------------------------------


def _dict_set(state: Any, n: int) -> None:
    for i in range(n):
        state[i & 1023] = i


def _dict_get(state: Any, n: int) -> None:
    for i in range(n):
        state[i & 127]


def _dict_with_keys(m: Any) -> Any:
    d = m.dict()
    d.update({i: i for i in range(128)})
    return d


def _list_append(state: Any, n: int) -> None:
    for i in range(n):
        state.append(i)


def _list_reset(m: Any) -> Any:
    return m.list()


def _value_increment(state: Any, n: int) -> None:
    for _ in range(n):
        state.value += 1


def _lock_cycle(state: Any, n: int) -> None:
    acquire, release = state.acquire, state.release
    for _ in range(n):
        acquire()
        release()


def _queue_cycle(state: Any, n: int) -> None:
    put, get = state.put, state.get
    for i in range(n):
        put(i)
        get()


def _big_dict(m: Any) -> Any:
    d = m.dict()
    d.update({i: i for i in range(10_000)})
    return d


def _dict_copy(state: Any, n: int) -> None:
    for _ in range(n):
        state.copy()


def _dict_of_proxy(state: Any, n: int) -> None:
    for _ in range(n):
        dict(state)


def _cached_dict(m: Any) -> Any:
    d = _dict_with_keys(m)
    if hasattr(d, "cache"):
        d.cache()  # procshare: reads from a local replica; the stdlib has no such thing
    return d


def _follower(lst: Any, n: int, ready: Any, out: Any) -> None:
    """Record how long each appended timestamp took to reach this process."""
    latencies: list[float] = []
    if hasattr(lst, "watch"):
        with lst.watch() as changes:
            ready.set()
            for change in changes:
                latencies.append(time.perf_counter() - change.args[0])
                if len(latencies) >= n:
                    break
    else:  # no push in the stdlib: poll for new items as fast as it goes
        seen = len(lst)
        ready.set()
        while len(latencies) < n:
            fresh = lst[seen:]
            now = time.perf_counter()
            latencies.extend(now - t for t in fresh)
            seen += len(fresh)
    out.put(statistics.median(latencies) * 1e6)


def _watch_latency(lst: Any, n: int) -> float:
    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Event(), ctx.SimpleQueue()
    follower = ctx.Process(target=_follower, args=(lst, n, ready, out))
    follower.start()
    ready.wait(30)
    for _ in range(n):
        lst.append(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
        time.sleep(0.001)
    latency: float = out.get()
    follower.join(30)
    return latency


def _counter_worker(value: Any, lock: Any, go: Any, n: int) -> None:
    go.wait()
    for _ in range(n):
        with lock:
            value.value += 1


def _counter_setup(m: Any) -> Any:
    return (m.Value("i", 0), m.Lock())


def _locked_counter(state: Any, n: int) -> None:
    value, lock = state
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    per = max(1, n // 4)
    procs = [ctx.Process(target=_counter_worker, args=(value, lock, go, per)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.05)  # let them all reach the start line
    go.set()
    for p in procs:
        p.join()


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("dict set", lambda m: m.dict(), _dict_set, 2000),
        Case("dict get", _dict_with_keys, _dict_get, 2000),
        Case("list append", _list_reset, _list_append, 2000),
        Case("Value += 1", lambda m: m.Value("i", 0), _value_increment, 1000),
        Case("Lock acquire+release", lambda m: m.Lock(), _lock_cycle, 1000),
        Case("Queue put+get", lambda m: m.Queue(), _queue_cycle, 1000),
        Case("dict copy 10k items", _big_dict, _dict_copy, 10),
        Case("dict(proxy) 10k items", _big_dict, _dict_of_proxy, 1),
        Case("cached get (stdlib: plain get)", _cached_dict, _dict_get, 20000),
        Case(
            "write seen by a watcher (stdlib: poller)",
            _list_reset,
            _watch_latency,
            200,
            "latency",
            measures_itself=True,
        ),
        Case("locked counter, 4 processes", _counter_setup, _locked_counter, 2000, "throughput"),
    )
}


# -- the raw socket floor -------------------------------------------------------------------------

_HEAD = struct.Struct("!I")


def _echo_server(path: str, ready: Any) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    ready.set()
    conn, _ = listener.accept()
    data = {}
    buf = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 4:
            (size,) = _HEAD.unpack_from(buf)
            if len(buf) < 4 + size:
                break
            key, value = pickle.loads(buf[4 : 4 + size])
            buf = buf[4 + size :]
            data[key] = value
            body = pickle.dumps(None, 5)
            conn.sendall(_HEAD.pack(len(body)) + body)


@contextlib.contextmanager
def _floor_client() -> Iterator[Callable[[Any, Any], Any]]:
    ctx = multiprocessing.get_context("fork")
    directory = tempfile.mkdtemp(prefix="procshare-bench-")
    path = os.path.join(directory, "echo.sock")
    ready = ctx.Event()
    server = ctx.Process(target=_echo_server, args=(path, ready), daemon=True)
    server.start()
    ready.wait(10)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)

    def call(key: Any, value: Any) -> Any:
        body = pickle.dumps((key, value), 5)
        sock.sendall(_HEAD.pack(len(body)) + body)
        buf = sock.recv(65536)
        while len(buf) < 4 or len(buf) < 4 + _HEAD.unpack_from(buf)[0]:
            buf += sock.recv(65536)
        return pickle.loads(buf[4:])

    try:
        yield call
    finally:
        sock.close()
        server.join(5)
        if server.is_alive():
            server.kill()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(directory)


def _time_floor(call: Callable[[Any, Any], Any], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        call(i & 1023, i)
    return (time.perf_counter() - start) / n * 1e6


# -- running -------------------------------------------------------------------------------------


def _time(case: Case, state: Any, n: int) -> float:
    start = time.perf_counter()
    measured = case.run(state, n)
    if case.measures_itself:
        return float(measured)
    return (time.perf_counter() - start) / n * 1e6


def run_bench(
    names: list[str] | None = None,
    *,
    rounds: int = 5,
    scale: float = 1.0,
    floor: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Run the chosen cases (all by default) for both managers, alternating rounds.

    Args:
        names: case names (see ``CASES``); ``None`` for all.
        rounds: rounds per implementation; the median is reported.
        scale: multiplies each case's operation count (``--quick`` uses a small one).
        floor: also time the bare socket round trip.
        progress: called with a line of text as each case finishes.
    """
    import procshare

    chosen = [CASES[n] for n in (names or list(CASES))]
    results: list[BenchResult] = []
    ctx = multiprocessing.get_context("fork")
    stdlib_manager = multiprocessing.managers.SyncManager(ctx=ctx)
    stdlib_manager.start()
    ours = procshare.Manager(ctx=ctx)
    try:
        if floor:
            with _floor_client() as call:
                n = max(50, int(2000 * scale))
                _time_floor(call, n // 10)
                samples = [_time_floor(call, n) for _ in range(rounds)]
            med = statistics.median(samples)
            results.append(
                BenchResult(
                    "floor: raw pickled socket round trip",
                    med,
                    med,
                    rounds=rounds,
                    stdlib_samples=samples,
                    procshare_samples=samples,
                )
            )
            if progress:
                progress(_line(results[-1]))
        for case in chosen:
            n = max(1, int(case.n * scale))
            states = {"stdlib": case.setup(stdlib_manager), "procshare": case.setup(ours)}
            samples_by: dict[str, list[float]] = {"stdlib": [], "procshare": []}
            for state in states.values():  # warm up both (connections, caches)
                case.run(state, max(1, n // 10) if not case.measures_itself else 5)
            for _ in range(rounds):
                for impl, state in states.items():
                    if case.kind == "latency" and n >= 10 and not case.measures_itself:
                        case.run(state, n // 10)  # settle after the switch (both alike)
                    samples_by[impl].append(_time(case, state, n))
            result = BenchResult(
                case.name,
                statistics.median(samples_by["stdlib"]),
                statistics.median(samples_by["procshare"]),
                kind=case.kind,
                rounds=rounds,
                stdlib_samples=samples_by["stdlib"],
                procshare_samples=samples_by["procshare"],
            )
            results.append(result)
            if progress:
                progress(_line(result))
    finally:
        ours.shutdown()
        stdlib_manager.shutdown()
    return results


def _line(r: BenchResult) -> str:
    if r.name.startswith("floor"):
        return f"{r.name:38s} {r.stdlib_us:10.1f} us"
    if r.kind == "throughput":
        return (
            f"{r.name:38s} {1e6 / r.stdlib_us:10.0f} {1e6 / r.procshare_us:10.0f} ops/s"
            f"   {r.stdlib_us / r.procshare_us:5.2f}x throughput"
        )
    return f"{r.name:38s} {r.stdlib_us:10.1f} {r.procshare_us:10.1f} us   {r.ratio:5.2f}"


def header() -> str:
    """The table header matching ``_line``."""
    return f"{'operation':38s} {'stdlib':>10s} {'procshare':>10s}      ratio (procshare/stdlib)"


def to_json(results: list[BenchResult]) -> str:
    """Results as JSON, with the ratio included."""
    return json.dumps([dict(asdict(r), ratio=r.ratio) for r in results], indent=2)
