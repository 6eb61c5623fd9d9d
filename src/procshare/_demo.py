"""``procshare demo``: the seed tutorial's scenarios on procshare, timed against the stdlib.

Each scenario runs once on ``multiprocessing.Manager()`` and once on procshare's embedded
server, with identical code (only the module differs, as in ``import procshare as
multiprocessing``); what each prints is shown, and both times side by side.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import time
from collections.abc import Callable
from typing import Any

from .managers import BaseManager

__all__ = ["run_demo"]


# -- scenario 1: workers fill a dict ----------------------------------------------------------


def _worker(d: Any, key: int, value: int) -> None:
    d[key] = value


def dict_workers(mp: Any, manager: Any, say: Callable[[str], None]) -> None:
    """Ten worker processes each write one key of a shared dict."""
    d = manager.dict()
    jobs = [mp.Process(target=_worker, args=(d, i, i * 2)) for i in range(10)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    say("Results: " + ", ".join(f"{k}={v}" for k, v in sorted(dict(d).items())))


# -- scenario 2: two producers, one list, a third process looking ------------------------------


def _producer(pool: Any, numbers: range, pause: float) -> None:
    for n in numbers:
        time.sleep(pause)
        pool.append(n)


def data_pool(mp: Any, manager: Any, say: Callable[[str], None]) -> None:
    """Processes A and B append to one list while C (this process) polls it, as in the seed."""
    pool = manager.list()
    a = mp.Process(target=_producer, args=(pool, range(100, 105), 0.05))
    b = mp.Process(target=_producer, args=(pool, range(300, 309), 0.03))
    a.start()
    b.start()
    for _ in range(3):
        time.sleep(0.08)
        say(f"C polls: {list(pool)}")
    a.join()
    b.join()
    say(f"final ({len(pool)} items): {sorted(pool)}")


# -- scenario 2b: the same, pushed instead of polled ---------------------------------------------


def _producer_done(pool: Any, numbers: range, pause: float) -> None:
    _producer(pool, numbers, pause)
    pool.append(None)  # this producer is done


def data_pool_pushed(mp: Any, manager: Any, say: Callable[[str], None]) -> None:
    """C follows the list as A and B append: told of each append (procshare), or polling
    until both are done (the stdlib has no push; it polls as the seed does)."""
    pool = manager.list()
    a = mp.Process(target=_producer_done, args=(pool, range(100, 105), 0.05))
    b = mp.Process(target=_producer_done, args=(pool, range(300, 309), 0.03))
    reads = 0
    arrived: list[int] = []
    if hasattr(pool, "watch"):
        with pool.watch() as changes:
            a.start()
            b.start()
            done = 0
            for change in changes:
                reads += 1
                if change.args[0] is None:
                    done += 1
                    if done == 2:
                        break
                else:
                    arrived.append(change.args[0])
    else:
        a.start()
        b.start()
        while True:
            reads += 1
            snapshot = list(pool)
            if snapshot.count(None) == 2:
                arrived = [n for n in snapshot if n is not None]
                break
            time.sleep(0.01)
    a.join()
    b.join()
    say(f"C saw {len(arrived)} numbers, in arrival order: {arrived}")
    if hasattr(pool, "watch"):
        say(f"C was told of {reads} appends as they happened, and read the list 0 times")
    else:
        say(f"C read the whole list {reads} times to follow it (polling every 10 ms)")


# -- scenario 3: twenty processes, shared objects, one lock -----------------------------------


def _locked_update(share_list: Any, value: Any, share_dict: Any, lock: Any) -> None:
    with lock:
        value.value += 1
        share_dict[1] = "1"
        share_dict[2] = "2"
        for i in range(len(share_list)):
            share_list[i] += 1


def locked_updates(mp: Any, manager: Any, say: Callable[[str], None]) -> None:
    """Twenty processes update a list, a dict and a Value under one managed Lock."""
    lst = manager.list([1, 2, 3, 4, 5])
    d = manager.dict()
    value = manager.Value("i", 1)
    lock = manager.Lock()
    procs = [mp.Process(target=_locked_update, args=(lst, value, d, lock)) for _ in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    say(f"list={lst} dict={d} value={value}")


# -- scenario 4: a registered custom class ----------------------------------------------------


class Employee:
    """The seed's custom class: lives in the server, called through an AutoProxy."""

    def __init__(self, name: str, salary: int) -> None:
        self.name = name
        self.salary = salary

    def increase(self) -> None:
        self.salary += 100

    def get_pay(self) -> str:
        return f"{self.name}:{self.salary}"


def _raise_pay(em: Any, lock: Any) -> None:
    with lock:
        em.increase()


class StdlibEmployeeManager(multiprocessing.managers.BaseManager):
    pass


StdlibEmployeeManager.register("Employee", Employee)


class ProcshareEmployeeManager(BaseManager):
    pass


ProcshareEmployeeManager.register("Employee", Employee)


def custom_class(mp: Any, manager: Any, say: Callable[[str], None]) -> None:
    """Ten processes raise a registered Employee's pay under a lock."""
    em = manager.Employee("zhangsan", 1000)
    lock = mp.Lock()
    procs = [mp.Process(target=_raise_pay, args=(em, lock)) for _ in range(10)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    say(f"pay: {em.get_pay()}")


SCENARIOS: list[tuple[str, Callable[[Any, Any, Callable[[str], None]], None], bool]] = [
    ("workers filling a dict", dict_workers, False),
    ("two producers, one list, a third process polling", data_pool, False),
    ("the same, with C told of each append (watch) instead of polling", data_pool_pushed, False),
    ("twenty processes, shared objects, one lock", locked_updates, False),
    ("a registered custom class", custom_class, True),
]


def _manager_for(impl: str, custom: bool, url: str | None = None) -> Any:
    import procshare

    if not custom:
        if impl == "stdlib":
            return multiprocessing.Manager()
        if url is not None:  # (a namespace of its own in that Redis, deleted at shutdown)
            on_redis = procshare.SyncManager(address=url)
            on_redis.start()
            return on_redis
        return procshare.Manager()
    m: Any = StdlibEmployeeManager() if impl == "stdlib" else ProcshareEmployeeManager()
    m.start()
    return m


def run_demo(
    out: Callable[[str], None] = print, url: str | None = None
) -> list[tuple[str, float, float]]:
    """Run every scenario on both managers; return (name, stdlib seconds, procshare seconds).
    ``url``: procshare's objects live in that Redis (``redis://...``) instead of its server."""
    import procshare

    timings = []
    for title, scenario, custom in SCENARIOS:
        out(f"\n== {title}")
        if custom and url is not None:
            out("   (skipped on Redis: a registered class needs a server to run in)")
            continue
        seconds = {}
        for impl, module in (("stdlib", multiprocessing), ("procshare", procshare)):
            manager = _manager_for(impl, custom, url)
            lines: list[str] = []
            try:
                start = time.perf_counter()
                scenario(module, manager, lines.append)
                seconds[impl] = time.perf_counter() - start
            finally:
                manager.shutdown()
            shown = lines if impl == "procshare" else [ln for ln in lines if "times" in ln]
            for line in shown:
                out(f"   {impl + ':':11s}{line}" if scenario is data_pool_pushed else f"   {line}")
        out(
            f"   time: multiprocessing.Manager {seconds['stdlib'] * 1e3:7.1f} ms   "
            f"procshare {seconds['procshare'] * 1e3:7.1f} ms"
        )
        timings.append((title, seconds["stdlib"], seconds["procshare"]))
    return timings
