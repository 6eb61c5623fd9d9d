"""Posted calls across real processes (a lock's release by its holder, a put on an unbounded
queue): they do not wait for the server, and nobody can tell: what a process posted is seen by
every request made after it, the other process being told through a pipe the server knows
nothing of, or by the process's death."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
from procshare._client._channel import _RUN as RUN
from procshare._client._leases import COLD_READS
from procshare._client._proxies import _ASK_AFTER
from tests import _children as children
from tests._threads import run_threads

#: calls a process makes before its next ones are posted (the asking one included)
WARM = _ASK_AFTER + 1

WAIT = 30.0


@pytest.fixture(scope="module", params=["fork", "spawn"])
def m(request: pytest.FixtureRequest) -> Iterator[procshare.SyncManager]:
    ctx = multiprocessing.get_context(request.param)
    with procshare.Manager(ctx=ctx) as manager:
        manager.ctx = ctx  # type: ignore[attr-defined]
        yield manager


def _posted(m: Any) -> int:
    return int(m._channel().control("stats")["counters"]["posted"])


@pytest.mark.parametrize(
    ("kind", "writer", "read_all"),
    [
        ("list", children.append_then_kill_myself, lambda lst, n: lst[:]),
        ("Queue", children.put_then_kill_myself, lambda q, n: [q.get_nowait() for _ in range(n)]),
    ],
)
def test_writes_posted_by_a_killed_process_all_arrive_in_order(
    m: Any, kind: str, writer: Any, read_all: Any
) -> None:
    obj = getattr(m, kind)()
    before = _posted(m)
    child = m.ctx.Process(target=writer, args=(obj, 500))
    child.start()
    child.join(WAIT)
    assert child.exitcode == -9
    assert read_all(obj, 500) == list(range(500))
    assert _posted(m) - before == 500 - WARM


def test_an_append_of_a_value_that_names_code_waits_for_its_answer(m: Any) -> None:
    lst = m.list()
    for i in range(WARM):
        lst.append(i)
    before = _posted(m)
    lst.append(procshare.ProcshareError("a class is named"))
    lst.append(1)
    assert _posted(m) - before == 1
    assert lst[:WARM] == list(range(WARM)) and lst[-1] == 1
    assert isinstance(lst[WARM], procshare.ProcshareError)


def test_releases_wait_for_their_answers_and_puts_while_a_getter_is_parked(m: Any) -> None:
    """Somebody waiting for them would wait until the poster sleeps: a lock's release always
    waits for its answer, a queue's put while a getter is parked on the queue."""
    import threading

    lock, q = m.Lock(), m.Queue()
    before = _posted(m)
    for _ in range(10):
        lock.acquire()
        lock.release()
    assert _posted(m) == before
    for i in range(10):
        q.put(i)  # (nobody waits: posted, past the first few)
    assert _posted(m) - before == 10 - WARM
    assert [q.get() for _ in range(10)] == list(range(10))
    got: list[Any] = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=WAIT)))
    getter.start()
    while not _getters(m, q):
        threading.Event().wait(0.005)
    before = _posted(m)
    q.put("for the parked getter")
    assert _posted(m) == before  # (waited for its answer: the getter has its item now)
    getter.join(WAIT)
    assert got == ["for the parked getter"]
    q.put("nobody waits again")
    assert _posted(m) == before + 1


def _getters(m: Any, q: Any) -> int:
    [obj] = [o for o in m.stats()["objects"] if o["id"] == q._id]
    return len(obj["state"]["getters"])


def test_puts_to_a_bounded_queue_wait_for_their_answers(m: Any) -> None:
    q = m.Queue(maxsize=100)
    before = _posted(m)
    for i in range(20):
        q.put(i)
    assert _posted(m) == before
    assert [q.get() for _ in range(20)] == list(range(20))


def test_a_failed_post_is_raised_as_itself_by_a_later_call_saying_so() -> None:
    """A write refused (the server at its max_memory) after it was posted: a later post, or
    a request, raises what it raised, once, saying how many posted after it failed too."""
    with procshare.Manager(max_memory="32MiB") as m:
        lst = m.list()
        with pytest.raises(procshare.MemoryLimitError, match="posted earlier") as refused:
            for _ in range(30_000):  # bounded: 90 MB in all; each small enough to be posted
                lst.append(bytes(3000))
        assert "posted" in str(refused.value)
        assert len(lst) < 30_000  # (answered: the error was raised once)
        lst.clear()


@pytest.mark.parametrize(
    ("kind", "calls", "check"),
    [
        ("dict", [("__setitem__", (k, k * 2)) for k in range(8)], lambda d: d.copy()),
        ("list", [("append", (k,)) for k in range(8)], lambda lst: lst[:]),
        ("Value", [("set", (k,)) for k in range(8)], lambda v: v.value),
        ("Queue", [("put", (k,)) for k in range(8)], lambda q: [q.get_nowait() for _ in range(8)]),
    ],
)
def test_writes_told_through_a_pipe_are_seen_by_the_next_read(
    m: Any, kind: str, calls: list[tuple[str, tuple[Any, ...]]], check: Any
) -> None:
    obj = m.Value("i", -1) if kind == "Value" else getattr(m, kind)()
    expected = {
        "dict": {k: k * 2 for k in range(8)},
        "list": list(range(8)),
        "Value": 7,
        "Queue": list(range(8)),
    }[kind]
    before = _posted(m)
    here, there = m.ctx.Pipe()
    child = m.ctx.Process(target=children.write_then_tell, args=(obj, calls, there))
    child.start()
    assert here.poll(WAIT)
    here.recv()
    assert check(obj) == expected  # (its last writes are posted, perhaps unread still)
    here.send("done")
    child.join(WAIT)
    assert _posted(m) - before == len(calls) - WARM


def test_a_namespace_attribute_set_is_posted_and_seen(m: Any) -> None:
    ns = m.Namespace()
    before = _posted(m)
    for i in range(WARM + 5):
        ns.x = i
    assert ns.x == WARM + 4
    assert _posted(m) - before == 5


def test_an_object_posted_to_is_no_longer_leased(m: Any) -> None:
    """A lease answers a read locally: it would answer while a post is on its way. Once a
    writer may post to an object, no lease is granted on it (and those out ended)."""
    d = m.dict({"k": 0})
    here, there = m.ctx.Pipe()
    child = m.ctx.Process(target=children.register_then_post, args=(d, WARM, there))
    child.start()
    assert here.poll(WAIT) and here.recv() == "registered"
    for _ in range(5):
        assert d["k"] == WARM - 1  # (a read made again: leased, if it were leasable)
    here.send("go")
    assert here.poll(WAIT) and here.recv() == "posted"
    assert d["k"] == "posted"
    here.send("done")
    child.join(WAIT)


def test_items_under_unhashable_keys_are_not_posted_and_fail_at_once(m: Any) -> None:
    d = m.dict()
    for i in range(WARM + 1):
        d[i] = i
    before = _posted(m)
    with pytest.raises(TypeError):
        d[["not", "hashable"]] = 1
    assert _posted(m) == before


def test_posts_can_be_turned_off_for_a_server_and_for_a_process(monkeypatch: Any) -> None:
    with procshare.Manager(posts=False) as m:
        d = m.dict()
        for i in range(20):
            d[i] = i
        assert _posted(m) == 0 and d._channel().can_post is False
    monkeypatch.setenv("PROCSHARE_POSTS", "off")
    with procshare.Manager() as m:
        d = m.dict()
        for i in range(20):
            d[i] = i
        assert _posted(m) == 0
    monkeypatch.setenv("PROCSHARE_POSTS", "maybe")
    with pytest.raises(ValueError, match="PROCSHARE_POSTS"), procshare.Manager() as m:
        m.dict()


def test_appends_made_before_a_barrier_are_seen_after_it_by_every_party(m: Any) -> None:
    """Posts of several processes, read by catch-ups that stop at later stamps and leave the
    rest to be served next: each party sees every append made before the barrier."""
    parties = 5
    for _ in range(3):
        barrier = m.Barrier(parties, timeout=WAIT)
        results = [m.list(), m.list()]
        procs = [
            m.ctx.Process(target=children.lockstep, args=(barrier, results, parties, 10))
            for _ in range(parties - 1)
        ]
        for p in procs:
            p.start()
        children.lockstep(barrier, results, parties, 10)
        for p in procs:
            p.join(WAIT)
            assert p.exitcode == 0


def _counted(m: Any) -> tuple[int, int]:
    counters = m._channel().control("stats")["counters"]
    return int(counters["calls"]), int(counters["posted"])


def test_the_only_writer_of_a_value_reads_it_without_asking_and_others_see_it(m: Any) -> None:
    """``v.value += 1`` in a loop by the value's only writer: its sets are posted, and it
    keeps a lease the server leaves in place, updated with what it posts, so its reads ask
    nobody. Every other process still sees each write, and a write by anyone else ends the
    lease at once."""
    v = m.Value("i", 0)
    warm = WARM + COLD_READS + 4  # (a read leased again once its last lease ended unused)
    for _ in range(warm):
        v.value += 1
    calls, posted = _counted(m)
    for _ in range(200):
        v.value += 1
    calls_after, posted_after = _counted(m)
    assert posted_after - posted == 200
    assert (calls_after - calls) - (posted_after - posted) <= 3  # (reads: local; + stats)
    expected = warm + 200
    here, there = m.ctx.Pipe()
    reader = m.ctx.Process(target=children.read_then_tell, args=(v, there))
    reader.start()
    assert here.poll(WAIT) and here.recv() == expected  # (its posts caught up with)
    reader.join(WAIT)
    for calls_made, last in (([("set", (-5,))], -5), ([("set", (k,)) for k in range(9)], 8)):
        # another writer: once plainly, then posting too (two posters: no lease for anyone)
        writer = m.ctx.Process(target=children.write_then_tell, args=(v, calls_made, there))
        writer.start()
        assert here.poll(WAIT)
        here.recv()
        assert v.value == last  # (told through a pipe: the lease here ended before)
        here.send("done")
        writer.join(WAIT)
        v.value += 1
        assert v.value == last + 1


def test_threads_of_the_only_writer_read_what_the_server_holds(m: Any) -> None:
    """Several threads of the only writer post sets at once: the lease they keep follows the
    posts in their order, so what this process reads is what the server holds."""
    import threading

    v = m.Value("i", 0)
    for i in range(WARM + 2):
        v.value = i
    assert v.value == WARM + 1

    def writes(me: int) -> None:
        for i in range(300):
            v.value = (me, i)
            _ = v.value  # (a read in between, answered locally)

    threads = [threading.Thread(target=writes, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    here, there = m.ctx.Pipe()
    reader = m.ctx.Process(target=children.read_then_tell, args=(v, there))
    reader.start()
    assert here.poll(WAIT)
    assert here.recv() == v.value
    reader.join(WAIT)


# -- read-modify-writes under a lock: not posted, so that the next grant brings the read -------


def _counter(m: Any, name: str) -> int:
    return int(m._channel().control("stats")["counters"][name])


@contextlib.contextmanager
def _child(m: Any, target: Any, *args: Any) -> Iterator[Any]:
    """Run ``target(*args, conn)`` in a child; the other end of ``conn``. A test that fails
    midway kills the child (it would wait on the pipe for ever)."""
    here, there = m.ctx.Pipe()
    child = m.ctx.Process(target=target, args=(*args, there), daemon=True)
    child.start()
    ok = False
    try:
        yield here
        ok = True
    finally:
        if not ok:
            child.kill()
        child.join(WAIT)
    assert child.exitcode == 0


@pytest.fixture
def unlent(monkeypatch: Any) -> Iterator[procshare.SyncManager]:
    """A manager whose locks are never lent: every acquire is a grant made by the server."""
    monkeypatch.setenv("PROCSHARE_LOANS", "off")
    ctx = multiprocessing.get_context("fork")
    with procshare.Manager(ctx=ctx) as manager:
        manager.ctx = ctx  # type: ignore[attr-defined]
        yield manager


def test_a_values_read_modify_write_under_a_lock_is_posted_and_its_read_leased(
    unlent: Any,
) -> None:
    """``with lock: v.value += 1``: the set is posted, bound to the lock (``Entry.bound``:
    posted only while this process holds it), and each grant of the lock brings the read
    with it, leased: one round trip for the acquire and one for the release."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    for _ in range(WARM):
        with lock:
            v.value += 1
    assert v._channel().bound.get(v._id) == lock._id
    posted, leased, calls = _counter(m, "posted"), _counter(m, "leased"), _counter(m, "calls")
    for _ in range(20):
        with lock:
            v.value += 1
    assert _counter(m, "posted") - posted == 20
    assert _counter(m, "leased") - leased >= 20  # (one read leased at each grant)
    assert _counter(m, "calls") - calls <= 3 * 20 + 1  # (acquire, set, release; + stats)
    assert v.value == WARM + 20


def test_a_write_by_a_poster_bound_to_a_lock_it_does_not_hold_waits_for_its_answer(
    unlent: Any,
) -> None:
    """Two processes post their sets of a Value bound to a lock, so its grants lease the
    Value. Told through a pipe of a set the other made without the lock, the holder reads
    it: a bound poster that does not hold the lock makes its set plainly (a post could still
    be on its way while the holder's lease answers)."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    children.warm_locked(v, lock, WARM)
    channel = v._channel()
    assert channel.post(v._id, "set", (7,)) is False  # (not held here: not sent)
    with lock:
        assert channel.post(v._id, "set", (WARM,)) is True
    with _child(m, children.write_unlocked_on_cue, v, lock, WARM) as here:
        assert here.poll(WAIT) and here.recv() == "ready"
        with lock:
            assert v.value == 2 * WARM  # (leased with the grant)
            here.send("go")
            assert here.poll(WAIT) and here.recv() == "written"
            assert v.value == -1
        here.send("done")


def test_a_lease_granted_with_a_lock_ends_at_its_next_grant(unlent: Any) -> None:
    """A read leased with a lock's grant, while another process posts to the Value bound to
    that lock, lasts until the lock's next grant: told through a pipe of what the next
    holder posted, this process reads it, the lock or not."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    children.warm_locked(v, lock, WARM)
    with _child(m, children.post_under_lock_on_cue, v, lock, WARM) as here:
        assert here.poll(WAIT) and here.recv() == "ready"
        for _ in range(3):
            with lock:
                assert v.value == 2 * WARM  # (leased with the grant; no write: it stays)
        here.send("go")
        assert here.poll(WAIT) and here.recv() == "posted"
        assert v.value == 100
        here.send("done")
    assert v.value == 100


def test_what_a_lent_locks_holder_posted_under_it_is_read_by_its_next_holder(
    m: Any, monkeypatch: Any
) -> None:
    """A lock lent to this process (taken again and again, nobody else asks): its sets of a
    Value under it are posted, bound to it, and its reads answered here. The next holder,
    whose acquire takes the lock back, reads every set made before: the grant reads what
    the borrower posted first, which may still be unread (it freed the lock in shared
    memory, without a message)."""
    v, lock = m.Value("i", 0), m.Lock()
    # (the child borrows nothing: a loan it kept out would keep the lock from being lent here)
    monkeypatch.setenv("PROCSHARE_LOANS", "off")
    with _child(m, children.read_locked_on_cue, v, lock, WARM) as here:
        monkeypatch.delenv("PROCSHARE_LOANS")
        assert here.poll(WAIT) and here.recv() == "ready"
        lent, posted = _counter(m, "locks lent"), _counter(m, "posted")
        for _ in range(WARM + 20):
            with lock:
                v.value += 1
        assert _counter(m, "locks lent") > lent and _counter(m, "posted") > posted
        assert v._channel().bound.get(v._id) == lock._id
        with lock:
            v.value = 1000
        here.send("go")
        assert here.poll(WAIT) and here.recv() == 1000
        here.send("done")


def test_a_poster_stops_posting_to_what_it_reads_and_writes_under_a_lock(unlent: Any) -> None:
    """A process that posted its sets of a Value, then reads and writes it under a lock,
    stops posting (``unpost``): nobody posts to the Value any more, so another process's
    reads of it are leased again, and they read what was written."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    for i in range(WARM + 2):
        v.value = i
    assert _counter(m, "posted") > 0
    for _ in range(3):
        with lock:
            v.value += 1
    posted, leased = _counter(m, "posted"), _counter(m, "leased")
    here, there = m.ctx.Pipe()
    reader = m.ctx.Process(target=children.read_times_then_tell, args=(v, 5, there))
    reader.start()
    assert here.poll(WAIT) and here.recv() == WARM + 1 + 3
    reader.join(WAIT)
    assert _counter(m, "leased") > leased  # (the reader's: nobody posts to the Value now)
    assert _counter(m, "posted") == posted


def test_threads_posting_while_another_stops_posting_lose_nothing(unlent: Any) -> None:
    """One thread posts sets of a Value while another reads and writes it under a lock,
    which stops this process's posting again and again: no post is refused (each is sent
    before the ``unpost`` or not at all), and every process reads what the server holds."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()

    def work(role: str) -> None:
        for i in range(300):
            if role == "poster":
                v.value = i
            else:
                with lock:
                    v.value = v.value + 1

    run_threads(work, [("poster",), ("locker",)])
    here, there = m.ctx.Pipe()
    reader = m.ctx.Process(target=children.read_then_tell, args=(v, there))
    reader.start()
    assert here.poll(WAIT) and here.recv() == v.value  # (and no post failed: none raised)
    reader.join(WAIT)


def test_a_post_made_after_posting_stopped_is_not_sent(unlent: Any) -> None:
    """A thread that found this process registered just before another thread stopped its
    posting (``withdraw``) sends nothing (the server would refuse it): ``post`` looks again,
    under the mutex ``withdraw`` holds."""
    m = unlent
    v = m.Value("i", 0)
    for i in range(WARM + 2):
        v.value = i
    channel = v._channel()
    assert channel.registered[v._id, "set"] is True
    channel.withdraw(v._id)
    posted = _counter(m, "posted")
    assert channel.post(v._id, "set", (99,)) is False
    assert v.value == WARM + 1
    assert _counter(m, "posted") == posted


def _sessions(m: Any) -> int:
    return len(m._channel().control("stats")["sessions"])


def test_a_read_refused_a_lease_while_somebody_posts_is_leased_once_nobody_does(m: Any) -> None:
    """A read asked with a lease while another process posts to the object is answered
    without one, and the proxy asks again later: once that poster is gone, it is leased."""
    d = m.dict({"k": 0})
    sessions = _sessions(m)
    here, there = m.ctx.Pipe()
    child = m.ctx.Process(target=children.register_then_post, args=(d, WARM, there))
    child.start()
    assert here.poll(WAIT) and here.recv() == "registered"
    for _ in range(3):
        assert d["k"] == WARM - 1  # (asked with a lease: answered without one)
    here.send("go")
    assert here.poll(WAIT) and here.recv() == "posted"
    here.send("done")
    child.join(WAIT)
    for _ in range(int(WAIT / 0.01)):  # the server closes the poster's session
        if _sessions(m) <= sessions:
            break
        time.sleep(0.01)
    leased = _counter(m, "leased")
    for _ in range(COLD_READS + 3):
        assert d["k"] == "posted"
    assert _counter(m, "leased") > leased


def test_locked_bursts_that_lend_and_recall_the_lock_lose_no_increment(m: Any) -> None:
    """Processes that take a lock in bursts, with pauses: the lock is lent to whoever runs
    alone and taken back when another comes, the Value's sets posted bound to it and its
    reads brought by the grants or answered here. Not one increment is lost."""
    v, lock = m.Value("i", 0), m.Lock()
    workers = [
        m.ctx.Process(target=children.locked_bursts, args=(v, lock, 8, 40, seed))
        for seed in range(3)
    ]
    for w in workers:
        w.start()
    children.locked_bursts(v, lock, 8, 40, 99)
    for w in workers:
        w.join(WAIT)
        assert w.exitcode == 0
    assert v.value == 4 * 8 * 40


def test_posts_reach_the_server_with_no_request_after_them(m: Any) -> None:
    """A post pipe that held posts rests (the server does not wait on it) and is read again a
    moment later: what a process posted and then stayed silent about is applied all the
    same, without anybody asking for the object."""
    lst = m.list()
    before = _posted(m)
    with _child(m, children.append_then_stay, lst, 300) as child:
        assert child.poll(WAIT) and child.recv() == "appended"
        deadline = time.monotonic() + WAIT
        while _posted(m) - before < 300 - WARM and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _posted(m) - before == 300 - WARM  # (applied: nobody has read the list)
        child.send("go")
    assert lst[:] == list(range(300))


def test_a_post_larger_than_its_pipe_is_posted_whole(m: Any) -> None:
    """A post that does not fit its pipe at once (64 KiB): its writer waits for room as the
    server reads it, and the server waits on that pipe until the post is whole."""
    d = m.dict()
    for i in range(WARM):
        d["k"] = i
    before = _posted(m)
    big = [bytes([n]) * (256 * 1024) for n in range(3)]
    for value in big:
        d["k"] = value
    assert _posted(m) - before == 3
    with _child(m, children.send_item, d, "k") as child:
        assert child.poll(WAIT) and child.recv() == big[-1]


def test_posts_from_processes_taking_turns_are_applied_in_the_turns_order(m: Any) -> None:
    """Two processes append in turns, each told its turn by the other through a pipe the
    server knows nothing of; their posts rest in two pipes and are read together: applied in
    the order they were written (their stamps), the list holds the turns' order."""
    lst = m.list()
    a_take, b_give = m.ctx.Pipe(duplex=False)
    b_take, a_give = m.ctx.Pipe(duplex=False)
    n = 400
    with (
        _child(m, children.append_in_turn, lst, range(0, n, 2), a_take, a_give) as a,
        _child(m, children.append_in_turn, lst, range(1, n, 2), b_take, b_give) as b,
    ):
        b_give.send("start")  # (the first turn: A's)
        assert a.poll(WAIT) and a.recv() == "done"
        assert b.poll(WAIT) and b.recv() == "done"
    assert lst[:] == list(range(n))


def test_a_few_posts_before_each_request_go_with_it_and_runs_go_into_the_pipe(m: Any) -> None:
    """A process that posts once before each request sends its posts with the requests (the
    request brings them along: no pipe to apply first); one that posts in runs writes them
    into its post pipe, once a ping showed those sent along applied (a post in the pipe may
    be applied before one unread with the requests). Either way, in order."""
    lst = m.list()
    channel = lst._channel()
    for i in range(WARM):
        lst.append(i)
    n = WARM
    for _ in range(4):
        for _ in range(3):  # a post, then a request (the pattern is seen at the requests)
            lst.append(n)
            n += 1
            along = not channel._posts_unread
            assert lst[-1] == n - 1  # (a request: what this process posted, applied first)
        assert along and channel._along_written == channel._along_confirmed
        for _ in range(3 * RUN):  # a run of posts
            lst.append(n)
            n += 1
        assert channel._posts_unread  # (the run went into the pipe)
        assert channel._along_written == channel._along_confirmed  # (after a ping)
        assert lst[-1] == n - 1
    assert lst[:] == list(range(n))


def test_a_post_bound_to_a_lock_not_known_here_is_never_sent(m: Any) -> None:
    """The server bound a Value's sets to the one lock this process held, but which one was
    not known here (lent, and held by another thread than the writer's): ``bound`` says 0,
    and such a set is made plainly, never posted, whatever this process holds (holding
    nothing included: a post then could reach the server after that lock's next grant
    leased the Value to another process)."""
    v = m.Value("i", 0)
    channel = v._channel()
    with channel._mutex:
        channel.registered[v._id, "set"] = True
        channel.bound[v._id] = 0
    assert channel.leases is None or channel.leases.holding == 0  # (no lock held here)
    assert channel.post(v._id, "set", (5,), threading.get_ident()) is False


def test_sets_under_the_lock_every_poster_takes_are_applied_without_a_catch_up(
    unlent: Any,
) -> None:
    """Processes that write a Value only under one lock post their sets bound to it: while
    this one holds the lock by the server's grant, no other can have a set on its way (each
    wrote its sets before its release, read before this grant), so the server applies a
    post at once, with no look at the others' pipes. Not an increment is lost."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    workers = [
        m.ctx.Process(target=children.locked_increments, args=(v, lock, 200)) for _ in range(2)
    ]
    skipped = _counter(m, "posts under their lock")
    for w in workers:
        w.start()
    children.locked_increments(v, lock, 200)
    for w in workers:
        w.join(WAIT)
        assert w.exitcode == 0
    assert v.value == 3 * 200
    assert _counter(m, "posts under their lock") - skipped > 0


def test_sets_under_a_lock_catch_up_with_a_poster_that_writes_without_it(unlent: Any) -> None:
    """A process posts its sets of a Value without any lock; this one then writes it under a
    lock. Its posts look for the other's first (its sets may be on their way), and the
    Value ends with this process's writes, made after the other's."""
    m = unlent
    v, lock = m.Value("i", 0), m.Lock()
    sets = [("set", (i,)) for i in range(WARM + 5)]
    with _child(m, children.write_then_tell, v, sets) as here:
        assert here.poll(WAIT) and here.recv() == "written"
        skipped = _counter(m, "posts under their lock")
        for _ in range(WARM + 10):
            with lock:
                v.value += 1
        assert v.value == WARM + 4 + WARM + 10
        assert _counter(m, "posts under their lock") == skipped
        here.send("done")
