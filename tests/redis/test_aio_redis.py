"""procshare.aio on Redis (issue #21): the asyncio tests of procshare's server, run again with
the objects in Redis, and what is Redis's own: cancellation racing with grants and items,
waits withdrawn from Redis, watches and cached reads fed by the streams, pipelines."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
import procshare.aio
from tests.system.test_aio import *  # noqa: F403
from tests.system.test_aio import run

FORK = multiprocessing.get_context("fork")

# Not Redis's: they count procshare's server's calls or leases, read whole values it keeps
# versions of, or need no manager (they ran with the local tests already). (The pipeline's
# test counts the server's calls only there.)
del test_large_whole_reads_send_only_what_changed  # noqa: F821
del test_reads_made_again_are_leased_and_never_stale  # noqa: F821
del test_an_asyncio_lock_grant_brings_the_reads_of_its_last_hold  # noqa: F821
del test_an_asyncio_cache_answers_locally_and_sees_other_writers  # noqa: F821
del test_wrong_authkey_and_dead_server  # noqa: F821
del test_a_leased_read_after_the_server_died_raises  # noqa: F821
del test_an_asyncio_cache_whose_server_died_raises  # noqa: F821
del test_every_kind_has_a_typed_async_proxy_offering_each_of_its_methods  # noqa: F821
del test_the_async_client_has_every_factory_of_the_sync_manager_for_a_built_in_kind  # noqa: F821


@pytest.fixture(scope="module")
def m(redis_server: str) -> Iterator[procshare.SyncManager]:
    manager = procshare.SyncManager(address=f"{redis_server}?session_ttl=1&release_delay=0.2")
    manager.start()
    yield manager
    manager.shutdown()


def _waiters(m: procshare.SyncManager, proxy: Any, which: str = "w") -> int:
    """How many waiters Redis lists for ``proxy``'s object (``w``: getters, acquirers)."""
    ch = m._channel()
    return int(ch._client.llen(f"{ch._prefix}{proxy._token.id}:{which}"))


def test_aio_connect_to_a_redis_url_gives_typed_proxies_of_its_objects(
    m: procshare.SyncManager,
) -> None:
    A = procshare.aio

    async def main() -> None:
        async with await A.connect(m.address) as client:
            assert client.address == m.address
            d = await client.dict(a=1)
            assert isinstance(d, A.AsyncDictProxy)
            assert isinstance(await client.Queue(), A.AsyncQueue)
            assert await d.setdefault("b", 2) == 2 and await d.pop("a") == 1
            with pytest.raises(ValueError, match="unknown typeid"):
                await client.create("no-such-type")
            stats = await client.stats()
            assert stats["backend"] == "redis"

    run(main())


def test_a_cancelled_wait_is_withdrawn_from_redis(
    m: procshare.SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kind of wait, cancelled, leaves its waiters list at once: its thread is woken,
    not left in its BLPOP until the slice ends (here a minute long)."""
    import procshare._redis._channel as redis_channel

    monkeypatch.setattr(redis_channel, "WAIT_SLICE", 60.0)
    lock, q = m.Lock(), m.Queue(1)
    lock.acquire()
    q.put("full")

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            alock, aq = client.proxy(lock), client.proxy(q)
            for call, which in (
                (lambda: alock.acquire(), "w"),
                (lambda: aq.put("more"), "p"),
            ):
                task = asyncio.create_task(call())
                for _ in range(500):  # (until it is listed: it waits in Redis)
                    if _waiters(m, lock if which == "w" else q, which):
                        break
                    await asyncio.sleep(0.01)
                assert _waiters(m, lock if which == "w" else q, which) == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)  # (not a TimeoutError: woken at once)
                assert _waiters(m, lock if which == "w" else q, which) == 0
            assert await aq.qsize() == 1

    run(main())
    lock.release()
    assert q.get_nowait() == "full" and q.empty()


def test_a_cancelled_barrier_wait_leaves_the_barrier_unbroken(m: procshare.SyncManager) -> None:
    barrier = m.Barrier(2)

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            ab = client.proxy(barrier)
            task = asyncio.create_task(ab.wait())
            for _ in range(500):
                if await ab.n_waiting() == 1:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await ab.n_waiting() == 0 and not await ab.broken()
            assert sorted(await asyncio.gather(ab.wait(), ab.wait())) == [0, 1]

    run(main())


def test_grants_racing_with_cancellation_are_given_back(m: procshare.SyncManager) -> None:
    """A holder releases as the waiting task is cancelled, again and again: whoever won, the
    lock ends free, the semaphore has its permit, and a JoinableQueue's items are neither lost
    nor delivered twice (an item won by a cancelled get goes back to the head)."""
    lock, sem, q = m.Lock(), m.Semaphore(1), m.JoinableQueue()

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            alock, asem, aq = client.proxy(lock), client.proxy(sem), client.proxy(q)
            got: list[int] = []
            for i in range(40):
                delay = (i % 8) * 0.002
                lock.acquire()
                assert sem.acquire(timeout=10)
                waiting = [
                    asyncio.create_task(alock.acquire()),
                    asyncio.create_task(asem.acquire()),
                    asyncio.create_task(aq.get()),
                ]
                await asyncio.sleep(0.02)
                lock.release()
                sem.release()
                await aq.put(i)
                await asyncio.sleep(delay)
                for task in waiting:
                    task.cancel()
                results = await asyncio.gather(*waiting, return_exceptions=True)
                if results[0] is True:  # (it was answered before it was cancelled)
                    lock.release()
                if results[1] is True:
                    sem.release()
                if not isinstance(results[2], BaseException):
                    got.append(results[2])
                    await aq.task_done()
                assert lock.acquire(timeout=10), f"round {i}: the lock was kept by a cancelled task"
                lock.release()
                assert sem.acquire(timeout=10), f"round {i}: a permit was kept"
                sem.release()
            while not await aq.empty():
                got.append(await aq.get())
                await aq.task_done()
            assert sorted(got) == list(range(40))  # every item once: none lost, none twice
            await asyncio.wait_for(aq.join(), 10)  # and every one of them done

    run(main())


def test_a_get_won_by_a_cancelled_task_goes_back_to_the_head(m: procshare.SyncManager) -> None:
    """The race made certain: the item is taken while the call's thread cannot yet see the
    cancellation; the task is cancelled before its answer reaches the loop."""
    q = m.Queue()
    for item in ("first", "second"):
        q.put(item)

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            aq = client.proxy(q)
            for _ in range(20):
                task = asyncio.create_task(aq.get())
                await asyncio.sleep(0)  # (sent to its thread)
                task.cancel()
                try:
                    taken = await task
                except asyncio.CancelledError:
                    continue
                await aq.put(taken)  # (not cancelled in time: it got an item fairly)
            assert sorted([await aq.get(), await aq.get()]) == ["first", "second"]
            assert await aq.empty()

    run(main())


def test_asyncio_watch_and_cache_on_redis_follow_another_process(
    m: procshare.SyncManager,
) -> None:
    """Changes made by a process of its own reach an asyncio watcher in order with
    consecutive versions, and an asyncio cached proxy, never going back."""
    d = m.dict(k=0)

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            ad = client.proxy(d)
            cached = await client.proxy(d).cache()
            assert await cached.getitem("k") == 0
            async with ad.watch(timeout=30) as changes:
                writer = FORK.Process(target=_count_to, args=(d, 200))
                writer.start()
                versions, values = [], []
                async for change in changes:
                    versions.append(change.version)
                    values.append(change.args[1])
                    if values[-1] == 200:
                        break
                await asyncio.to_thread(writer.join, 30)
            assert values == list(range(1, 201))
            assert versions == list(range(versions[0], versions[0] + 200))
            seen = [await cached.getitem("k")]
            for _ in range(3000):
                if seen[-1] == 200:
                    break
                await asyncio.sleep(0.001)
                seen.append(await cached.getitem("k"))
            assert seen[-1] == 200 and seen == sorted(seen)

    run(main())


def _count_to(d: Any, n: int) -> None:
    for i in range(1, n + 1):
        d["k"] = i


def test_asyncio_proxies_hold_their_objects_and_free_them_when_dropped(
    m: procshare.SyncManager,
) -> None:
    """References: an object made from asyncio lives while its async proxy does, in this
    process's session; dropped, the janitor frees it."""

    async def main() -> int:
        async with await procshare.aio.connect(m.address) as client:
            d = await client.dict(k=1)
            inner = await client.list([1])
            await d.setitem("inner", inner)
            obj_id = inner._id
            del inner
            again = await d.getitem("inner")
            assert await again.getvalue() == [1]
            del d, again
            return obj_id

    obj_id = run(main())
    ch = m._channel()
    deadline = time.monotonic() + 30
    while ch._client.hexists(f"{ch._prefix}types", obj_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ch._client.hexists(f"{ch._prefix}types", obj_id)


def test_many_tasks_waiting_at_once_are_all_served(m: procshare.SyncManager) -> None:
    """200 tasks wait on one queue at once (each on a worker thread: the pool grows, it never
    makes the put that wakes them wait behind them), then 200 items come: each task gets one,
    none is lost or given twice; an Event wait and a join cancelled meanwhile leave nothing
    behind."""
    q, event, jq = m.Queue(), m.Event(), m.JoinableQueue()

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            aq, aevent, ajq = client.proxy(q), client.proxy(event), client.proxy(jq)
            getters = [asyncio.create_task(aq.get()) for _ in range(200)]
            for _ in range(1000):
                if _waiters(m, q) == 200:
                    break
                await asyncio.sleep(0.01)
            assert _waiters(m, q) == 200
            for i in range(200):
                await aq.put(i)
            got = await asyncio.wait_for(asyncio.gather(*getters), 60)
            assert sorted(got) == list(range(200))
            await ajq.put("undone")
            for call, which, proxy in (
                (aevent.wait, "w", event),
                (ajq.join, "j", jq),
            ):
                task = asyncio.create_task(call())
                for _ in range(500):
                    if _waiters(m, proxy, which):
                        break
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert _waiters(m, proxy, which) == 0
            assert await aq.empty() and not await aevent.is_set()

    run(main())


def test_a_closed_asyncio_client_refuses_calls_and_the_namespace_outlives_it(
    m: procshare.SyncManager,
) -> None:
    d = m.dict(k=1)

    async def main() -> Any:
        client = await procshare.aio.connect(m.address)
        ad = client.proxy(d)
        assert await ad.getitem("k") == 1
        await client.close()
        await client.close()  # (twice: nothing more)
        with pytest.raises(procshare.ConnectionLost, match="closed"):
            await ad.getitem("k")

    run(main())
    assert d["k"] == 1  # the sync proxies of the process go on


def test_asyncio_on_redis_from_a_spawned_process(m: procshare.SyncManager) -> None:
    """A process started with spawn (nothing inherited) connects from asyncio by the URL
    alone and works on the parent's objects, its locks included."""
    results, lock = m.list(), m.Lock()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_spawned_main, args=(str(m.address), results, lock))
    lock.acquire()
    child.start()
    deadline = time.monotonic() + 60
    while len(results) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert results[:] == ["waiting"]
    lock.release()  # the child's asyncio acquire gets it
    child.join(60)
    assert child.exitcode == 0
    assert results[:] == ["waiting", "acquired"]


def _spawned_main(url: str, results: Any, lock: Any) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(url) as client:
            alist, alock = client.proxy(results), client.proxy(lock)
            await alist.append("waiting")
            async with alock:
                await alist.append("acquired")

    asyncio.run(asyncio.wait_for(main(), 60))
