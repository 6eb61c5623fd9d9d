"""``procshare bench``: each operation timed for multiprocessing.Manager and procshare, same run.

These machines are shared and noisy (docs/performance.md): one figure means little and a
figure from another run means nothing. So every case runs in alternating rounds (stdlib, ours,
stdlib, ours, ...) against managers started by this process, and the medians are compared.
Each timed round starts with an untimed tenth of its work, for both alike: switching from one
server to the other disturbs where the scheduler places the processes for a moment.

The "floor" is a bare pickled request/reply over a unix socket to a blocking echo process: what
any Python RPC costs here before doing anything. Rows marked in ``FLOOR_ROWS`` also show
procshare's time as a multiple of it.
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
from typing import Any, Final

__all__ = ["CASES", "BenchResult", "cpu_load", "run_bench", "side_by_side"]

Runner = Callable[[Any, int], Any]
_FORK = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class Case:
    """One benchmark: ``setup(manager)`` builds its state, ``run(state, n)`` does n operations.

    ``kind`` is ``"latency"`` (us per operation), ``"throughput"`` (several processes; shown
    as operations per second), ``"cpu"`` (us of CPU per operation), ``"progress"`` (us per
    thousand iterations of CPU-bound workers; shown as iterations per second) or
    ``"memory"``. A ``measures_itself`` case's ``run`` returns its own figure instead of being
    timed.
    """

    name: str
    setup: Callable[[Any], Any]
    run: Runner
    n: int
    kind: str = "latency"
    measures_itself: bool = False
    clients: int = 0  # for throughput-vs-clients rows


@dataclass
class BenchResult:
    """Medians in microseconds per operation (and ops/s for throughput cases)."""

    name: str
    stdlib_us: float
    procshare_us: float
    kind: str = "latency"
    rounds: int = 0
    clients: int = 0
    load: int = 0  # CPU-bound processes that ran during the rounds
    floor_us: float | None = None
    stdlib_samples: list[float] = field(default_factory=list)
    procshare_samples: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """procshare / stdlib (time per operation, CPU, or memory): below 1 is better. For
        throughput and the workers' progress, the time per operation or iteration too."""
        return self.procshare_us / self.stdlib_us if self.stdlib_us else float("nan")


def _is_ours(proxy: Any) -> bool:
    return type(proxy).__module__.startswith("procshare")


def _applied(state: Any) -> None:
    """Wait until what this process sent has been applied: a call of procshare's may be
    posted (not waited for, ``Channel.post``), so a timed run ends with one round trip that
    comes after all of it (the stdlib's calls were each waited for already)."""
    proxy = state[0] if type(state) is tuple else state
    if _is_ours(proxy):
        proxy._channel().control("ping")


# -- latency cases ------------------------------------------------------------------------------


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


def _round_trips(proxy: Any) -> Any:
    """``proxy``, its reads made by the server each time: what a read of a value that changed
    since costs (procshare answers a read made again locally while the value is unchanged:
    the "unchanged" row)."""
    if _is_ours(proxy):
        proxy._leasing = False
    return proxy


def _list_append(state: Any, n: int) -> None:
    for i in range(n):
        state.append(i)


def _value_read(state: Any, n: int) -> None:
    for _ in range(n):
        _ = state.value


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


def _dict_change_copy(state: Any, n: int) -> None:
    for i in range(n):
        state[0] = i  # a change before each copy: nothing read before can be reused
        state.copy()


def _dict_of_proxy(state: Any, n: int) -> None:
    for _ in range(n):
        dict(state)


def _cached_dict(m: Any) -> Any:
    d = _dict_with_keys(m)
    if _is_ours(d):
        d.cache()  # procshare: reads from a local replica; the stdlib has no such thing
    return d


def _pipelined_sets(state: Any, n: int) -> None:
    """procshare: pipelines of 1000 sets; the stdlib has none: plain sets."""
    if not _is_ours(state):
        _dict_set(state, n)
        return
    for start in range(0, n, 1000):
        with state.pipeline() as pd:
            for i in range(start, min(n, start + 1000)):
                pd[i & 1023] = i


def _follower(lst: Any, n: int, ready: Any, out: Any) -> None:
    """Record how long each appended timestamp took to reach this process."""
    latencies: list[float] = []
    if _is_ours(lst):
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
    ready, out = _FORK.Event(), _FORK.SimpleQueue()
    follower = _FORK.Process(target=_follower, args=(lst, n, ready, out))
    follower.start()
    ready.wait(30)
    for _ in range(n):
        lst.append(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
        time.sleep(0.001)
    latency: float = out.get()
    follower.join(30)
    return latency


# -- event latency: a blocked call woken by a write from an idle process ---------------------------
#
# A consumer process blocks; a millisecond later a producer (this process, idle in between)
# writes what wakes it, with the time; the consumer records how long the write took to reach
# it. Stamps travel in a shared-memory double (CLOCK_MONOTONIC: one clock for all processes);
# a stdlib pipe paces the two (it is never timed).


def _blocked_consumer(kind: str, state: Any, n: int, stamp: Any, pace: Any, out: Any) -> None:
    latencies: list[float] = []
    for _ in range(n):
        if kind == "Queue.get":
            pace.send("blocking")
            t = state.get()
            latencies.append(time.perf_counter() - t)
        elif kind == "Event.wait":
            pace.send("blocking")
            state.wait()
            latencies.append(time.perf_counter() - stamp.value)
            state.clear()
        elif kind == "Condition.wait":
            with state:
                pace.send("blocking")
                state.wait()
                latencies.append(time.perf_counter() - stamp.value)
        else:  # a lock's waiter: the producer holds the lock and releases it
            pace.send("blocking")
            state.acquire()
            latencies.append(time.perf_counter() - stamp.value)
            state.release()
            pace.send("released")
            pace.recv()  # the producer holds it again
    out.put(statistics.median(latencies) * 1e6)


def _event_latency(kind: str) -> Runner:
    def run(state: Any, n: int) -> float:
        stamp = _FORK.Value("d", 0.0, lock=False)
        pace, pace_end = _FORK.Pipe()
        out = _FORK.SimpleQueue()
        consumer = _FORK.Process(
            target=_blocked_consumer, args=(kind, state, n, stamp, pace_end, out)
        )
        lock = kind == "lock waiter"
        if lock:
            state.acquire()
        consumer.start()
        try:
            for _ in range(n):
                pace.recv()  # about to block (a millisecond later it surely is)
                time.sleep(0.001)
                stamp.value = time.perf_counter()
                if kind == "Queue.get":
                    state.put(time.perf_counter())
                elif kind == "Event.wait":
                    state.set()
                elif kind == "Condition.wait":
                    with state:
                        stamp.value = time.perf_counter()
                        state.notify()
                else:
                    state.release()
                    pace.recv()  # it took the lock, timed, and gave it back
                    state.acquire()
                    pace.send("held")
            latency: float = out.get()
        finally:
            if lock:
                state.release()
        consumer.join(30)
        return latency

    return run


_EVENT_SETUPS: dict[str, Callable[[Any], Any]] = {
    "Queue.get": lambda m: m.Queue(),
    "Event.wait": lambda m: m.Event(),
    "Condition.wait": lambda m: m.Condition(),
    "lock waiter": lambda m: m.Lock(),
}


# -- what procshare costs the machine -------------------------------------------------------------


def _cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (schedstat, nanoseconds)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(OSError, ValueError),
                open(f"/proc/{pid}/task/{tid}/schedstat") as f,
            ):
                total += int(f.read().split()[0])
    return total


#: the pace of the paced cases: a process that calls between its own work, as a
#: worker that records results does, at a rate both managers keep up with on a busy machine
PACED_CALLS_PER_S: Final = 5000


def _dict_set_paced(d: Any, n: int) -> None:
    """``n`` dict sets, one every ``1 / PACED_CALLS_PER_S`` seconds (sleeping in between)."""
    period = 1.0 / PACED_CALLS_PER_S
    start = time.perf_counter()
    for i in range(n):
        d[i & 1023] = i
        pause = start + (i + 1) * period - time.perf_counter()
        if pause > 0:
            time.sleep(pause)


def _cpu_per_set(state: Any, n: int) -> float:
    """Microseconds of CPU, server and client together, per dict set."""
    return _cpu_during(state, n, _dict_set)


def _cpu_per_paced_set(state: Any, n: int) -> float:
    """As ``_cpu_per_set``, the sets paced at ``PACED_CALLS_PER_S``: what each costs where
    the writer does something else in between (every wake-up counted)."""
    return _cpu_during(state, n, _dict_set_paced)


def _cpu_during(state: Any, n: int, calls: Callable[[Any, int], None]) -> float:
    d, server_pid = state
    me = os.getpid()
    before = _cpu_ns(me) + _cpu_ns(server_pid)
    calls(d, n)
    _applied(d)
    return (_cpu_ns(me) + _cpu_ns(server_pid) - before) / n / 1000


def _count_forever(counter: Any, seconds: float) -> None:
    """A CPU-bound worker: count, publishing the count every thousand (bounded in time)."""
    end = time.monotonic() + seconds
    n = 0
    while True:
        for _ in range(1000):
            n += 1
        counter.value = n
        if time.monotonic() > end:
            return


def _workers_progress(state: Any, n: int) -> float:
    """One CPU-bound worker per CPU counts while this process makes ``n`` dict sets as fast
    as it can: the workers' iterations, as microseconds per thousand (more progress: fewer).
    A faster manager makes a caller that never waits a process that computes, which takes
    its share of the CPUs: ``_workers_progress_paced`` asks what the calls themselves cost."""
    return _progress_during(state, n, _dict_set)


def _workers_progress_paced(state: Any, n: int) -> float:
    """As ``_workers_progress``, with the ``n`` sets paced at ``PACED_CALLS_PER_S``: the same
    calls a second for both managers, so the workers lose only what the calls cost the
    machine (the server's CPU, the caller's, and the wake-ups)."""
    return _progress_during(state, n, _dict_set_paced)


def _progress_during(state: Any, n: int, calls: Callable[[Any, int], None]) -> float:
    """The workers' microseconds per thousand iterations while ``calls(d, n)`` runs."""
    d, _server_pid = state
    counters = [_FORK.Value("Q", 0, lock=False) for _ in range(_cpus())]
    workers = [_FORK.Process(target=_count_forever, args=(c, 120.0)) for c in counters]
    for w in workers:
        w.start()
    try:
        time.sleep(0.05)  # all of them counting
        start_counts = [c.value for c in counters]
        start = time.perf_counter()
        calls(d, n)
        _applied(d)
        elapsed = time.perf_counter() - start
        counted = sum(c.value - s for c, s in zip(counters, start_counts, strict=True))
    finally:
        for w in workers:
            w.kill()
            w.join()
    return float(elapsed / max(1, counted / 1000) * 1e6)


#: how long the slow value's unpickling computes (issue 16's target: another client's worst
#: call meanwhile stays under 100 ms)
SLOW_UNPICKLE_S = 0.5


def _compute_for(seconds: float) -> float:
    """What unpickling a ``_SlowToUnpickle`` runs: pure-Python work, holding the GIL."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))
    return seconds


class _SlowToUnpickle:
    def __reduce__(self) -> Any:
        return (_compute_for, (SLOW_UNPICKLE_S,))


def _send_slow(d: Any) -> None:
    d["slow"] = _SlowToUnpickle()


def _worst_call_during_slow_unpickle(d: Any, n: int) -> float:
    """The longest of this client's dict gets while, ``n`` times, another process stores a
    value whose unpickling computes for ``SLOW_UNPICKLE_S`` (microseconds)."""
    worst = 0.0
    d["x"] = 1
    for _ in range(n):
        sender = _FORK.Process(target=_send_slow, args=(d,))
        sender.start()
        end = time.perf_counter() + SLOW_UNPICKLE_S + 0.3  # (its start and its call included)
        while time.perf_counter() < end:
            start = time.perf_counter()
            d.get("x")
            worst = max(worst, time.perf_counter() - start)
        sender.join(60)
    return worst * 1e6


def _with_server_pid(m: Any) -> Any:
    return (m.dict(), m._process.pid)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- throughput cases (several processes) ------------------------------------------------------


def _start_workers(target: Callable[..., None], args: tuple[Any, ...], count: int) -> float:
    """Run ``count`` workers from a common start line; return the seconds until the last of
    them finished its operations.

    The workers exit only once all of them are done: a process's exit (~1 ms of the kernel
    tearing it down) would otherwise compete for the CPUs with the workers still running, and
    a lock's holder waiting behind it stalls everyone (it weighed ~5% on a 0.1 s run).
    """
    go, leave = _FORK.Event(), _FORK.Event()
    ready = _FORK.Semaphore(0)
    finished = _FORK.SimpleQueue()
    procs = [
        _FORK.Process(target=_timed_worker, args=(target, (*args, go, ready), finished, leave))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.acquire(timeout=60)  # every worker connected and waiting
        start = time.perf_counter()
        go.set()
        ends = []
        for _ in procs:
            end = finished.get()
            if end is None:
                raise RuntimeError("a benchmark worker failed")
            ends.append(end)
    finally:
        leave.set()
        for p in procs:
            p.join()
    # perf_counter is CLOCK_MONOTONIC on Linux: the same clock in every process
    last: float = max(ends)
    return last - start


def _timed_worker(
    target: Callable[..., None], args: tuple[Any, ...], finished: Any, leave: Any
) -> None:
    """Run ``target``, report when it finished (``None`` if it failed), wait to be let go."""
    try:
        target(*args)
    except BaseException:
        finished.put(None)
        raise
    finished.put(time.perf_counter())
    leave.wait(120)


def _counter_worker(value: Any, lock: Any, n: int, go: Any, ready: Any) -> None:
    _ = value.value  # connect before the start line
    ready.release()
    go.wait()
    for _ in range(n):
        with lock:
            value.value += 1
    _applied(value)


def _atomic_worker(value: Any, lock: Any, n: int, go: Any, ready: Any) -> None:
    _ = value.value  # connect before the start line
    ready.release()
    go.wait()
    if _is_ours(value):
        for _ in range(n):
            value.increment()
    else:  # the stdlib has no atomic increment: the locked counter
        for _ in range(n):
            with lock:
                value.value += 1
    _applied(value)


def _counter_setup(m: Any) -> Any:
    return (m.Value("i", 0), m.Lock())


def _counter(worker: Callable[..., None]) -> Runner:
    def run(state: Any, n: int) -> float:
        value, lock = state
        per = max(1, n // 4)
        return _start_workers(worker, (value, lock, per), 4) / (per * 4) * 1e6

    return run


def _set_worker(d: Any, n: int, go: Any, ready: Any) -> None:
    len(d)  # connect before the start line
    ready.release()
    go.wait()
    for i in range(n):
        d[i & 1023] = i
    _applied(d)


def _clients(count: int) -> Runner:
    def run(d: Any, n: int) -> float:
        per = max(50, n // count)
        return _start_workers(_set_worker, (d, per), count) / (per * count) * 1e6

    return run


# -- memory -------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _items(n: int) -> Iterator[dict[int, int]]:
    # Distinct key and value objects: an item that crossed a process boundary arrives as two
    # objects even when it left as one ({i: i} would flatter the plain dict by a third).
    for start in range(0, n, 50_000):
        yield {i: -i for i in range(start, min(n, start + 50_000))}


def _plain_dict_growth(n: int, out: Any) -> None:
    before = _rss_kib(os.getpid())
    d: dict[int, int] = {}
    for chunk in _items(n):
        d.update(chunk)
    del chunk
    out.put(_rss_kib(os.getpid()) - before)


def _server_growth(manager: Any, n: int) -> int:
    pid = manager._process.pid
    d = manager.dict()
    before = _rss_kib(pid)
    for chunk in _items(n):
        d.update(chunk)
    growth = _rss_kib(pid) - before
    d.clear()
    return growth


def memory_result(stdlib_manager: Any, ours: Any, n: int = 1_000_000) -> BenchResult:
    """Server memory for ``n`` small dict items, as a multiple of a plain dict's in one process."""
    out = _FORK.SimpleQueue()
    baseline_proc = _FORK.Process(target=_plain_dict_growth, args=(n, out))
    baseline_proc.start()
    baseline = max(1, out.get())
    baseline_proc.join()
    stdlib = _server_growth(stdlib_manager, n) / baseline
    procshare = _server_growth(ours, n) / baseline
    return BenchResult(
        f"server memory, {n:,} dict items (x plain dict)",
        stdlib,
        procshare,
        kind="memory",
        rounds=1,
    )


# -- the cases ----------------------------------------------------------------------------------

THROUGHPUT_CLIENTS = (1, 2, 4, 8, 16, 64)

CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("dict set", lambda m: m.dict(), _dict_set, 2000),
        Case("dict get", lambda m: _round_trips(_dict_with_keys(m)), _dict_get, 2000),
        Case("list append", lambda m: m.list(), _list_append, 2000),
        Case("Value read", lambda m: _round_trips(m.Value("i", 0)), _value_read, 2000),
        Case("Value += 1", lambda m: m.Value("i", 0), _value_increment, 1000),
        Case("Lock acquire+release", lambda m: m.Lock(), _lock_cycle, 1000),
        Case("Queue put+get", lambda m: m.Queue(), _queue_cycle, 1000),
        Case("dict copy 10k items", _big_dict, _dict_copy, 10),
        Case("dict set + copy 10k items", _big_dict, _dict_change_copy, 10),
        Case("dict(proxy) 10k items", _big_dict, _dict_of_proxy, 1),
        Case(
            "pipelined sets, per item (stdlib: plain)", lambda m: m.dict(), _pipelined_sets, 10_000
        ),
        Case("dict get, unchanged (leased)", _dict_with_keys, _dict_get, 20_000),
        Case("cached get (stdlib: plain get)", _cached_dict, _dict_get, 20_000),
        Case(
            "write seen by a watcher (stdlib: poller)",
            lambda m: m.list(),
            _watch_latency,
            200,
            measures_itself=True,
        ),
        *(
            Case(
                f"write seen by a blocked {kind}",
                setup,
                _event_latency(kind),
                200,
                measures_itself=True,
            )
            for kind, setup in _EVENT_SETUPS.items()
        ),
        Case(
            f"worst call while another's value unpickles {SLOW_UNPICKLE_S:g} s",
            lambda m: m.dict(),
            _worst_call_during_slow_unpickle,
            1,
            measures_itself=True,
        ),
        Case(
            "CPU per dict set, server and client",
            _with_server_pid,
            _cpu_per_set,
            2000,
            "cpu",
            measures_itself=True,
        ),
        Case(
            f"CPU per dict set, {PACED_CALLS_PER_S:,} a second",
            _with_server_pid,
            _cpu_per_paced_set,
            2000,
            "cpu",
            measures_itself=True,
        ),
        Case(
            "workers' progress while a client calls (per 1k)",
            _with_server_pid,
            _workers_progress,
            2000,
            "progress",
            measures_itself=True,
        ),
        Case(
            f"workers' progress, {PACED_CALLS_PER_S:,} calls a second (per 1k)",
            _with_server_pid,
            _workers_progress_paced,
            2000,
            "progress",
            measures_itself=True,
        ),
        Case(
            "locked counter, 4 processes",
            _counter_setup,
            _counter(_counter_worker),
            2000,
            "throughput",
            measures_itself=True,
        ),
        Case(
            "atomic counter, 4 processes (stdlib: locked)",
            _counter_setup,
            _counter(_atomic_worker),
            4000,
            "throughput",
            measures_itself=True,
        ),
        *(
            Case(
                f"dict sets, {k} client{'s' if k > 1 else ''}",
                lambda m: m.dict(),
                _clients(k),
                max(4000, 400 * k),
                "throughput",
                measures_itself=True,
                clients=k,
            )
            for k in THROUGHPUT_CLIENTS
        ),
    )
}

#: rows whose procshare time is also shown as a multiple of the raw socket floor
FLOOR_ROWS = ("dict set", "dict get", "list append", "Value read")
#: the floor the ratios use: both sides sleep in recv, as the stdlib's do
FLOOR = "floor: raw pickled socket round trip"
#: shown for reference: the same, with both sides busy-polling (never sleeping)
SPINNING_FLOOR = "floor, both sides busy-polling"


# -- the raw socket floor -------------------------------------------------------------------------

_HEAD = struct.Struct("!I")


def _receiver(sock: socket.socket, spin: bool) -> Callable[[], bytes]:
    """``sock``'s recv; with ``spin`` a busy-polling one (neither side of the floor sleeps)."""

    def recv_spinning() -> bytes:
        while True:
            try:
                return sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                os.sched_yield()

    def recv_blocking() -> bytes:
        return sock.recv(65536)

    return recv_spinning if spin else recv_blocking


def _echo_server(path: str, ready: Any, spin: bool) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    ready.set()
    conn, _ = listener.accept()
    recv = _receiver(conn, spin)
    data = {}
    buf = b""
    while True:
        chunk = recv()
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
def both_managers() -> Iterator[tuple[Any, Any]]:
    """A started stdlib ``SyncManager`` and a procshare manager (both forked), shut down after."""
    import procshare

    stdlib = multiprocessing.managers.SyncManager(ctx=_FORK)
    stdlib.start()
    try:
        ours = procshare.Manager(ctx=_FORK)
        try:
            yield stdlib, ours
        finally:
            ours.shutdown()
    finally:
        stdlib.shutdown()


@contextlib.contextmanager
def _floor_client(spin: bool = False) -> Iterator[Callable[[Any, Any], Any]]:
    """A client of a fresh echo process; with ``spin`` both sides busy-poll instead of
    sleeping in recv."""
    directory = tempfile.mkdtemp(prefix="procshare-bench-")
    path = os.path.join(directory, "echo.sock")
    ready = _FORK.Event()
    server = _FORK.Process(target=_echo_server, args=(path, ready, spin), daemon=True)
    server.start()
    ready.wait(10)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    recv = _receiver(sock, spin)

    def call(key: Any, value: Any) -> Any:
        body = pickle.dumps((key, value), 5)
        sock.sendall(_HEAD.pack(len(body)) + body)
        buf = recv()
        while len(buf) < 4 or len(buf) < 4 + _HEAD.unpack_from(buf)[0]:
            buf += recv()
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
    _applied(state)
    return (time.perf_counter() - start) / n * 1e6


def _hog(seconds: float) -> None:
    """A CPU-bound process of the load (``--load``): busy for ``seconds`` at most."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """``processes`` CPU-bound processes running meanwhile (each ends by itself in an hour)."""
    hogs = [_FORK.Process(target=_hog, args=(3600.0,), daemon=True) for _ in range(processes)]
    for h in hogs:
        h.start()
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.join()


def run_bench(
    names: list[str] | None = None,
    *,
    rounds: int = 5,
    scale: float = 1.0,
    floor: bool = True,
    memory: bool = True,
    load: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Run the chosen cases (all by default) for both managers, alternating rounds.

    Args:
        names: case names (see ``CASES``); ``None`` for all.
        rounds: rounds per implementation; the median is reported.
        scale: multiplies each case's operation count (``--quick`` uses a small one).
        floor: also time the bare socket round trip.
        memory: also measure server memory for a million dict items (when running all cases).
        load: CPU-bound processes to run during the rounds (a busy machine, as users' is).
        progress: called with a line of text as each case finishes.
    """
    chosen = [CASES[n] for n in (names or list(CASES))]
    results: list[BenchResult] = []

    def report(result: BenchResult) -> None:
        result.load = load
        results.append(result)
        if progress:
            progress(_line(result))

    floor_us: float | None = None
    with both_managers() as (stdlib_manager, ours), cpu_load(load):
        if floor:
            for spin, name in ((False, FLOOR), (True, SPINNING_FLOOR)):
                with _floor_client(spin) as call:
                    n = max(50, int(2000 * scale))
                    _time_floor(call, n // 10)
                    samples = [_time_floor(call, n) for _ in range(rounds)]
                median = statistics.median(samples)
                floor_us = floor_us or median
                report(
                    BenchResult(
                        name,
                        median,
                        median,
                        kind="floor",
                        rounds=rounds,
                        stdlib_samples=samples,
                        procshare_samples=samples,
                    )
                )
        for case in chosen:
            n = max(1, int(case.n * scale))
            states = {"stdlib": case.setup(stdlib_manager), "procshare": case.setup(ours)}
            samples_by: dict[str, list[float]] = {"stdlib": [], "procshare": []}
            if not case.measures_itself:
                for state in states.values():  # warm up both (connections, caches)
                    case.run(state, max(1, n // 10))
            for _ in range(rounds):
                for impl, state in states.items():
                    if case.kind == "latency" and n >= 10 and not case.measures_itself:
                        case.run(state, n // 10)  # settle after the switch (both alike)
                    samples_by[impl].append(_time(case, state, n))
            report(
                BenchResult(
                    case.name,
                    statistics.median(samples_by["stdlib"]),
                    statistics.median(samples_by["procshare"]),
                    kind=case.kind,
                    rounds=rounds,
                    clients=case.clients,
                    floor_us=floor_us if case.name in FLOOR_ROWS else None,
                    stdlib_samples=samples_by["stdlib"],
                    procshare_samples=samples_by["procshare"],
                )
            )
        if memory and names is None:
            report(memory_result(stdlib_manager, ours, max(10_000, int(1_000_000 * scale))))
    return results


def _line(r: BenchResult) -> str:
    if r.kind == "floor":
        return f"{r.name:46s} {r.stdlib_us:10.1f} us"
    if r.kind == "memory":
        return f"{r.name:46s} {r.stdlib_us:9.2f}x {r.procshare_us:9.2f}x        {r.ratio:5.2f}"
    if r.kind == "throughput":
        return (
            f"{r.name:46s} {1e6 / r.stdlib_us:10.0f} {1e6 / r.procshare_us:10.0f} ops/s"
            f"  {r.stdlib_us / r.procshare_us:5.2f}x throughput"
        )
    if r.kind == "progress":
        return (
            f"{r.name:46s} {1e9 / r.stdlib_us:10.0f} {1e9 / r.procshare_us:10.0f} it/s "
            f"  {r.stdlib_us / r.procshare_us:5.2f}x progress"
        )
    if r.kind == "cpu":
        return f"{r.name:46s} {r.stdlib_us:10.1f} {r.procshare_us:10.1f} us CPU {r.ratio:5.2f}"
    line = f"{r.name:46s} {r.stdlib_us:10.1f} {r.procshare_us:10.1f} us     {r.ratio:5.2f}"
    if r.floor_us:
        line += f"   ({r.procshare_us / r.floor_us:.2f}x floor)"
    return line


def header() -> str:
    """The table header matching ``_line``."""
    return f"{'operation':46s} {'stdlib':>10s} {'procshare':>10s}        ratio (procshare/stdlib)"


def _figure(r: BenchResult) -> str:
    """A row's comparison in a few characters: a time ratio (below 1 is better), or how many
    times the stdlib's throughput or progress (above 1 is better)."""
    if r.kind == "floor":
        return f"{r.stdlib_us:.1f} us"
    if r.kind in ("throughput", "progress"):
        return f"{r.stdlib_us / r.procshare_us:.2f}x"
    return f"{r.ratio:.2f}"


def side_by_side(results: list[BenchResult]) -> str:
    """The rows of runs at several loads, their comparisons side by side (one column each)."""
    loads = sorted({r.load for r in results})
    rows: dict[str, dict[int, BenchResult]] = {}
    for r in results:
        rows.setdefault(r.name, {})[r.load] = r
    names = ["idle" if k == 0 else f"{k} CPU-bound" for k in loads]
    lines = [f"{'operation':46s} " + " ".join(f"{n:>13s}" for n in names)]
    for name, by_load in rows.items():
        cells = [_figure(by_load[k]) if k in by_load else "" for k in loads]
        lines.append(f"{name:46s} " + " ".join(f"{c:>13s}" for c in cells))
    return "\n".join(lines)


def to_json(results: list[BenchResult]) -> str:
    """Results as JSON, with the ratio included."""
    return json.dumps([dict(asdict(r), ratio=r.ratio) for r in results], indent=2)


def plot(results: list[BenchResult], path: str) -> None:
    """Save a chart of throughput against the number of client processes to ``path``.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'procshare[plot]'``).
        ValueError: the results hold no throughput-vs-clients rows.
    """
    rows = sorted((r for r in results if r.clients), key=lambda r: r.clients)
    if not rows:
        raise ValueError("no 'dict sets, N clients' rows to plot (do not restrict --only)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'procshare[plot]'") from exc
    clients = [r.clients for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(clients, [1e6 / r.stdlib_us for r in rows], "o-", label="multiprocessing.Manager")
    ax.plot(clients, [1e6 / r.procshare_us for r in rows], "o-", label="procshare")
    ax.set_xscale("log", base=2)
    ax.set_xticks(clients, [str(c) for c in clients])
    ax.set_xlabel("client processes (each doing dict sets)")
    ax.set_ylabel("operations per second, all clients")
    ax.set_title("Throughput against the number of clients (same run)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
