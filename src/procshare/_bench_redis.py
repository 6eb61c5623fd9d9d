"""``procshare bench --url redis://...``: procshare on Redis against raw redis-py doing the same
work, in the same run, and the stdlib Manager on this machine for reference.

Each row times one operation through procshare's proxies (objects in Redis) and the nearest
thing a program would write with redis-py alone (``HSET``, ``HGET``, ``RPUSH``, ``LINDEX``,
``INCRBY``, ``SET NX`` with a Lua release, ``RPUSH`` then ``BLPOP``), alternating rounds, and
prints the median microseconds of each and their ratio.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["run_redis_bench"]

Op = Callable[[int], None]

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: the rows of one call each, and the raw redis-py commands each is measured against
ROWS: Final = (
    "dict set (HSET)",
    "dict get (HGET)",
    "list append (RPUSH)",
    "list read by index (LINDEX)",
    "Value increment (INCRBY)",
    "Lock acquire+release (SET NX + Lua)",
    "Queue put+get (RPUSH + BLPOP)",
)

#: the entries of the large dict a pipeline writes into (its cost must not grow with it)
_LARGE: Final = 10_000

#: issue #21's rows: pushed changes, cached reads, pipelines
PUSH_ROWS: Final = (
    "a change seen by a watcher (XADD+XREAD)",
    "cached read (HGET)",
    "write, then cached read (HSET+HGET)",
    "pipeline of 100 mixed, per call (MULTI)",
    "pipeline of 100 sets, dict of 10k (MULTI)",
)


def _ops_proxies(m: Any, *, atomic_increment: bool) -> dict[str, Op]:
    """The rows through a manager's proxies (procshare's on Redis, or the stdlib's)."""
    d, lst, v, lock, q = m.dict(k=0), m.list([0]), m.Value("i", 0), m.Lock(), m.Queue()

    def dict_set(n: int) -> None:
        for i in range(n):
            d["k"] = i

    def dict_get(n: int) -> None:
        for _ in range(n):
            d["k"]

    def list_append(n: int) -> None:
        for i in range(n):
            lst.append(i)
        del lst[1:]  # (kept small between rounds)

    def list_read(n: int) -> None:
        for _ in range(n):
            lst[0]

    def increment(n: int) -> None:
        for _ in range(n):
            if atomic_increment:
                v.increment()
            else:
                with lock:  # (the stdlib has no atomic increment)
                    v.value += 1

    def lock_cycle(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    def queue_cycle(n: int) -> None:
        for i in range(n):
            q.put(i)
            q.get()

    ops = (dict_set, dict_get, list_append, list_read, increment, lock_cycle, queue_cycle)
    return dict(zip(ROWS, ops, strict=True))


def _ops_raw(client: Any, prefix: str) -> dict[str, Op]:
    release = client.register_script(_RELEASE)
    h, lst, counter, lock, q = (prefix + s for s in ("h", "l", "c", "lock", "q"))
    client.rpush(lst, 0)

    def dict_set(n: int) -> None:
        for i in range(n):
            client.hset(h, "k", i)

    def dict_get(n: int) -> None:
        for _ in range(n):
            client.hget(h, "k")

    def list_append(n: int) -> None:
        for i in range(n):
            client.rpush(lst, i)
        client.ltrim(lst, 0, 0)

    def list_read(n: int) -> None:
        for _ in range(n):
            client.lindex(lst, 0)

    def increment(n: int) -> None:
        for _ in range(n):
            client.incrby(counter, 1)

    def lock_cycle(n: int) -> None:
        for _ in range(n):
            client.set(lock, "me", nx=True, px=5000)
            release(keys=[lock], args=["me"])

    def queue_cycle(n: int) -> None:
        for i in range(n):
            client.rpush(q, i)
            client.blpop([q], timeout=1)

    client.hset(h, "k", 0)
    ops = (dict_set, dict_get, list_append, list_read, increment, lock_cycle, queue_cycle)
    return dict(zip(ROWS, ops, strict=True))


def _push_ops_procshare(m: Any, stack: contextlib.ExitStack) -> dict[str, Op | None]:
    """The rows of issue #21: a change seen by a watcher, cached reads, a pipeline."""
    watched, cached, piped = m.dict(k=0), m.dict(k=0).cache(), m.dict()
    seen: queue.SimpleQueue[int] = queue.SimpleQueue()
    changes = stack.enter_context(watched.watch())

    def pump() -> None:
        with contextlib.suppress(Exception):
            for change in changes:
                seen.put(change.version)

    threading.Thread(target=pump, daemon=True).start()

    def watch_latency(n: int) -> None:
        for i in range(n):
            watched["k"] = i
            seen.get(timeout=10)

    def cached_hit(n: int) -> None:
        for _ in range(n):
            cached["k"]

    def cached_after_write(n: int) -> None:
        for i in range(n):
            cached["k"] = i
            cached["k"]

    def pipeline(n: int) -> None:
        for _ in range(max(1, n // 100)):
            with m.pipeline() as p:
                for i in range(50):
                    p(piped)[i] = i
                for i in range(25):
                    p(piped).get(i)
                for _ in range(25):
                    p(piped).increment("n")

    large = m.dict({i: i for i in range(_LARGE)})

    def pipeline_large(n: int) -> None:
        for b in range(max(1, n // 100)):
            with large.pipeline() as p:
                for i in range(100):
                    p[(b * 100 + i) % _LARGE] = i

    ops = (watch_latency, cached_hit, cached_after_write, pipeline, pipeline_large)
    return dict(zip(PUSH_ROWS, ops, strict=True))


def _push_ops_raw(client: Any, prefix: str, stack: contextlib.ExitStack) -> dict[str, Op | None]:
    import redis

    stream, h = prefix + "x", prefix + "ph"
    reader = redis.Redis(
        connection_pool=client.connection_pool.__class__(**client.connection_pool.connection_kwargs)
    )
    stack.callback(reader.close)
    seen: queue.SimpleQueue[int] = queue.SimpleQueue()
    stop = threading.Event()
    stack.callback(stop.set)

    def pump() -> None:
        last = "$"
        while not stop.is_set():
            answer: Any = reader.xread({stream: last}, block=100)
            for _key, entries in answer or ():
                for eid, _fields in entries:
                    last = eid
                    seen.put(1)

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.2)  # (the reader blocked in XREAD: changes from now on)

    def watch_latency(n: int) -> None:
        for i in range(n):
            client.xadd(stream, {"v": i}, maxlen=10_000, approximate=True)
            seen.get(timeout=10)

    def cached_hit(n: int) -> None:
        for _ in range(n):
            client.hget(h, "k")

    def cached_after_write(n: int) -> None:
        for i in range(n):
            client.hset(h, "k", i)
            client.hget(h, "k")

    def pipeline(n: int) -> None:
        for _ in range(max(1, n // 100)):
            pipe = client.pipeline(transaction=True)
            for i in range(50):
                pipe.hset(h, i, i)
            for i in range(25):
                pipe.hget(h, i)
            for _ in range(25):
                pipe.hincrby(h, "n", 1)
            pipe.execute()

    large = prefix + "large"
    client.hset(large, mapping={i: i for i in range(_LARGE)})

    def pipeline_large(n: int) -> None:
        for b in range(max(1, n // 100)):
            pipe = client.pipeline(transaction=True)
            for i in range(100):
                pipe.hset(large, (b * 100 + i) % _LARGE, i)
            pipe.execute()

    client.hset(h, "k", 0)
    ops = (watch_latency, cached_hit, cached_after_write, pipeline, pipeline_large)
    return dict(zip(PUSH_ROWS, ops, strict=True))


def _push_ops_stdlib(m: Any) -> dict[str, Op | None]:
    d = m.dict(k=0)

    def read(n: int) -> None:
        for _ in range(n):
            d["k"]

    def write_read(n: int) -> None:
        for i in range(n):
            d["k"] = i
            d["k"]

    def calls(n: int) -> None:  # (the stdlib has no pipeline: the same calls, one by one)
        for _ in range(max(1, n // 100)):
            for i in range(50):
                d[i] = i
            for i in range(25):
                d.get(i)
            for _ in range(25):
                d["n"] = d.get("n", 0) + 1

    large = m.dict({i: i for i in range(_LARGE)})

    def sets_large(n: int) -> None:  # (one by one, as above)
        for b in range(max(1, n // 100)):
            for i in range(100):
                large[(b * 100 + i) % _LARGE] = i

    # (it has no watch: it polls)
    return dict(zip(PUSH_ROWS, (None, read, write_read, calls, sets_large), strict=True))


def _per_call(name: str, n: int) -> int:
    """How many operations ``op(n)`` makes, for the per-operation time."""
    return max(1, n // 100) * 100 if name.startswith("pipeline") else n


def _time(op: Op | None, n: int, count: int) -> float:
    """Microseconds per operation of ``op(n)`` (``count`` operations); NaN for no ``op``."""
    if op is None:
        return float("nan")
    start = time.perf_counter()
    op(n)
    return (time.perf_counter() - start) / count * 1e6


def run_redis_bench(
    url: str, *, rounds: int = 5, n: int = 500, progress: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run the rows against the Redis at ``url`` (in a namespace of its own, deleted after);
    print each row as it is done; return them (µs per operation, and the ratios)."""

    from ._manager import SyncManager
    from ._redis._url import parse_redis_url, redis_client

    client = redis_client(parse_redis_url(url))
    raw_prefix = f"procshare-bench:{time.monotonic_ns()}:"
    ours = SyncManager(address=url.split("?", maxsplit=1)[0])  # (a namespace of its own)
    ours.start()
    rows = []
    try:
        with multiprocessing.get_context().Manager() as stdlib:
            stack = contextlib.ExitStack()
            mine: dict[str, Op | None] = {**_ops_proxies(ours, atomic_increment=True)}
            theirs: dict[str, Op | None] = {**_ops_raw(client, raw_prefix)}
            plain: dict[str, Op | None] = {**_ops_proxies(stdlib, atomic_increment=False)}
            mine.update(_push_ops_procshare(ours, stack))
            theirs.update(_push_ops_raw(client, raw_prefix, stack))
            plain.update(_push_ops_stdlib(stdlib))
            progress(
                f"{'operation':40s} {'procshare':>10s} {'redis-py':>9s} {'ratio':>6s}"
                f" {'stdlib Manager':>15s}"
            )
            with stack:
                for name, op in mine.items():
                    a, b, c = [], [], []
                    count = _per_call(name, n)
                    for _ in range(rounds):
                        a.append(_time(op, n, count))
                        b.append(_time(theirs[name], n, count))
                        c.append(_time(plain[name], n, count))
                    us = statistics.median(a), statistics.median(b), statistics.median(c)
                    row: dict[str, Any] = {
                        "operation": name,
                        "procshare_us": us[0],
                        "redis_py_us": us[1],
                        "stdlib_us": us[2] if us[2] == us[2] else None,  # (NaN: no such thing)
                        "ratio": us[0] / us[1],
                    }
                    rows.append(row)
                    stdlib_text = "-" if row["stdlib_us"] is None else f"{us[2]:.1f}us"
                    progress(
                        f"{name:40s} {us[0]:8.1f}us {us[1]:7.1f}us"
                        f" {row['ratio']:6.2f} {stdlib_text:>15s}"
                    )
    finally:
        ours.shutdown()
        keys = list(client.scan_iter(match=raw_prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    return rows
