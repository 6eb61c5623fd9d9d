"""Targets for child processes in the tests (kept free of pytest imports: spawn is faster)."""

from __future__ import annotations

import os
import queue
import signal
import time
from typing import Any


def set_item(d: Any, key: Any, value: Any) -> None:
    d[key] = value


def check_copy(d: Any, expected: dict[Any, Any]) -> None:
    """Read a large dict whole, twice, and once more after changing it from here."""
    assert d.copy() == expected
    assert d.copy() == expected
    d["child"] = True
    assert d.copy() == {**expected, "child": True}


def append_many(lst: Any, values: list[Any]) -> None:
    for v in values:
        lst.append(v)


def locked_increments(value: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            value.value += 1


def relock_until_stopped(lock: Any, started: Any, stop: Any, limit: int, out: Any) -> None:
    """Hold ``lock`` a moment and take it again as soon as it is released, until ``stop`` is
    set (or ``limit`` times); report how many times."""
    lock.acquire()
    started.set()
    n = 0
    while n < limit and not stop.is_set():
        time.sleep(0.0001)  # holding it most of the time: others find it held
        lock.release()
        lock.acquire()
        n += 1
    lock.release()
    out.put(n)


def put_all(q: Any, items: list[Any]) -> None:
    for item in items:
        q.put(item)


def get_n(q: Any, n: int, out: Any) -> None:
    for _ in range(n):
        out.append(q.get(timeout=30))


def wait_event_then_record(ev: Any, out: Any) -> None:
    out.append(ev.wait(30))


def barrier_wait(barrier: Any, out: Any) -> None:
    out.append(barrier.wait(30))


def use_nested(d: Any) -> None:
    d["inner"].append("from child")
    d["ns"].child = os.getpid()


def call_custom(obj: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            obj.increase()


def condition_waiter(cond: Any, flag: Any, out: Any) -> None:
    with cond:
        ok = cond.wait_for(lambda: flag.value, timeout=30)
    out.append(ok)


def hold_and_die(lock: Any, how: str, ready: Any) -> None:
    """Acquire ``lock``, say so, then die without releasing it."""
    lock.acquire()
    ready.set()
    if how == "exit":
        os._exit(3)
    if how == "raise":
        raise SystemExit(4)
    time.sleep(60)  # killed by the test


def hold_rlock_twice_and_wait(rlock: Any, ready: Any) -> None:
    rlock.acquire()
    rlock.acquire()
    ready.set()
    time.sleep(60)


def hold_semaphore_and_wait(sem: Any, ready: Any) -> None:
    sem.acquire()
    ready.set()
    time.sleep(60)


def wait_in_condition(cond: Any, ready: Any) -> None:
    cond.acquire()
    ready.set()
    cond.wait()  # the lock is released while waiting; killed here


def block_on_get(q: Any, ready: Any) -> None:
    ready.set()
    q.get()


def take_and_die(q: Any, ready: Any) -> None:
    q.get()
    ready.set()
    time.sleep(60)


def party_and_die(barrier: Any, ready: Any) -> None:
    ready.set()
    barrier.wait()


def blocked_call_reports(lock: Any, out: Any) -> None:
    """Block on a lock whose server will die; record what the call raised."""
    try:
        lock.acquire()
    except Exception as exc:
        out.put(type(exc).__name__)
    else:
        out.put("acquired")


def mixed_load(d: Any, lst: Any, q: Any, lock: Any, worker: int, rounds: int) -> None:
    for i in range(rounds):
        with lock:
            d["counter"] = d.get("counter", 0) + 1
        lst.append((worker, i))
        q.put((worker, i))
        q.get(timeout=30)


def drain(q: Any) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def write_numbers(target: Any, key: Any, count: int) -> None:
    for i in range(count):
        target[key] = i


def append_numbers(lst: Any, start: int, count: int) -> None:
    for i in range(start, start + count):
        lst.append(i)


def watch_and_report(obj: Any, expected: int, ready: Any, out: Any) -> None:
    """Watch ``obj`` until ``expected`` changes arrived; report (op, args, version) triples."""
    seen = []
    with obj.watch(timeout=30) as changes:
        ready.set()
        for change in changes:
            seen.append((change.op, change.args, change.version))
            if len(seen) >= expected:
                break
    out.put(seen)


def watch_then_die(obj: Any, ready: Any) -> None:
    watch = obj.watch()
    ready.set()
    time.sleep(60)
    watch.close()


def cached_writer(d: Any, key: Any, rounds: int, out: Any) -> None:
    """Write our own key and read it straight back through a cached proxy."""
    d.cache()
    stale = 0
    for i in range(rounds):
        d[key] = i
        if d[key] != i:
            stale += 1
        d["shared"] = (key, i)  # everybody writes this one too
    out.put(stale)


def atomic_increments(value: Any, d: Any, n: int) -> None:
    for _ in range(n):
        value.increment()
        d.increment("hits")


def cas_increments(value: Any, n: int) -> None:
    """Increment through compare-and-set retries (an optimistic lock-free loop)."""
    for _ in range(n):
        while True:
            current = value.get()
            if value.compare_and_set(current, current + 1):
                break


def pipelined_appends(lst: Any, worker: int, n: int) -> None:
    with lst.pipeline() as pl:
        for i in range(n):
            pl.append((worker, i))


def apply_calls(obj: Any, calls: list[tuple[str, tuple[Any, ...]]], pause: float = 0.0) -> None:
    """Make ``calls`` (method name, arguments) on ``obj``, one after another, ``pause`` apart."""
    for method, args in calls:
        getattr(obj, method)(*args)
        if pause:
            time.sleep(pause)


def set_value(value: Any, new: Any) -> None:
    value.value = new


def release_lock(lock: Any) -> None:
    lock.release()


def locked_read_modify_write(value: Any, d: Any, lock: Any, n: int) -> None:
    """``n`` locked increments of a Value and a dict entry, read first and written after."""
    for _ in range(n):
        with lock:
            x, y = value.value, d["n"]
            value.value = x + 1
            d["n"] = y + 1


def change_on_cue(obj: Any, calls: list[tuple[str, tuple[Any, ...]]], conn: Any) -> None:
    """Make each call when told to through ``conn`` (a pipe the server never sees), and say
    when it has returned."""
    for method, args in calls:
        assert conn.recv() == "go"
        getattr(obj, method)(*args)
        conn.send("done")


def read_forever(d: Any, key: Any, out: Any) -> None:
    """Read ``d[key]`` in a loop until the read fails; report how it failed."""
    d[key]  # connected (and leased) before the test goes on
    out.put("reading")
    try:
        for _ in range(10_000_000):
            d[key]
    except Exception as exc:
        out.put(type(exc).__name__)
        return
    out.put("never failed")


class Interrupted(Exception):
    """What the alarm's handler raises in the middle of a blocked call."""


def _alarm_in(seconds: float) -> None:
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def interrupted_call(target: Any, how: str, interrupted: Any, leave: Any, out: Any) -> None:
    """Block in ``how`` on ``target`` until an alarm's handler raises; report, then stay
    alive (connected) until ``leave`` is set, so that only the withdrawal can set it free."""
    _alarm_in(0.3)
    result = "not interrupted"
    try:
        if how == "acquire":
            target.acquire()
        elif how == "get":
            result = repr(target.get())
        elif how == "wait":
            target.wait()
        elif how == "join":
            target.join()
        elif how == "condition":
            with target:
                target.wait()
            result = "released"  # (__exit__ released the lock the wait re-acquired)
        else:
            raise ValueError(how)
    except Interrupted:
        result = "interrupted" if how != "condition" else "interrupted, lock held"
        if how == "condition":
            result += f": {target._holding}"
    except BaseException as exc:
        result = f"{type(exc).__name__}: {exc}"
    out.put(result)
    interrupted.set()
    leave.wait(60)


def condition_interrupted(cond: Any, interrupted: Any, leave: Any, out: Any) -> None:
    """``with cond: cond.wait()`` interrupted by an alarm: the exception must leave the
    ``with`` cleanly (the wait ends holding the lock, which ``__exit__`` releases)."""
    _alarm_in(0.3)
    try:
        with cond:
            cond.wait()
        out.put("not interrupted")
    except Interrupted:
        out.put("interrupted cleanly")
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")
    interrupted.set()
    leave.wait(60)


def blocked_get_forever(q: Any, started: Any) -> None:
    started.set()
    q.get()
    time.sleep(60)


def take_and_exit(q: Any, n: int) -> None:
    """Take ``n`` items and exit without ``task_done`` (a clean exit, not a death)."""
    for _ in range(n):
        q.get(timeout=30)


def take_and_hang(q: Any, n: int, ready: Any) -> None:
    for _ in range(n):
        q.get(timeout=30)
    ready.set()
    time.sleep(60)  # killed by the test


def acquire_and_exit(lock: Any) -> None:
    """Take ``lock`` (a Lock or a semaphore) and exit without releasing it."""
    lock.acquire()


def mark(d: Any, key: Any) -> None:
    """A Barrier action that uses a shared object (it runs in the server)."""
    d[key] = d.get(key, 0) + 1


class Store:
    """A custom shared class whose methods return its parts (``method_to_typeid``)."""

    def __init__(self) -> None:
        self.data = {"a": 1}
        self.items = [1]

    def get_data(self) -> dict[str, int]:
        return self.data

    def get_items(self) -> list[int]:
        return self.items

    def size(self) -> int:
        return len(self.data) + len(self.items)

    def unpicklable(self) -> Any:
        import threading

        return threading.Lock()

    def weird_error(self) -> None:
        raise NotRebuildable(1, 2)


class NotRebuildable(Exception):
    """An exception that pickles but does not unpickle (its ``__init__`` wants two)."""

    def __init__(self, a: Any, b: Any) -> None:
        super().__init__(a)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n

    def get(self) -> int:
        return self.n


class Item:
    def a(self) -> str:
        return "a"

    def b(self) -> str:
        return "b"


class Holder:
    """Returns one object under two typeids (``as_a``: ``ItemA``, ``as_b``: ``ItemB``)."""

    def __init__(self) -> None:
        self.item = Item()

    def as_a(self) -> Item:
        return self.item

    def as_b(self) -> Item:
        return self.item


def register_custom(manager_class: Any, managers: Any) -> Any:
    """Register on ``manager_class`` (of ``managers``: the stdlib's module or procshare's) what
    the fidelity tests use; return it."""
    manager_class.register(
        "Store", Store, method_to_typeid={"get_data": "dict", "get_items": "list"}
    )
    manager_class.register("dict", dict, managers.DictProxy)
    manager_class.register("list", list, managers.ListProxy)
    manager_class.register(
        "Counter", Counter, managers.MakeProxyType("CounterProxy", ("inc", "get"))
    )
    manager_class.register("Holder", Holder, method_to_typeid={"as_a": "ItemA", "as_b": "ItemB"})
    manager_class.register("ItemA", exposed=("a",), create_method=False)
    manager_class.register("ItemB", exposed=("b",), create_method=False)
    manager_class.register("BadTypeid", Store, method_to_typeid={"get_data": "nosuchtypeid"})
    return manager_class


def append_then_kill_myself(lst: Any, count: int) -> None:
    """Append ``count`` items (posted, past the first) and die at once, unflushed by any exit."""
    for i in range(count):
        lst.append(i)
    os.kill(os.getpid(), signal.SIGKILL)


def write_then_tell(obj: Any, calls: list[tuple[str, tuple[Any, ...]]], conn: Any) -> None:
    """Make ``calls`` (writes: the last ones posted), then say so through a pipe."""
    for method, args in calls:
        getattr(obj, method)(*args)
    conn.send("written")
    conn.recv()


def register_then_post(d: Any, warm: int, conn: Any) -> None:
    """Write d["k"] ``warm`` times (asking to post), say so; when told, post one more write
    and say so at once (it may still be unread by the server)."""
    for i in range(warm):
        d["k"] = i
    conn.send("registered")
    conn.recv()
    d["k"] = "posted"
    conn.send("posted")
    conn.recv()


def lockstep(barrier: Any, results: Any, parties: int, passes: int) -> None:
    """CPython's barrier test (``multipass``): appends made before a barrier's wait are all
    seen after it, by every party."""
    for i in range(passes):
        results[0].append(True)
        assert len(results[1]) == i * parties
        barrier.wait()
        results[1].append(True)
        assert len(results[0]) == (i + 1) * parties
        barrier.wait()


def borrow(lock: Any) -> None:
    """Take ``lock`` twice in a row (the second grant lends it to this process: ``_loans``)."""
    for _ in range(2):
        lock.acquire()
        lock.release()


def borrow_hold_and_die(lock: Any, rounds: int, ready: Any) -> None:
    """Borrow ``lock``, take it ``rounds`` times (an RLock: reentrantly), say so, then wait to
    be killed holding it."""
    borrow(lock)
    for _ in range(rounds):
        lock.acquire()
    ready.set()
    time.sleep(60)  # killed by the test


def borrow_then_report(lock: Any, out: Any) -> None:
    """Borrow ``lock`` and report how its loan went: a hundred rounds here, then whether a
    non-blocking acquire finds it free."""
    borrow(lock)
    for _ in range(100):
        lock.acquire()
        lock.release()
    out.put(lock.acquire(False))
    lock.release()


def threaded_locked_increments(value: Any, lock: Any, threads: int, n: int) -> None:
    """``locked_increments`` from ``threads`` threads of this process at once."""
    import threading

    workers = [
        threading.Thread(target=locked_increments, args=(value, lock, n)) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def borrow_without_loans(lock: Any, out: Any) -> None:
    """Take ``lock`` again and again with ``$PROCSHARE_LOANS=off``: report whether it ever
    came as a loan."""
    os.environ["PROCSHARE_LOANS"] = "off"
    for _ in range(10):
        lock.acquire()
        lock.release()
    channel = lock._channel()
    out.put(channel.loans is not None and channel.loans.lent(lock._id))


def say_then_acquire(lock: Any, out: Any) -> None:
    """Say "waiting", take ``lock``, say "acquired", and free it."""
    out.put("waiting")
    lock.acquire()
    out.put("acquired")
    lock.release()


def take_on_cue(lock: Any, cue: Any, out: Any, leave: Any) -> None:
    """Once ``cue`` is set, take ``lock``; say so; free it once ``leave`` is set."""
    cue.wait(60)
    got = lock.acquire(timeout=60)
    out.put(got)
    leave.wait(60)
    if got:
        lock.release()


def read_then_tell(obj: Any, conn: Any) -> None:
    """Send ``obj``'s value (a Value's) through ``conn``."""
    conn.send(obj.value)


def put_then_kill_myself(q: Any, count: int) -> None:
    """Put ``count`` items (posted, past the first few) and die at once."""
    for i in range(count):
        q.put(i)
    os.kill(os.getpid(), signal.SIGKILL)


def delete_item(d: Any, key: Any) -> None:
    del d[key]


def read_keys(d: Any, keys: list[Any], out: Any) -> None:
    """``d[k]`` for each of ``keys``, in a child (a scan inherited through fork is not used
    there: it belongs to the parent's connection)."""
    out.put({k: d[k] for k in keys})


def post_sets(d: Any, keys: list[Any], started: Any, stop: Any) -> None:
    """Set ``keys`` again and again (posted sets: this process becomes a poster of ``d``)
    until ``stop`` is set."""
    n = 0
    while not stop.is_set():
        for k in keys:
            d[k] = n
        n += 1
        if n == 3:
            started.set()


def wait_event_rounds(event: Any, rounds: int, pace: Any) -> None:
    """Wait for ``event`` ``rounds`` times, clearing it each time; say so on ``pace`` before
    each wait (its setter waits for that); stay connected until told to go."""
    for _ in range(rounds):
        pace.send("waiting")
        event.wait(30)
        event.clear()
    pace.send("done")
    pace.poll(30)


def append_slowly(lst: Any, values: list[Any], first: float, between: float) -> None:
    """Append ``values`` to ``lst``, after ``first`` seconds, ``between`` seconds apart."""
    time.sleep(first)
    for v in values:
        lst.append(v)
        time.sleep(between)


def set_items_slowly(d: Any, key: Any, count: int, between: float) -> None:
    for i in range(count):
        d[key] = i
        time.sleep(between)


def read_times_then_tell(obj: Any, times: int, conn: Any) -> None:
    """Read ``obj.value`` (a Value's) ``times`` times; send the last."""
    value = None
    for _ in range(times):
        value = obj.value
    conn.send(value)


def warm_locked(value: Any, lock: Any, n: int) -> None:
    """``with lock: value.value += 1``, ``n`` times (its sets then posted, bound to ``lock``)."""
    for _ in range(n):
        with lock:
            value.value += 1


def write_unlocked_on_cue(value: Any, lock: Any, warm: int, conn: Any) -> None:
    """Post sets bound to ``lock`` (``warm_locked``); when told, set -1 without the lock and
    say so at once."""
    warm_locked(value, lock, warm)
    conn.send("ready")
    conn.recv()
    value.value = -1
    conn.send("written")
    conn.recv()


def post_under_lock_on_cue(value: Any, lock: Any, warm: int, conn: Any) -> None:
    """Post sets bound to ``lock`` (``warm_locked``); when told, take the lock, post 100 and
    say so at once, holding it until told again."""
    warm_locked(value, lock, warm)
    conn.send("ready")
    conn.recv()
    with lock:
        value.value = 100
        conn.send("posted")
        conn.recv()


def read_locked_on_cue(value: Any, lock: Any, warm: int, conn: Any) -> None:
    """Read ``value`` under ``lock`` ``warm`` times (its grants then bring the read); when
    told, once more: send what it read."""
    for _ in range(warm):
        with lock:
            _ = value.value
    conn.send("ready")
    conn.recv()
    with lock:
        conn.send(value.value)
    conn.recv()


def locked_bursts(value: Any, lock: Any, bursts: int, n: int, seed: int) -> None:
    """``bursts`` bursts of ``n`` locked increments, with pauses between them (a lock lent to
    whoever runs alone, and taken back when the others come)."""
    import random

    pick = random.Random(seed)
    for _ in range(bursts):
        for _ in range(n):
            with lock:
                value.value += 1
        time.sleep(pick.random() * 0.005)


def append_then_stay(lst: Any, n: int, conn: Any) -> None:
    """Append 0..n-1 (the last ones posted), say so, and stay, sending nothing more, until
    told to go (what it posted reaches the server with no request of its own after it)."""
    for i in range(n):
        lst.append(i)
    conn.send("appended")
    conn.recv()


def append_in_turn(lst: Any, mine: range, take: Any, give: Any, done: Any) -> None:
    """Append each number of ``mine`` once given the turn through ``take``, then give it on
    through ``give`` (two such processes append in one order that only their turns decide);
    say so through ``done`` at the end."""
    for i in mine:
        take.recv()
        lst.append(i)
        give.send(i)
    done.send("done")


def send_item(d: Any, key: Any, conn: Any) -> None:
    """Read ``d[key]`` and send it back."""
    conn.send(d[key])
