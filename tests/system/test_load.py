"""64 processes of mixed traffic for a bounded time: no lost update, no deadlock."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

import procshare
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


@pytest.mark.parametrize("spin", [0.0, 0.01])
def test_the_server_reports_how_it_waited_for_work(spin: float) -> None:
    with procshare.Manager(ctx=FORK, spin=spin) as m:
        d = m.dict()
        before = dict(m.stats()["counters"])
        for i in range(100):
            d[i] = i
        after = m.stats()["counters"]
        polled = after["polled"] - before["polled"]
        woken = after["woken"] - before["woken"]
        # one synchronous client: every request is a loop iteration of its own
        assert polled + woken >= 100
        if spin == 0.0:
            assert polled == 0  # never busy-polls: every request had to wake it
        else:
            assert polled > woken  # a 10 ms spin catches back-to-back requests


def _on_cpu(cpu: int) -> None:
    """Move the calling thread to ``cpu`` and give it back its mask: it stays there a while."""
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    os.sched_setaffinity(0, mask)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs and affinity masks",
)
def test_a_client_on_the_servers_cpu_steps_aside_and_keeps_its_mask() -> None:
    """A client busy-polls only off the server's CPU (two spinning processes on one CPU are
    never moved apart by Linux). One that finds itself there moves off it for a moment with
    its affinity mask, and must give the mask back exactly."""
    with procshare.Manager(ctx=FORK) as m:
        d = m.dict()
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(m._process.pid, {cpus[0]})  # the server stays on the first CPU
        mask = os.sched_getaffinity(0)
        try:
            for i in range(200):
                _on_cpu(cpus[0])
                d[i] = i
                assert os.sched_getaffinity(0) == mask
                time.sleep(0.0005)
            assert d.copy() == {i: i for i in range(200)}
            channel = d._channel()
            assert channel._next_step_aside > 0  # it did try to move
        finally:
            os.sched_setaffinity(m._process.pid, set(cpus))
