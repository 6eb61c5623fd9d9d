"""The Redis backend: the same API, across real processes, against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
import procshare.aio
from procshare._redis._channel import get_redis_channel

FORK = multiprocessing.get_context("fork")
SPAWN = multiprocessing.get_context("spawn")
CONTEXTS = [pytest.param(FORK, id="fork"), pytest.param(SPAWN, id="spawn")]


def _apply_everything(m: Any) -> list[Any]:
    """The same calls on any manager; what they returned or raised, in order."""
    out: list[Any] = []

    def rec(fn: Any) -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(("raised", type(exc).__name__))

    d = m.dict({"a": 1}, b=2)
    rec(lambda: d.setdefault("c", []))
    rec(lambda: d.update(x=9))
    rec(lambda: d.pop("b"))
    rec(lambda: d.pop("nope"))
    rec(lambda: d["missing"])
    rec(lambda: sorted(d.items()))
    rec(lambda: d.get("a", 5))
    rec(lambda: len(d))
    rec(lambda: "x" in d)
    rec(lambda: sorted(iter(d)))
    rec(lambda: d.copy() == {"a": 1, "c": [], "x": 9})
    rec(lambda: d.popitem())
    lst = m.list([3, 1, 2])
    rec(lambda: lst.append(4))
    rec(lambda: lst.extend([0, 0]))
    rec(lambda: lst.remove(0))
    rec(lambda: lst.remove(42))
    rec(lambda: lst.sort())
    rec(lambda: lst[:])
    rec(lambda: lst.index(3))
    rec(lambda: lst.pop())
    rec(lambda: lst.count(0))
    rec(lambda: lst[10])
    rec(lambda: (lst.__setitem__(0, "z"), lst[0]))
    rec(lambda: (lst.__delitem__(0), len(lst)))
    ns = m.Namespace(x=1)
    rec(lambda: (setattr(ns, "y", [1]), ns.y))
    rec(lambda: ns.x)
    rec(lambda: (delattr(ns, "x"), hasattr(ns, "x")))
    rec(lambda: ns.missing)
    v = m.Value("i", 7)
    rec(lambda: v.value)
    rec(lambda: (setattr(v, "value", v.value + 1), v.value))
    rec(lambda: v.increment(5))
    rec(lambda: v.compare_and_set(13, 1))
    rec(lambda: v.swap(3))
    rec(lambda: v.get())
    a = m.Array("d", [1.5, 2.5])
    rec(lambda: (a.__setitem__(1, 9.0), list(a[:])))
    rec(lambda: len(a))
    rec(lambda: a[5])
    s = m.Semaphore(2)
    rec(lambda: (s.acquire(), s.acquire(), s.acquire(False), s.get_value()))
    rec(lambda: (s.release(), s.get_value()))
    bs = m.BoundedSemaphore(1)
    rec(lambda: bs.release())
    lk = m.Lock()
    rec(lambda: lk.release())
    rec(lambda: (lk.acquire(), lk.locked(), lk.acquire(timeout=0.05)))
    rec(lambda: lk.acquire(False, 1))
    rec(lambda: (lk.release(), lk.locked()))
    rl = m.RLock()
    rec(lambda: rl.release())
    rec(lambda: (rl.acquire(), rl.acquire(), rl.release(), rl.release()))
    ev = m.Event()
    rec(lambda: (ev.is_set(), ev.wait(0.05), ev.set(), ev.wait(0), ev.clear(), ev.is_set()))
    q = m.Queue(2)
    rec(lambda: (q.put(1), q.put_nowait("two"), q.full(), q.qsize()))
    rec(lambda: q.put(3, timeout=0.05))
    rec(lambda: (q.get(), q.get_nowait(), q.empty()))
    rec(lambda: q.get(timeout=0.05))
    rec(lambda: q.get_nowait())
    jq = m.JoinableQueue()
    rec(lambda: (jq.put(1), jq.get(), jq.task_done(), jq.join()))
    rec(lambda: jq.task_done())
    c = m.Condition()
    rec(lambda: c.notify())
    rec(lambda: c.wait(0.01))

    def cond() -> Any:
        with c:
            return c.wait(0.05), c.notify_all()

    rec(cond)
    b = m.Barrier(1)
    rec(lambda: (b.wait(), b.parties, b.n_waiting, b.broken))
    rec(lambda: (b.abort(), b.broken))
    rec(lambda: b.wait())
    rec(lambda: (b.reset(), b.broken, b.wait()))
    return out


def test_every_type_answers_as_on_procshares_own_server(rm: Any) -> None:
    with procshare.Manager(ctx=FORK) as local:
        expected = _apply_everything(local)
    assert _apply_everything(rm) == expected


def _count(v: Any, lock: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            v.value += 1


def _append_many(lst: Any, tag: int, n: int) -> None:
    for i in range(n):
        lst.append((tag, i))


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_processes_share_objects_and_locks_exclude(rm: Any, ctx: Any) -> None:
    v, lock, lst = rm.Value("i", 0), rm.Lock(), rm.list()
    procs = [ctx.Process(target=_count, args=(v, lock, 100)) for _ in range(4)]
    procs += [ctx.Process(target=_append_many, args=(lst, t, 50)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert v.value == 400  # (read-modify-write under the lock: nothing lost)
    assert sorted(lst[:]) == sorted((t, i) for t in range(3) for i in range(50))


def _hold_and_stay(lock: Any, rlock: Any, sem: Any, ready: Any) -> None:
    lock.acquire()
    rlock.acquire()
    rlock.acquire()
    sem.acquire()
    sem.acquire()
    ready.set()
    time.sleep(600)


def test_what_a_killed_process_held_is_freed_within_the_ttl(rm: Any) -> None:
    lock, rlock, sem, ready = rm.Lock(), rm.RLock(), rm.Semaphore(2), FORK.Event()
    p = FORK.Process(target=_hold_and_stay, args=(lock, rlock, sem, ready))
    p.start()
    try:
        assert ready.wait(30)
        assert not lock.acquire(False) and not rlock.acquire(False)
        assert not sem.acquire(False)
        time.sleep(1.5)  # alive past its ttl: its heartbeat keeps what it holds
        assert not lock.acquire(False) and not sem.acquire(False)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert lock.acquire(timeout=5)  # (ttl 1 s)
        assert rlock.acquire(timeout=5)
        assert sem.acquire(timeout=5) and sem.acquire(timeout=5)
    finally:
        if p.is_alive():
            p.kill()
            p.join(10)


def _hold_then_release(lock: Any, ready: Any, resumed: Any, out: Any) -> None:
    lock.acquire()
    ready.set()
    resumed.wait(60)
    try:
        lock.release()
        out.put("released")
    except procshare.LockLostError as exc:
        out.put(("lost", str(exc)))


def test_a_holder_paused_past_its_ttl_finds_its_lock_lost(rm: Any) -> None:
    lock = rm.Lock()
    ready, resumed, out = FORK.Event(), FORK.Event(), FORK.SimpleQueue()
    p = FORK.Process(target=_hold_then_release, args=(lock, ready, resumed, out))
    p.start()
    try:
        assert ready.wait(30)
        os.kill(p.pid, signal.SIGSTOP)
        assert lock.acquire(timeout=10)  # its session expired: the lock is taken back
        os.kill(p.pid, signal.SIGCONT)
        resumed.set()
        answer = out.get()
        assert answer[0] == "lost" and "expired" in answer[1]
        assert lock.locked() and not lock.acquire(False)  # still ours
        lock.release()
    finally:
        os.kill(p.pid, signal.SIGCONT)
        p.join(30)


def _produce(q: Any, tag: int, n: int) -> None:
    for i in range(n):
        q.put((tag, i))


def _consume(q: Any, out: Any) -> None:
    got = []
    while (item := q.get()) is not None:
        got.append(item)
    out.put(got)


@pytest.mark.parametrize(
    ("ctx", "per_producer"), [(FORK, 25_000), (SPAWN, 500)], ids=["fork", "spawn"]
)
def test_queue_items_are_never_lost_nor_given_twice(rm: Any, ctx: Any, per_producer: int) -> None:
    """4 producers and 4 consumers on a bounded queue (100,000 items under fork): none lost,
    none twice, each producer's items in its order."""
    q, out = rm.Queue(50), ctx.SimpleQueue()
    producers = [ctx.Process(target=_produce, args=(q, t, per_producer)) for t in range(4)]
    consumers = [ctx.Process(target=_consume, args=(q, out)) for _ in range(4)]
    for p in producers + consumers:
        p.start()
    for p in producers:
        p.join(600)
        assert p.exitcode == 0
    for _ in consumers:
        q.put(None)
    got = [out.get() for _ in consumers]
    for p in consumers:
        p.join(60)
    items = [item for part in got for item in part]
    assert len(items) == 4 * per_producer
    assert set(items) == {(t, i) for t in range(4) for i in range(per_producer)}
    for part in got:  # each producer's items in its order
        for t in range(4):
            mine = [i for tag, i in part if tag == t]
            assert mine == sorted(mine)


def _take_and_die(q: Any, took: Any) -> None:
    # The item is taken; the process dies before it tells Redis it has it (its "arrived"
    # never goes out, as if killed a moment later): the item must go back to the queue.
    channel = q._channel()

    def never(*args: Any) -> None:
        took.set()
        time.sleep(600)

    channel._delivered = never
    q.get()


def test_an_item_taken_by_a_process_killed_before_it_had_it_goes_back(rm: Any) -> None:
    q, took = rm.Queue(), FORK.Event()
    q.put("precious")
    p = FORK.Process(target=_take_and_die, args=(q, took))
    p.start()
    assert took.wait(30)
    assert q.qsize() == 0
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert q.get(timeout=10) == "precious"  # (given back once its session was reaped)


def test_timeouts_raise_on_time_and_a_full_queue_never_drops(rm: Any) -> None:
    q = rm.Queue(1)
    q.put("a")
    with pytest.raises(queue.Full):
        q.put("b", timeout=0.2)
    with pytest.raises(queue.Full):
        q.put_nowait("b")
    assert q.get() == "a"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert q.qsize() == 0


def _wait_for(cond: Any, flag: Any, out: Any) -> None:
    with cond:
        while not flag.value:
            cond.wait(10)
    out.put("woken")


def _barrier_rounds(b: Any, rounds: int, out: Any) -> None:
    out.put([b.wait(30) for _ in range(rounds)])


class _Record:
    """A picklable barrier action: counts the trips in a shared Value."""

    def __init__(self, trips: Any) -> None:
        self.trips = trips

    def __call__(self) -> None:
        self.trips.value += 1


def test_conditions_events_and_barriers_across_processes(rm: Any) -> None:
    cond, flag, out = rm.Condition(), rm.Value("b", 0), FORK.SimpleQueue()
    waiters = [FORK.Process(target=_wait_for, args=(cond, flag, out)) for _ in range(3)]
    for p in waiters:
        p.start()
    time.sleep(0.3)
    with cond:
        flag.value = 1
        cond.notify_all()
    assert [out.get() for _ in waiters] == ["woken"] * 3
    trips = rm.Value("i", 0)
    barrier = rm.Barrier(8, action=_Record(trips))
    procs = [FORK.Process(target=_barrier_rounds, args=(barrier, 50, out)) for _ in range(8)]
    for p in procs:
        p.start()
    indexes = [out.get() for _ in procs]
    for generation in zip(*indexes, strict=True):
        assert sorted(generation) == list(range(8))  # (each gave out the indexes 0..7)
    for p in procs + waiters:
        p.join(60)
    assert trips.value == 50  # the action ran once per generation
    assert not barrier.broken and barrier.n_waiting == 0
    shown = {o["id"]: o for o in rm.stats()["objects"]}  # (its pickled action is not text)
    assert shown[barrier._token.id]["typeid"] == "Barrier"


def _named_worker(url: str, out: Any) -> None:
    m = procshare.connect(url)
    m.named("tally").dict()["child"] = os.getpid()
    out.put(sorted(m.names()))
    m.shutdown()


def test_named_objects_and_namespaces(redis_server: str, raw: Any) -> None:
    url = f"{redis_server}?namespace=shared-test&session_ttl=1"
    m = procshare.connect(url)
    try:
        tally = m.named("tally").dict()
        tally["parent"] = 1
        out = SPAWN.SimpleQueue()
        p = SPAWN.Process(target=_named_worker, args=(url, out))
        p.start()
        assert out.get() == ["tally"]
        p.join(60)
        assert set(tally.keys()) == {"parent", "child"}
        with pytest.raises(procshare.NameTakenError):
            m.named("tally").list()
        m.delete("tally")
        assert m.names() == {}
        with pytest.raises(KeyError):
            m.delete("tally")
    finally:
        m.shutdown()
    assert raw.exists("ps:{shared-test}:instance")  # joined, not owned: kept


def test_a_managers_own_namespace_is_gone_after_shutdown(redis_url: str, raw: Any) -> None:
    m = procshare.SyncManager(address=redis_url)
    m.start()
    d = m.dict(a=1)
    q = m.Queue()
    q.put(1)
    prefix = get_redis_channel(m.address, b"", "pickle")._prefix  # type: ignore[arg-type]
    assert raw.keys(prefix.replace("{", "\\{") + "*")
    m.shutdown()
    assert raw.keys(prefix.replace("{", "\\{") + "*") == []
    del d, q


def test_an_object_nobody_refers_to_is_freed(rm: Any) -> None:
    d = rm.dict(a=1)
    obj = d._id
    channel = d._channel()
    del d
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        channel._flush_refs()
        channel.janitor()
        if not channel._client.hexists(channel._prefix + "types", obj):
            break
        time.sleep(0.05)
    assert not channel._client.hexists(channel._prefix + "types", obj)


def test_a_change_sent_twice_is_applied_once(rm: Any) -> None:
    """What redis-py does after a dropped connection: the same script, the same request id."""
    lst = rm.list()
    channel = lst._channel()
    script = channel._scripts["create"]
    args = (channel._prefix, "test:1", "dict", channel.session, "", 0, 0)
    first = script(keys=(), args=args)
    again = script(keys=(), args=args)
    assert first == again  # (the latch answered: no second object)
    put = channel._scripts["put"]
    q = rm.Queue()
    qargs = (channel._prefix, "test:2", q._id, channel.session, "", "0", b"item")
    put(keys=(), args=qargs)
    put(keys=(), args=qargs)
    assert q.qsize() == 1
    # The answers are kept in a ring per channel, not a key per request: a process that makes
    # many changes keeps a bounded number of them.
    d = rm.dict()
    for i in range(3000):
        d[i] = i
    ring = f"{channel._prefix}ql:{channel._rid_prefix[:-1]}"
    assert 0 < channel._client.hlen(ring) <= 1024
    assert not list(channel._client.scan_iter(match=channel._prefix.replace("{", "\\{") + "q:*"))


def test_what_redis_cannot_do_is_refused_clearly(rm: Any) -> None:
    class Custom:
        def hello(self) -> str:
            return "hi"

    class MyManager(procshare.managers.SyncManager):
        pass

    MyManager.register("Custom", Custom)
    mm = MyManager(address=rm.address)
    mm.connect()
    with pytest.raises(procshare.ProcshareError, match="server to run in"):
        mm.Custom()
    d = rm.dict()

    async def from_asyncio() -> None:
        async with await procshare.aio.connect(rm.address) as client:
            await client.create("Custom")

    with pytest.raises(procshare.ProcshareError, match="server to run in"):
        asyncio.run(from_asyncio())
    lock = rm.Lock()
    with rm.pipeline() as p:
        p(d)["k"] = 1
        refused = p(lock).acquire(False)
    assert d["k"] == 1
    with pytest.raises(procshare.UnsupportedError, match="pipeline on Redis"):
        refused.value


def test_the_environment_sends_an_unchanged_script_to_redis(redis_url: str) -> None:
    import subprocess
    import sys

    code = (
        "import procshare\n"
        "m = procshare.Manager()\n"
        "d = m.dict(x=1)\n"
        "print(m.address.split('://')[0], d['x'], m.stats()['backend'])\n"
        "m.shutdown()\n"
    )
    env = {**os.environ, "PROCSHARE_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redis", "1", "redis"]


def test_threads_of_one_process_take_turns(rm: Any) -> None:
    lock, v = rm.Lock(), rm.Value("i", 0)

    def work() -> None:
        _count(v, lock, 50)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert v.value == 200


def _reap(channel: Any, rounds: float = 1.0) -> None:
    """Be the janitor for a while (past the release delay of 0.2 s)."""
    deadline = time.monotonic() + rounds
    while time.monotonic() < deadline:
        channel._flush_refs()
        channel.janitor()
        time.sleep(0.05)


def test_a_container_keeps_the_objects_in_its_value_alive(rm: Any) -> None:
    d = rm.dict()
    channel = d._channel()
    inner = rm.list([1, 2])
    inner_id = inner._id
    d["sub"] = inner
    held = rm.dict(nested={"deep": [rm.Value("i", 5)]})  # (made holding one, deep inside)
    del inner
    _reap(channel)
    assert d["sub"][:] == [1, 2]
    assert held["nested"]["deep"][0].value == 5
    del d["sub"]  # no longer in any value, and no proxy left: freed
    _reap(channel)
    assert not channel._client.hexists(channel._prefix + "types", inner_id)


def test_each_acquire_records_a_growing_fencing_token(rm: Any) -> None:
    lock = rm.Lock()
    tokens = []
    for _ in range(3):
        with lock:
            tokens.append(lock.fencing_token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3 and None not in tokens
    with procshare.Manager(ctx=FORK) as local:
        plain = local.Lock()
        with plain:
            assert plain.fencing_token is None


@contextlib.contextmanager
def _connections_killed(raw: Any, every: float) -> Iterator[list[int]]:
    """``CLIENT KILL`` of every other client, again every ``every`` seconds, while the block
    runs; yields ``[how many were cut]``."""
    stop = threading.Event()
    kills = [0]

    def killer() -> None:
        while not stop.is_set():
            kills[0] += int(raw.client_kill_filter(_type="normal", skipme=True) or 0)
            time.sleep(every)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        yield kills
    finally:
        stop.set()
        thread.join(10)


def test_connections_killed_under_the_calls_lose_and_repeat_nothing(rm: Any, raw: Any) -> None:
    """``CLIENT KILL`` again and again while one process appends and puts: redis-py sends the
    calls again on a new connection, and each is applied once."""
    lst, q = rm.list(), rm.Queue()
    with _connections_killed(raw, every=0.002) as kills:
        for i in range(300):
            lst.append(i)
            q.put(i)
        got = [q.get(timeout=30) for _ in range(300)]
    assert kills[0] > 3  # (it did cut them)
    assert lst[:] == list(range(300))
    assert got == list(range(300)) and q.qsize() == 0


def test_a_blocked_get_outlives_a_killed_connection(rm: Any, raw: Any) -> None:
    q = rm.Queue()
    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(q.get(timeout=30)))
    reader.start()
    time.sleep(0.3)
    raw.client_kill_filter(_type="normal", skipme=True)  # (its BLPOP's connection too)
    time.sleep(0.3)
    q.put("after")
    reader.join(30)
    assert out == ["after"]


def test_the_bench_compares_with_redis_py_in_the_same_run(redis_server: str) -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "procshare", "bench", "--url", redis_server, "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = json.loads(out.stdout)
    names = [row["operation"] for row in rows]
    assert names[0] == "dict set (HSET)" and "Queue put+get (RPUSH + BLPOP)" in names
    assert "a change seen by a watcher (XADD+XREAD)" in names
    assert "pipeline of 100 mixed, per call (MULTI)" in names
    for row in rows:
        assert row["procshare_us"] > 0 and row["redis_py_us"] > 0
        assert row["stdlib_us"] is None or row["stdlib_us"] > 0  # (None: it has no watch)
        assert row["ratio"] == pytest.approx(row["procshare_us"] / row["redis_py_us"])
    refused = subprocess.run(
        [sys.executable, "-m", "procshare", "bench", "--url", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "redis://" in refused.stderr


def test_a_redis_that_refuses_client_commands_still_gets_every_ack(
    redis_server: str, raw: Any
) -> None:
    """Deliveries are acknowledged in the same write as the next command, without an answer
    (``CLIENT REPLY SKIP``) where Redis allows it; for a user without ``CLIENT``, answered."""
    raw.acl_setuser(
        "noclient",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@all", "-client"],
    )
    host = redis_server.split("//", 1)[1]
    for url in (redis_server, f"redis://noclient:secret@{host}"):
        m = procshare.SyncManager(address=url + "?session_ttl=1")
        m.start()
        try:
            q = m.Queue()
            for i in range(20):
                q.put(i)
                assert q.get() == i
            channel = q._channel()
            assert channel._skip_replies is (url == redis_server)
            key = f"{channel._prefix}f:{channel.session}"
            assert raw.hlen(key) == 1  # (the last one's ack goes with the next command)
            assert q.qsize() == 0
            assert raw.hlen(key) == 0  # (nothing left on its way: every item acknowledged)
            assert channel._client.ping()  # (and no answer was left unread on a connection)
        finally:
            m.shutdown()
    raw.acl_deluser("noclient")


def test_acks_sent_without_an_answer_are_confirmed_by_the_heartbeat(rm: Any, raw: Any) -> None:
    q = rm.Queue()
    channel = q._channel()
    q.put("x")
    real = channel._delivered
    lost: list[bytes] = []

    def lose(field: bytes) -> None:  # (as if the connection dropped the ack on its way)
        lost.append(field)
        with channel._unconfirmed_lock:
            channel._unconfirmed.append(field)

    channel._delivered = lose
    try:
        assert q.get() == "x"
    finally:
        channel._delivered = real
    key = f"{channel._prefix}f:{channel.session}"
    assert raw.hexists(key, lost[0])
    deadline = time.monotonic() + 10
    while raw.hexists(key, lost[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not raw.hexists(key, lost[0]) and q.qsize() == 0


def test_scripts_flushed_from_redis_are_loaded_again(rm: Any, raw: Any) -> None:
    d, q, lock = rm.dict(), rm.Queue(), rm.Lock()
    raw.script_flush()  # (as a restarted Redis without persistence, or SCRIPT FLUSH)
    d["a"] = 1
    q.put("x")
    with lock:
        assert d["a"] == 1 and q.get() == "x"


def _read_sizes(d: Any, stop: Any, out: Any) -> None:
    seen = set()
    while not stop.is_set():
        seen.add(len(d))
        seen.add(len(d.copy()))
    out.put(sorted(seen))


def test_a_pipeline_is_seen_all_or_nothing(rm: Any) -> None:
    """A pipeline of 100 writes to a dict: a reader in another process sees none or all."""
    d = rm.dict()
    stop, out = FORK.Event(), FORK.SimpleQueue()
    reader = FORK.Process(target=_read_sizes, args=(d, stop, out))
    reader.start()
    for round_ in range(10):
        with d.pipeline() as pd:
            for i in range(100):
                pd[(round_, i)] = i
        with rm.pipeline() as p:
            for i in range(100):
                p(d).pop((round_, i))
    stop.set()
    sizes = out.get()
    reader.join(30)
    assert set(sizes) <= {0, 100} and 0 in sizes


def test_pipelines_from_processes_racing_on_one_dict_lose_nothing(rm: Any) -> None:
    """Four processes pipeline into one dict at once: each pipeline is computed again
    whenever another changed the dict meanwhile, and none is lost or applied twice."""
    d = rm.dict()
    procs = [FORK.Process(target=_pipelined_increments, args=(d, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert d["n"] == 4 * 50 * 3
    assert sorted(k for k in d if k != "n") == [(w, r) for w in range(4) for r in range(50)]


def _pipelined_increments(d: Any, worker: int, rounds: int) -> None:
    for r in range(rounds):
        with d.pipeline() as pd:
            for _ in range(3):
                pd.increment("n")
            pd[(worker, r)] = r


def test_a_pipeline_returns_results_in_order_with_errors_per_call(rm: Any) -> None:
    d, lst, ns = rm.dict(), rm.list(), rm.Namespace(x=1)
    with rm.pipeline() as p:
        for i in range(5):
            p(d)[i] = i * i
        size = p(d).len()
        missing = p(d).getitem("nope")
        appended = p(lst).append("x")
        removed = p(lst).remove("absent")
        last = p(lst).pop()
        bumped = p(d).increment(0, 7)
    assert size.value == 5 and appended.value is None and last.value == "x"
    assert bumped.value == 7
    with pytest.raises(KeyError):
        missing.value
    with pytest.raises(ValueError):
        removed.value
    assert dict(d) == {0: 7, 1: 1, 2: 4, 3: 9, 4: 16} and lst[:] == [] and ns.x == 1


def _rapid_changes(d: Any, n: int) -> None:
    for i in range(n):
        d["k"] = i


def test_ten_thousand_rapid_changes_reach_a_watcher_in_order(rm: Any) -> None:
    d = rm.dict()
    n = 10_000
    with d.watch(timeout=30, maxsize=n + 10) as changes:
        start = changes.version
        writer = FORK.Process(target=_rapid_changes, args=(d, n))
        writer.start()
        got = []
        for change in changes:
            got.append(change)
            if len(got) == n:
                break
        writer.join(60)
    assert [c.args for c in got] == [("k", i) for i in range(n)]
    assert [c.version for c in got] == list(range(start + 1, start + n + 1))


def test_a_watcher_whose_connection_is_killed_resumes_with_no_gap(rm: Any, raw: Any) -> None:
    d = rm.dict()
    with d.watch(timeout=10) as changes:
        start = changes.version
        for i in range(300):
            d[i] = i
            if i % 50 == 25:
                raw.client_kill_filter(_type="normal", skipme=True)
        got = [changes.get(timeout=10) for _ in range(300)]
    assert [c.op for c in got] == ["__setitem__"] * 300
    assert [c.version for c in got] == list(range(start + 1, start + 301))


def test_changes_trimmed_before_a_watcher_read_them_are_an_overflow(rm: Any, raw: Any) -> None:
    from procshare._redis._watch import redis_hub_for

    d = rm.dict()
    hub = redis_hub_for(d._token.address, bytes(d._authkey), d._serializer)
    held, release = threading.Event(), threading.Event()
    deliver = hub._deliver

    def stalled(*args: Any) -> None:  # (a watcher that falls behind)
        held.set()
        release.wait(30)
        deliver(*args)

    with d.watch(timeout=2) as changes:
        hub._deliver = stalled  # type: ignore[method-assign]
        d["first"] = 0
        assert held.wait(30)
        for i in range(100):
            d[i] = i
        key = f"{d._channel()._prefix}{d._id}:x"
        raw.xtrim(key, maxlen=10)  # (as MAXLEN does once a watcher is ~10,000 behind)
        hub._deliver = deliver  # type: ignore[method-assign]
        release.set()
        got = list(changes)
    ops = [c.op for c in got]
    assert ops[0] == "__setitem__" and ops.count("overflow") == 1
    at = ops.index("overflow")
    overflow, after = got[at], got[at + 1 :]
    # (what the reader had fetched before it stalled still comes; the rest, trimmed, is told)
    assert len(got) - 1 + overflow.missed == 101
    assert after and after[0].version == overflow.version + 1
    assert [c.args[0] for c in after] == list(range(100 - len(after), 100))
    versions = [c.version for c in got if c.op != "overflow"]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_the_demo_and_the_watch_example_run_on_redis(redis_server: str, raw: Any) -> None:
    """``procshare demo --url`` runs the seed's scenarios with the objects in Redis, and the
    watch version of the seed's data pool, unchanged, prints what it prints on procshare's
    server (``$PROCSHARE_URL``); both leave no key behind."""
    import pathlib
    import subprocess
    import sys

    demo = subprocess.run(
        [sys.executable, "-m", "procshare", "demo", "--url", redis_server],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert "C was told of 16 appends as they happened, and read the list 0 times" in demo.stdout
    assert "skipped on Redis" in demo.stdout
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "data_pool_watch.py"
    out = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PROCSHARE_URL": redis_server},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    got = [int(line.split()[-1]) for line in lines if line.startswith("C got")]
    numbers = [*range(100, 105), *range(300, 309)]
    assert sorted(got) == numbers
    assert [n for n in got if n < 300] == list(range(100, 105))
    assert [n for n in got if n >= 300] == list(range(300, 309))
    assert lines[-1] == str(numbers)
    assert not [k for k in raw.scan_iter(match="ps:{m*")]  # (the managers' namespaces: gone)


def _set_many(d: Any, n: int) -> None:
    for i in range(1, n + 1):
        d["k"] = i


def test_a_cached_read_asks_redis_nothing_and_never_goes_back(rm: Any) -> None:
    """A cached proxy answers from its replica (no command to Redis); another process's
    writes show in it in order, never an older value after a newer one."""
    d = rm.dict(k=0).cache()
    channel = d._channel()
    sent = []
    real = channel._client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return real(*args, **kwargs)

    channel._client.execute_command = counting
    try:
        for _ in range(100):
            assert d["k"] == 0 and len(d) == 1 and "k" in d
    finally:
        channel._client.execute_command = real
    assert sent == [] and d.cached
    writer = FORK.Process(target=_set_many, args=(d, 500))
    writer.start()
    seen = [d["k"]]
    deadline = time.monotonic() + 30
    while seen[-1] != 500 and time.monotonic() < deadline:
        seen.append(d["k"])
    writer.join(30)
    assert seen[-1] == 500 and seen == sorted(seen)  # (the last write shows; never back)
    d["k"] = "mine"
    assert d["k"] == "mine"  # (its own write, at once)


def test_a_replica_follows_through_a_killed_connection_and_is_dropped_by_flushall(
    rm: Any, raw: Any
) -> None:
    d = rm.dict(k=0).cache()
    writer = FORK.Process(target=_set_many, args=(d, 200))
    writer.start()
    for _ in range(5):
        raw.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.01)
    writer.join(30)
    deadline = time.monotonic() + 10
    while d["k"] != 200 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert d["k"] == 200  # (it resumed where it was: nothing lost on the way)
    raw.flushall()
    deadline = time.monotonic() + 10
    while d._replica is not None and d._replica.valid and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(procshare.ObjectNotFound):
        d["k"]  # (the replica was dropped: the read went to Redis, where nothing is left)


def test_pipelines_under_killed_connections_are_applied_once(rm: Any, raw: Any) -> None:
    """``CLIENT KILL`` again and again under pipelines: each is sent again on a new
    connection until it is applied, and none is applied twice (its request id tells)."""
    lst, d = rm.list(), rm.dict()
    # (every 10 ms: a pipeline's try takes a few ms on a busy machine, and one killed ten times
    # in a row is given up as lost, which every 3 ms did now and then)
    with _connections_killed(raw, every=0.01) as kills:
        for i in range(100):
            with rm.pipeline() as p:
                p(lst).append(i)
                p(d).increment("n")
    assert kills[0] > 3
    assert lst[:] == list(range(100)) and d["n"] == 100


def _change_and_die(url: str, ready: Any, die: bool) -> None:
    m = procshare.connect(url)
    d = m.named("shared").dict()
    for i in range(50):
        d[i] = i
    ready.set()
    if die:
        time.sleep(600)  # (killed by the test)


def test_a_processes_kept_answers_go_with_its_session(redis_server: str, raw: Any) -> None:
    """The ring of answers kept for repeated sends is deleted when its process exits, and
    when it dies (by the janitor): a shared namespace does not fill with them."""
    url = f"{redis_server}?namespace=rings&session_ttl=1"
    m = procshare.connect(url)
    d = m.named("shared").dict()
    d["k"] = 1
    prefix = d._channel()._prefix

    def rings() -> list[Any]:
        return list(raw.scan_iter(match=prefix.replace("{", "\\{") + "ql:*"))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(rings()) != count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(rings()) == count

    ready = FORK.Event()
    dying = FORK.Process(target=_change_and_die, args=(url, ready, True))
    dying.start()
    assert ready.wait(30)
    wait_for(2)  # (this process's and the child's)
    os.kill(dying.pid, signal.SIGKILL)
    dying.join(10)
    wait_for(1)  # (the dead one's reaped)
    ready.clear()
    leaving = FORK.Process(target=_change_and_die, args=(url, ready, False))
    leaving.start()
    leaving.join(30)
    assert leaving.exitcode == 0 and ready.is_set()
    wait_for(1)  # (one that exits takes its own along)
    m.delete("shared")


def test_a_threads_connection_ends_with_its_thread(rm: Any, raw: Any) -> None:
    """Each thread sends its scripts on a connection of its own (no pool round per call):
    threads that come and go leave no connection behind (each is closed as its thread ends,
    not left to the garbage collector with its socket open)."""
    d = rm.dict()
    d["warm"] = 1  # (this thread's connection, made before counting)

    def clients() -> int:
        return len(raw.client_list(_type="normal"))

    before = clients()
    for i in range(30):
        thread = threading.Thread(target=d.__setitem__, args=(i, i))
        thread.start()
        thread.join(10)
    gc.collect()
    deadline = time.monotonic() + 10
    while clients() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert clients() <= before + 2  # (not one per thread that ran: 30)
    assert len(d) == 31


def test_inspect_and_top_show_a_redis_namespace_without_an_authkey(redis_url: str) -> None:
    """``procshare inspect URL`` and ``procshare top URL`` (run as a user runs them) show the
    namespace's objects, who holds a lock and the processes, with Redis's own credentials:
    no authkey asked for, and the looking process not listed."""
    url = redis_url + "&namespace=inspected"
    m = procshare.connect(url)
    lock = m.named("the-lock").Lock()
    jobs = m.named("the-jobs").Queue()
    jobs.put(1)
    lock.acquire()
    env = {k: v for k, v in os.environ.items() if k != "PROCSHARE_AUTHKEY"}
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "procshare", "inspect", url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        stats = json.loads(shown.stdout)
        by_name = {o["name"]: o for o in stats["objects"] if o["name"]}
        holder = by_name["the-lock"]["state"]["holder"]
        assert holder["pid"] == os.getpid() and str(os.getpid()) in holder["name"]
        assert by_name["the-jobs"]["state"]["size"] == 1
        assert [s["pid"] for s in stats["sessions"]] == [os.getpid()]  # (not the inspector)
        assert stats["sessions"][0]["holds"] == 1
        top = subprocess.run(
            [sys.executable, "-m", "procshare", "top", url, "--once", "--interval", "0.1"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        )
        assert "the-lock" in top.stdout and f"held by pid {os.getpid()}" in top.stdout
    finally:
        lock.release()
        m.delete("the-lock")
        m.delete("the-jobs")


def test_pipelined_appends_with_connections_killed_are_applied_once(rm: Any, raw: Any) -> None:
    """Pipelines of one-entry changes go as their scripts in one MULTI/EXEC; ``CLIENT KILL``
    again and again under them: a batch sent again is answered by its scripts' latches,
    so every append is made exactly once, in order."""
    lst, d = rm.list(), rm.dict()
    with _connections_killed(raw, every=0.002) as kills:
        for batch in range(60):
            with rm.pipeline() as p:
                for i in range(5):
                    p(lst).append(batch * 5 + i)
                    p(d)[batch * 5 + i] = i
    assert kills[0] > 3
    assert lst[:] == list(range(300))
    assert len(d) == 300 and d[299] == 4


def test_a_pipeline_of_changes_to_a_large_dict_is_made_entry_by_entry(rm: Any, raw: Any) -> None:
    """A batch of sets, pops, setdefaults and appends changes only its entries (not the
    whole values, so its cost does not grow with the containers'), with each call's own
    result or error; a dict holding a proxy takes the whole-value way and keeps it."""
    d, lst = rm.dict({i: i for i in range(20_000)}), rm.list([0])
    ch = d._channel()
    reads: list[Any] = []
    whole = ch._batch_once

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return whole(*args, **kwargs)

    ch._batch_once = counting  # type: ignore[method-assign]
    try:
        with rm.pipeline() as p:
            p(d)["new"] = "v"
            popped = p(d).pop(5)
            missing = p(d).pop("missing")
            kept = p(d).setdefault(6, "ignored")
            p(lst).append(1)
            last = p(lst).pop()
            empty = p(rm.list()).pop()
        assert reads == []  # (no container read whole)
        assert popped.value == 5 and kept.value == 6 and last.value == 1
        assert isinstance(missing.error, KeyError) and isinstance(empty.error, IndexError)
        assert d["new"] == "v" and 5 not in d and len(d) == 20_000 and lst[:] == [0]
        holder = rm.dict()
        holder["inner"] = rm.list([1])  # (a proxy in its value: it keeps that list alive)
        with rm.pipeline() as p:
            p(holder)["x"] = 1
        assert reads  # (the whole value's way)
        assert holder["x"] == 1 and holder["inner"][:] == [1]
    finally:
        del ch._batch_once


def test_a_watcher_sees_each_call_of_a_pipelined_batch_with_its_version(rm: Any) -> None:
    """A batch's sets and appends to one object go as one script, yet a watcher gets each
    call as its own change, in order, with consecutive versions."""
    d, lst = rm.dict(), rm.list()
    with d.watch(timeout=30) as changes, lst.watch(timeout=30) as items:
        with rm.pipeline() as p:
            for i in range(20):
                p(d)[i] = i * i  # (in a row: one script)
            for i in range(20):
                p(lst).append(i)
            p(d).pop(0)
        seen = [changes.get(timeout=30) for _ in range(21)]
        appended = [items.get(timeout=30) for _ in range(20)]
    assert [c.op for c in seen] == ["__setitem__"] * 20 + ["pop"]
    assert [c.args for c in seen[:20]] == [(i, i * i) for i in range(20)]
    assert seen[20].result == 0
    versions = [c.version for c in seen]
    assert versions == list(range(versions[0], versions[0] + 21))
    assert [c.args for c in appended] == [(i,) for i in range(20)]
