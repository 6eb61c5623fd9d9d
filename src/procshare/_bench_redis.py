"""``procshare bench --url redis://...``: procshare on Redis against raw redis-py doing the same
work, in the same run, and the stdlib Manager on this machine for reference.

Each row times one operation through procshare's proxies (objects in Redis) and the nearest
thing a program would write with redis-py alone (``HSET``, ``HGET``, ``RPUSH``, ``LINDEX``,
``INCRBY``, ``SET NX`` with a Lua release, ``RPUSH`` then ``BLPOP``), alternating rounds, and
prints the median microseconds of each and their ratio.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["run_redis_bench"]

Op = Callable[[int], None]

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ops_procshare(m: Any) -> dict[str, Op]:
    d, lst, v, lock, q = m.dict(), m.list([0]), m.Value("i", 0), m.Lock(), m.Queue()

    def dict_set(n: int) -> None:
        for i in range(n):
            d["k"] = i

    def dict_get(n: int) -> None:
        for _ in range(n):
            d["k"]

    def list_append(n: int) -> None:
        for i in range(n):
            lst.append(i)
        del lst[1:]  # (kept small between rounds: each change rewrites it)

    def list_read(n: int) -> None:
        for _ in range(n):
            lst[0]

    def increment(n: int) -> None:
        for _ in range(n):
            v.increment()

    def lock_cycle(n: int) -> None:
        for _ in range(n):
            lock.acquire()
            lock.release()

    def queue_cycle(n: int) -> None:
        for i in range(n):
            q.put(i)
            q.get()

    d["k"] = 0
    return {
        "dict set (HSET)": dict_set,
        "dict get (HGET)": dict_get,
        "list append (RPUSH)": list_append,
        "list read by index (LINDEX)": list_read,
        "Value increment (INCRBY)": increment,
        "Lock acquire+release (SET NX + Lua)": lock_cycle,
        "Queue put+get (RPUSH + BLPOP)": queue_cycle,
    }


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
    return {
        "dict set (HSET)": dict_set,
        "dict get (HGET)": dict_get,
        "list append (RPUSH)": list_append,
        "list read by index (LINDEX)": list_read,
        "Value increment (INCRBY)": increment,
        "Lock acquire+release (SET NX + Lua)": lock_cycle,
        "Queue put+get (RPUSH + BLPOP)": queue_cycle,
    }


def _ops_stdlib(m: Any) -> dict[str, Op]:
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
        del lst[1:]

    def list_read(n: int) -> None:
        for _ in range(n):
            lst[0]

    def increment(n: int) -> None:
        for _ in range(n):
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

    return {
        "dict set (HSET)": dict_set,
        "dict get (HGET)": dict_get,
        "list append (RPUSH)": list_append,
        "list read by index (LINDEX)": list_read,
        "Value increment (INCRBY)": increment,
        "Lock acquire+release (SET NX + Lua)": lock_cycle,
        "Queue put+get (RPUSH + BLPOP)": queue_cycle,
    }


def _time(op: Op, n: int) -> float:
    start = time.perf_counter()
    op(n)
    return (time.perf_counter() - start) / n * 1e6


def run_redis_bench(
    url: str, *, rounds: int = 5, n: int = 500, progress: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run the rows against the Redis at ``url`` (in a namespace of its own, deleted after);
    print each row as it is done; return them (µs per operation, and the ratios)."""
    import redis

    from ._manager import SyncManager
    from ._redis._url import credentials_for, parse_redis_url

    parsed = parse_redis_url(url)
    client = redis.Redis(
        host=parsed.host,
        port=parsed.port,
        db=parsed.db,
        username=credentials_for(parsed)[0],
        password=credentials_for(parsed)[1],
        ssl=parsed.tls,
    )
    raw_prefix = f"procshare-bench:{time.monotonic_ns()}:"
    ours = SyncManager(address=url.split("?", maxsplit=1)[0])  # (a namespace of its own)
    ours.start()
    rows = []
    try:
        with multiprocessing.get_context().Manager() as stdlib:
            mine, theirs, plain = (
                _ops_procshare(ours),
                _ops_raw(client, raw_prefix),
                _ops_stdlib(stdlib),
            )
            progress(
                f"{'operation':38s} {'procshare':>10s} {'redis-py':>9s} {'ratio':>6s}"
                f" {'stdlib Manager':>15s}"
            )
            for name in mine:
                a, b, c = [], [], []
                for _ in range(rounds):
                    a.append(_time(mine[name], n))
                    b.append(_time(theirs[name], n))
                    c.append(_time(plain[name], n))
                us = statistics.median(a), statistics.median(b), statistics.median(c)
                row: dict[str, Any] = {
                    "operation": name,
                    "procshare_us": us[0],
                    "redis_py_us": us[1],
                    "stdlib_us": us[2],
                    "ratio": us[0] / us[1],
                }
                rows.append(row)
                progress(
                    f"{name:38s} {row['procshare_us']:8.1f}us {row['redis_py_us']:7.1f}us"
                    f" {row['ratio']:6.2f} {row['stdlib_us']:13.1f}us"
                )
    finally:
        ours.shutdown()
        keys = list(client.scan_iter(match=raw_prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    return rows
