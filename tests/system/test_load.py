"""Under load: 64 processes of mixed traffic lose nothing; where clients and the server wait and
run (busy-polling, CPU moves) as the machine is idle or busy. (The calls here are dict
``update``s: round trips; an item set may be posted, and tell nothing of waiting.)"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest

import procshare
from procshare import _sched
from procshare._sched import LoadGauge
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [64])
def test_many_processes_lose_nothing(workers: int) -> None:
    rounds = 100
    with procshare.Manager(ctx=FORK) as m:
        d, lst, q, lock = m.dict(), m.list(), m.Queue(), m.Lock()
        procs = [
            FORK.Process(target=children.mixed_load, args=(d, lst, q, lock, w, rounds))
            for w in range(workers)
        ]
        started = time.monotonic()
        for p in procs:
            p.start()
        for p in procs:
            p.join(max(1.0, 240 - (time.monotonic() - started)))
        stuck = [p.pid for p in procs if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        assert not stuck, f"{len(stuck)} workers never finished: deadlock"
        assert all(p.exitcode == 0 for p in procs)
        assert d["counter"] == workers * rounds  # locked read-modify-write: no lost update
        assert sorted(lst[:]) == sorted((w, i) for w in range(workers) for i in range(rounds))
        assert q.qsize() == 0
        sessions = m.stats()["sessions"]
        assert len(sessions) <= 2  # the workers' sessions are all gone


@pytest.fixture
def idle_gauge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers forked from here find no process of anybody else's waiting for a CPU (the
    machine running the tests may be busy; these tests are about what follows from it)."""
    monkeypatch.setattr(LoadGauge, "loaded", lambda self, now, ours, mine=None: False)


@pytest.fixture
def loaded_gauge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers forked from here find another process waiting for a CPU, always."""
    monkeypatch.setattr(LoadGauge, "loaded", lambda self, now, ours, mine=None: True)


@pytest.mark.parametrize("spin", [0.0, 0.01])
def test_the_server_reports_how_it_waited_for_work(spin: float, idle_gauge: None) -> None:
    with procshare.Manager(ctx=FORK, spin=spin) as m:
        d = m.dict()
        before = dict(m.stats()["counters"])
        for i in range(100):
            d.update({i: i})
        after = m.stats()["counters"]
        polled = after["polled"] - before["polled"]
        woken = after["woken"] - before["woken"]
        # one synchronous client: every request is a loop iteration of its own
        assert polled + woken >= 100
        if spin == 0.0:
            assert polled == 0  # never busy-polls: every request had to wake it
        else:
            assert polled > woken  # a 10 ms spin catches back-to-back requests


def test_the_servers_spin_setting_binds_its_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCSHARE_SPIN", raising=False)
    with procshare.Manager(ctx=FORK, spin="off") as m:
        d = m.dict()
        d[1] = 1
        assert d._channel()._spin_max == 0.0
    with pytest.raises(ValueError, match="spin"):
        procshare.Manager(ctx=FORK, spin="fast")  # refused here, not in the server process


def test_procshare_spin_in_the_environment_turns_spinning_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCSHARE_SPIN", "off")
    with procshare.Manager(ctx=FORK) as m:
        d = m.dict()
        before = dict(m.stats()["counters"])
        for i in range(50):
            d.update({i: i})
        after = m.stats()["counters"]
        assert after["polled"] == before["polled"]
        assert d._channel()._spin_max == 0.0


def _hog(seconds: float) -> None:
    end = time.monotonic() + seconds  # bounded even if the test dies
    while time.monotonic() < end:
        pass


def test_the_server_stops_spinning_when_others_want_the_cpus() -> None:
    """Processes that compute (not clients) on every CPU: the server must neither spin
    itself nor tell its client to. The real gauge, real processes."""
    hogs = [FORK.Process(target=_hog, args=(60,), daemon=True) for _ in range(_cpus())]
    for h in hogs:
        h.start()
    try:
        with procshare.Manager(ctx=FORK) as m:
            d = m.dict()
            for i in range(300):  # long enough for the gauge to have read a loaded machine
                d.update({i % 10: i})
            before = dict(m.stats()["counters"])
            for i in range(200):
                d.update({i % 10: i})
                assert not d._channel()._proto.server_spin
            after = m.stats()["counters"]
            assert after["polled"] - before["polled"] <= 2  # (the turn that noticed, at most)
    finally:
        for h in hogs:
            h.kill()
            h.join()


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _computing_client(d: Any, me: int, calls: int, out: Any, leave: Any, go: Any) -> None:
    """Compute about a millisecond of CPU between calls; report what the server advised in the
    middle of the run (at its start and end the other client may not be running yet, or any
    more)."""
    advised = []
    d[(me, -1)] = 0  # connected
    go.wait(30)  # and the other is too: they compute side by side
    for i in range(calls):
        start = time.process_time()
        while time.process_time() - start < 0.001:
            pass
        d.update({(me, i % 5): i})
        proto = d._channel()._proto
        advised.append((proto.server_spin, proto.server_crowded))
    out.put((me, advised[calls // 2 - 10 : calls // 2 + 10]))
    leave.wait(30)  # connected until the test has looked


def test_clients_that_compute_are_not_told_to_spin_and_get_reactors_of_their_own(
    idle_gauge: None,
) -> None:
    with procshare.Manager(ctx=FORK, reactors=2) as m:
        # (Clients forked from the test runner, large by now, spend their first milliseconds
        # in copy-on-write faults: small fresh processes from the fork server do not.)
        ctx = multiprocessing.get_context("forkserver")
        d, out, leave, go = m.dict(), ctx.SimpleQueue(), ctx.Event(), ctx.Barrier(2)
        procs = [
            ctx.Process(target=_computing_client, args=(d, k, 120, out, leave, go))
            for k in range(2)
        ]
        for p in procs:
            p.start()
        results = dict(out.get() for _ in procs)
        stats = m.stats()
        leave.set()
        for p in procs:
            p.join(30)
        for advised in results.values():
            # (A client the scheduler kept off its CPU for longer than the server's 2 ms
            # window of "running" leaves the other alone for a few calls: allowed, now and then.)
            wrong = [(n, a) for n, a in enumerate(advised) if a != (False, True)]
            assert len(wrong) <= len(advised) // 2, wrong  # (a wrong policy: all of them)
        reactors = {s["reactor"] for s in stats["sessions"] if s["pid"] in {p.pid for p in procs}}
        assert reactors == {0, 1}


def _on_cpu(cpu: int) -> None:
    """Move the calling thread to ``cpu`` and give it back its mask: it stays there a while."""
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    os.sched_setaffinity(0, mask)


needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or _cpus() < 2,
    reason="needs two CPUs and affinity masks",
)


@needs_two_cpus
def test_a_client_about_to_spin_on_the_servers_cpu_steps_aside_and_keeps_its_mask(
    idle_gauge: None,
) -> None:
    """Two spinning processes on one CPU only slow each other (and Linux does not move them
    apart): told to spin, a client on the server's CPU moves off it for a moment, and must
    give its affinity mask back exactly."""
    with procshare.Manager(ctx=FORK, reactors=1) as m:
        d = m.dict()
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(m._process.pid, {cpus[0]})  # the server stays on the first CPU
        mask = os.sched_getaffinity(0)
        try:
            for i in range(200):  # back to back: the server still spins for each call
                _on_cpu(cpus[0])
                d.update({i: i})
                assert os.sched_getaffinity(0) == mask
            assert d.copy() == {i: i for i in range(200)}
            channel = d._channel()
            assert channel._proto.server_spin
            assert channel._stepper._next > 0  # it did try to move
        finally:
            os.sched_setaffinity(m._process.pid, set(cpus))


@needs_two_cpus
def test_a_lone_client_on_a_loaded_machine_steps_toward_the_server(loaded_gauge: None) -> None:
    """On a busy machine the lone client sleeps on the server's CPU, where the server's reply
    wakes it as the server goes to sleep; and it gives its mask back."""
    with procshare.Manager(ctx=FORK, reactors=1) as m:
        d = m.dict()
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(m._process.pid, {cpus[0]})  # the server stays on the first CPU
        mask = os.sched_getaffinity(0)
        try:
            arrived = 0
            for i in range(100):
                _on_cpu(cpus[-1])  # away from it
                time.sleep(0.011)  # (a move happens at most every STEP_EVERY)
                d.update({i: i})
                assert os.sched_getaffinity(0) == mask
                arrived += _sched.current_cpu() == cpus[0]
                proto = d._channel()._proto
                assert not proto.server_spin and not proto.server_crowded
                if arrived >= 5:
                    break
            assert arrived >= 5  # (the scheduler may move it again; it keeps coming back)
            assert d._channel()._stepper._next > 0  # it moved itself (not only the scheduler)
        finally:
            os.sched_setaffinity(m._process.pid, set(cpus))


def _compute_then_serve(d: Any, lk: Any, out: Any) -> None:
    """Compute between calls until the server gives this client a reactor of its own; then
    read a value larger than a pipe holds, and wait for a lock another reactor's client
    releases (its grant is written by this client's reactor)."""
    for i in range(10_000):  # (until told: bounded)
        start = time.process_time()
        while time.process_time() - start < 0.001:
            pass
        d.update({"i": i})
        if d.get("moved"):
            break
    big = d["big"]
    out.put(("big", len(big), big[:3], big[-3:]))
    got = lk.acquire(timeout=30)
    out.put(("lock", got))
    lk.release()


def test_replies_across_reactors_arrive_whole_and_in_order() -> None:
    """A reactor writes its own connections' replies after leaving the core lock; what a
    request served on another reactor writes for them (a lock's grant) is queued for their
    reactor to write. Both arrive, whole, large ones too."""
    with procshare.Manager(ctx=FORK, reactors=2) as m:
        d, lk = m.dict(), m.Lock()
        d["big"] = b"abc" + bytes(1 << 20) + b"xyz"  # (a pipe holds 64 KiB: partial writes)
        out = FORK.SimpleQueue()
        lk.acquire()
        child = FORK.Process(target=_compute_then_serve, args=(d, lk, out))
        child.start()
        for n in range(100_000):  # bounded: the computing client moves to reactor 1 (a
            # lone one may stay where it is: this process calls back to back meanwhile)
            d.update({"main": n})
            if n % 100 == 0:
                sessions = {s["pid"]: s for s in m.stats()["sessions"]}
                if sessions.get(child.pid, {}).get("reactor") == 1:
                    break
        assert sessions[child.pid]["reactor"] == 1
        d["moved"] = True
        assert out.get() == ("big", 6 + (1 << 20), b"abc", b"xyz")
        for _ in range(3000):  # bounded: the child waits for the lock
            if any(s["pid"] == child.pid and s["waiting"] for s in m.stats()["sessions"]):
                break
            time.sleep(0.01)
        lk.release()  # served on reactor 0; the grant goes out through reactor 1
        assert out.get() == ("lock", True)
        child.join(30)
        assert child.exitcode == 0


def _compute_then_put(
    d: Any, q: Any, me: int, calls: int, items: int, go: Any, picked: Any, putter: Any
) -> None:
    """Compute ~1 ms between calls (a worker: the server gives it a reactor of its own), then,
    if the test picks this process, put ``items`` numbers into ``q``, computing between them.
    (Each put waits for its answer: a posted one, made while no getter is parked, is answered
    by nobody.)"""
    os.environ["PROCSHARE_POSTS"] = "off"
    go.wait(30)  # (both compute side by side)
    for i in range(calls):
        start = time.process_time()
        while time.process_time() - start < 0.001:
            pass
        d.update({(me, i % 5): i})
    d[("done", me)] = os.getpid()
    # (waiting here makes no call: a client polling with sleeps in between computes nothing,
    # and would be moved back among the others)
    picked.wait(30)
    if putter.value != os.getpid():
        return
    for n in range(items):
        start = time.process_time()
        while time.process_time() - start < 0.001:
            pass
        q.put((me, n))


def test_an_item_for_a_consumer_on_another_reactor_is_written_by_the_producers(
    idle_gauge: None,
) -> None:
    """A consumer blocked in ``get``, and a producer that computes, on another reactor: each
    item reaches the consumer whole, in order, and (while the consumer's reactor sleeps) the
    producer's reactor takes the consumer's connection over to write it instead of waking
    the other reactor for it."""
    items = 300
    with procshare.Manager(ctx=FORK, reactors=2) as m:
        ctx = multiprocessing.get_context("forkserver")
        d, q, go = m.dict(), m.Queue(), ctx.Barrier(2)
        picked, putter = ctx.Event(), ctx.Value("i", 0)
        procs = [
            ctx.Process(target=_compute_then_put, args=(d, q, k, 120, items, go, picked, putter))
            for k in range(2)
        ]
        for p in procs:
            p.start()
        while sum(1 for key in d.copy() if key[0] == "done") < 2:
            time.sleep(0.01)
        reactor_of = {s["pid"]: s["reactor"] for s in m.stats()["sessions"]}
        mine = reactor_of[os.getpid()]  # (this process waits in get: it may be on either)
        placed = [p.pid for p in procs if reactor_of.get(p.pid, mine) != mine]
        assert placed, reactor_of  # (a worker that computes gets a reactor of its own)
        chosen = next(k for k, p in enumerate(procs) if p.pid == placed[0])
        before = m.stats()["counters"]["taken over"]
        putter.value = placed[0]
        picked.set()
        got = [q.get(timeout=30) for _ in range(items)]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert got == [(chosen, n) for n in range(items)]
        assert m.stats()["counters"]["taken over"] > before


@pytest.mark.parametrize(
    ("cpu_us", "spun_us", "wall_us", "thinks"),
    [
        (1000, 0, 1100, True),  # computed a millisecond between its calls
        (400, 0, 1200, True),  # ... on a CPU it shares with a worker
        (20, 0, 30, False),  # called back to back
        (120, 0, 1100, False),  # blocked a millisecond: waking up cost CPU, not computing
        (110, 90, 150, False),  # spun 90 us waiting for its last reply
    ],
)
def test_a_client_counts_as_computing_only_when_it_held_a_cpu(
    monkeypatch: pytest.MonkeyPatch, cpu_us: int, spun_us: int, wall_us: int, thinks: bool
) -> None:
    """What a client tells the server of its last gap between calls (``Flag.THINKS``): a
    consumer blocked in a wait, whose wake-ups cost tens of microseconds of CPU, must not
    count as computing (it would be moved to a reactor of its own, and back, for ever)."""
    from procshare._client import _channel

    with procshare.Manager() as m:
        channel = m._channel()
        clocks = {"cpu": 5.0, "wall": 100.0}
        monkeypatch.setattr(_channel, "_cpu_clock", lambda: clocks["cpu"])
        monkeypatch.setattr(_channel, "_clock", lambda: clocks["wall"])
        channel._since_last_call()  # the last call starts
        channel._spun = spun_us * 1e-6
        clocks["cpu"] += cpu_us * 1e-6
        clocks["wall"] += wall_us * 1e-6
        assert channel._since_last_call() is thinks


def test_a_consumer_blocked_in_waits_stays_with_the_other_clients(idle_gauge: None) -> None:
    """A consumer woken every few milliseconds (the bench's event-latency rows) is no client
    that computes: it stays on reactor 0, where the producer's request answers it at once."""
    ctx = multiprocessing.get_context("forkserver")
    with procshare.Manager(ctx=FORK, reactors=2) as m:
        event = m.Event()
        pace, theirs = ctx.Pipe()
        consumer = ctx.Process(target=children.wait_event_rounds, args=(event, 60, theirs))
        consumer.start()
        try:
            for _ in range(60):
                assert pace.poll(30) and pace.recv() == "waiting"
                time.sleep(0.002)  # (it surely waits by now)
                event.set()
            assert pace.poll(30) and pace.recv() == "done"
            stats = m.stats()
        finally:
            pace.send("go")
            consumer.join(30)
        assert consumer.exitcode == 0
        reactors = {s["pid"]: s["reactor"] for s in stats["sessions"]}
        assert reactors[consumer.pid] == 0
        assert stats["counters"]["taken over"] == 0
