"""procshare.aio: the same server from asyncio; nothing blocks the event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import procshare
import procshare.aio
from tests import _children as children

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def m() -> Iterator[procshare.SyncManager]:
    with procshare.Manager(ctx=FORK) as manager:
        yield manager


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_every_method_is_awaitable(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            d = await client.dict(a=1)
            await d.setitem("b", 2)
            assert await d["a"] == 1 and await d.getitem("b") == 2
            assert await d.len() == 2 and await d.contains("a")
            assert sorted(await d.keys()) == ["a", "b"]
            with pytest.raises(KeyError):
                await d.getitem("missing")
            lst = await client.list([1])
            await lst.append(2)
            assert await lst.getvalue() == [1, 2]
            assert await lst.repr() == "[1, 2]"
            assert "dict" in repr(d)

    run(main())


def test_sync_and_async_clients_share_objects(m: procshare.SyncManager) -> None:
    d = m.dict(x=1)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            shared = client.proxy(d)
            assert await shared.getitem("x") == 1
            await shared.setitem("from_async", True)

    run(main())
    assert d["from_async"] is True


def test_nested_proxies_come_back_async(m: procshare.SyncManager) -> None:
    outer = m.dict(inner=m.list([1, 2]))

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            inner = await client.proxy(outer).getitem("inner")
            assert isinstance(inner, procshare.aio.AsyncProxy)
            await inner.append(3)

    run(main())
    assert outer["inner"][:] == [1, 2, 3]


def test_large_whole_reads_send_only_what_changed(m: procshare.SyncManager) -> None:
    d = m.dict({i: f"v{i}" for i in range(1000)})
    nested = m.dict({i: [i] for i in range(1000)})
    lock = m.Lock()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ad, an, al = client.proxy(d), client.proxy(nested), client.proxy(lock)
            first, second = await ad.copy(), await ad.copy()
            assert first == second == {i: f"v{i}" for i in range(1000)}
            assert first is not second
            assert (await ad.copy())[7] is second[7]  # served from what the proxy holds
            d[0] = "changed"  # from the sync side
            assert (await ad.copy())[0] == "changed"
            assert (await ad.getvalue())[0] == "changed"
            items = await ad.items()
            assert items[0] == (0, "changed") and len(items) == 1000
            d[1] = "changed too"
            items, values = await ad.items(), await ad.values()  # made from the copy held
            assert items[1] == (1, "changed too") and values[1] == "changed too"
            assert items[7][1] is values[7] is second[7]
            for _ in range(3):
                (await an.copy())[5].append("changed locally")
            assert (await an.copy())[5] == [5]
            assert await al.acquire() is True  # not a whole-object read: a plain call
            await al.release()

    run(main())


def test_waiting_on_a_lock_does_not_block_the_loop(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            lock = await client.Lock()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            async def holder() -> None:
                async with lock:
                    await asyncio.sleep(0.3)

            ticking = asyncio.create_task(ticker())
            holding = asyncio.create_task(holder())
            await asyncio.sleep(0.05)
            before = ticks
            assert await lock.acquire() is True  # parked on the server until holder releases
            assert ticks - before >= 10  # the loop kept running meanwhile
            await lock.release()
            await holding
            ticking.cancel()

    run(main())


def test_rlock_ownership_is_per_task(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            rlock = await client.RLock()
            assert await rlock.acquire() and await rlock.acquire()  # reentrant in this task

            async def other() -> bool:
                return await rlock.acquire(True, 0.05)  # type: ignore[no-any-return]

            assert await asyncio.create_task(other()) is False  # another task: another owner
            await rlock.release()
            await rlock.release()

    run(main())


def test_queue_get_waits_without_blocking(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            q = await client.Queue()
            getter = asyncio.create_task(q.get())
            await asyncio.sleep(0.05)
            assert not getter.done()
            await q.put("item")
            assert await getter == "item"

    run(main())


def test_many_watchers_in_one_loop(m: procshare.SyncManager) -> None:
    lists = [m.list() for _ in range(30)]

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:

            async def collect(proxy: Any) -> list[int]:
                got = []
                async with client.proxy(proxy).watch(timeout=30) as changes:
                    ready.release()
                    async for change in changes:
                        got.append(change.args[0])
                        if len(got) == 5:
                            return got
                return got

            ready = asyncio.Semaphore(0)
            tasks = [asyncio.create_task(collect(p)) for p in lists]
            for _ in lists:
                await ready.acquire()
            writer = FORK.Process(target=_fill_all, args=(lists,))
            writer.start()
            results = await asyncio.gather(*tasks)
            await asyncio.get_running_loop().run_in_executor(None, writer.join, 30)
            assert results == [list(range(5))] * len(lists)

    run(main())


def _fill_all(lists: list[Any]) -> None:
    for i in range(5):
        for lst in lists:
            lst.append(i)


def test_async_wait_until(m: procshare.SyncManager) -> None:
    lst = m.list()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            p = FORK.Process(target=children.append_numbers, args=(lst, 0, 10))
            asyncio.get_running_loop().call_later(0.05, p.start)
            value = await client.proxy(lst).wait_until(lambda v: len(v) == 10, timeout=30)
            assert value == list(range(10))
            await asyncio.get_running_loop().run_in_executor(None, p.join, 30)
            with pytest.raises(TimeoutError):
                await client.proxy(lst).wait_until(lambda v: len(v) > 10, timeout=0.1)

    run(main())


def test_wrong_authkey_and_dead_server() -> None:
    other = procshare.Manager(ctx=FORK)

    async def main() -> None:
        with pytest.raises(procshare.AuthenticationError):
            await procshare.aio.connect(other.address, b"wrong")
        client = await procshare.aio.connect(other.address, other._authkey)
        q = await client.Queue()
        pending = asyncio.create_task(q.get())
        await asyncio.sleep(0.05)
        os.kill(other._process.pid, signal.SIGKILL)
        with pytest.raises(procshare.ConnectionLost):
            await pending
        with pytest.raises(procshare.ConnectionLost):
            await q.put(1)
        await client.close()

    run(main())
    other.shutdown()


def _server_calls(m: procshare.SyncManager) -> int:
    return int(m._channel().control("stats")["counters"]["calls"])


def test_reads_made_again_are_leased_and_never_stale(m: procshare.SyncManager) -> None:
    """As for the sync proxies: a read made again costs no call while the object stays as it
    is, and a write finished anywhere else (here: by this process's sync connection, which
    the async one knows nothing of) is seen by the next read."""
    d, v = m.dict(k=1), m.Value("i", 1)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ad, av = client.proxy(d), client.proxy(v)
            for _ in range(2):
                assert await ad["k"] == 1 and await av.get() == 1 and await ad.len() == 1
            if client._channel.leases is None:
                pytest.skip("leases are off on this platform")
            before = _server_calls(m)
            for _ in range(5):
                assert await ad["k"] == 1 and await av.get() == 1 and await ad.len() == 1
            assert _server_calls(m) == before
            for i in range(2, 6):
                d["k"] = i  # done and answered before the next read begins
                v.value = i
                assert await ad["k"] == i and await av.get() == i

    run(main())


def test_a_task_polling_a_leased_flag_lets_the_others_run(m: procshare.SyncManager) -> None:
    """A leased read answers without a round trip, yet must still let the loop's other tasks
    run, as a round trip would: here the task that sets the flag polled."""

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            event = await client.Event()

            async def setter() -> None:
                await asyncio.sleep(0.01)
                await event.set()

            task = asyncio.create_task(setter())
            for _ in range(1_000_000):  # (bounded: without yielding it never ends)
                if await event.is_set():
                    break
            assert await event.is_set(), "the setter never ran while the flag was polled"
            await task

    run(main())


def test_a_leased_read_after_the_server_died_raises() -> None:
    other = procshare.Manager(ctx=FORK)

    async def main() -> None:
        client = await procshare.aio.connect(other.address, other._authkey)
        d = await client.dict(k=1)
        assert await d["k"] == 1 and await d["k"] == 1  # leased from here on
        os.kill(other._process.pid, signal.SIGKILL)
        other._process.join(10)
        with pytest.raises(procshare.ConnectionLost):
            for _ in range(1_000_000):  # (bounded: a lease must not answer for ever)
                await d["k"]
        await client.close()

    run(main())
    other.shutdown()


def test_a_get_that_times_out_loses_no_item(m: procshare.SyncManager) -> None:
    """``asyncio.wait_for`` cancels the waiting task: its request is withdrawn, and the next
    item goes to whoever asks for it, not to the abandoned request."""

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            q = await client.Queue()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(q.get(), 0.05)
            await q.put("precious")
            assert await asyncio.wait_for(q.get(), 10) == "precious"

    run(main())


def test_an_acquire_that_times_out_is_not_granted_later(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            lock = await client.Lock()
            assert await lock.acquire()

            async def other() -> None:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(lock.acquire(), 0.05)

            await asyncio.create_task(other())
            await lock.release()
            assert await asyncio.wait_for(lock.acquire(), 10)  # not taken by the abandoned one

    run(main())


def test_a_cancelled_condition_wait_ends_holding_the_lock(m: procshare.SyncManager) -> None:
    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            cond = await client.Condition()

            async def waiter() -> str:
                await cond.acquire()
                try:
                    await cond.wait()
                except asyncio.CancelledError:
                    await cond.release()  # held again: this must not fail
                    return "released"
                return "woken"

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.05)
            task.cancel()
            assert await task == "released"
            assert await cond.acquire(False)
            await cond.release()

    run(main())


def test_named_objects_from_asyncio_are_the_sync_clients_too(m: procshare.SyncManager) -> None:
    jobs = m.named("aio-jobs").Queue()
    jobs.put("from sync")

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            q = await client.named("aio-jobs").Queue()
            assert await q.get() == "from sync"
            config = await client.named("aio-config").dict({"mode": "async"})
            again = await client.named("aio-config").dict({"mode": "ignored"})
            assert await again.getitem("mode") == "async"
            assert await config.len() == 1
            names = await client.names()
            assert names["aio-jobs"] == "Queue" and names["aio-config"] == "dict"
            with pytest.raises(procshare.NameTakenError):
                await client.named("aio-jobs").dict()
            with pytest.raises(AttributeError):
                client.named("aio-jobs").stats
            await client.delete("aio-config")
            with pytest.raises(KeyError):
                await client.delete("aio-config")

    run(main())
    assert m.named("aio-config").dict({"new": 1}).copy() == {"new": 1}  # the name was free


# -- the typed proxies: every kind, every method, the SyncManager's factories ------------------

#: dunder methods of the kinds' tables and the named form the async proxies give them (the
#: operators ``__or__``, ``__iadd__``, ... stay reachable through ``call``)
_NAMED_FORMS = {
    "__getitem__": "getitem",
    "__setitem__": "setitem",
    "__delitem__": "delitem",
    "__contains__": "contains",
    "__len__": "len",
    "__repr__": "repr",
    "__setattr__": "setattr",
    "__delattr__": "delattr",
}


def test_every_kind_has_a_typed_async_proxy_offering_each_of_its_methods() -> None:
    from procshare._client._aproxies import ASYNC_PROXIES
    from procshare._kinds import KINDS

    assert set(ASYNC_PROXIES) == set(KINDS) - {"LiveIterator"}
    for kind, cls in ASYNC_PROXIES.items():
        for method in KINDS[kind].methods:
            if method.startswith("_") and method not in _NAMED_FORMS:
                continue  # an operator, or internal (``_is_owned``)
            name = _NAMED_FORMS.get(method, method)
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
    namespace_reads = ASYNC_PROXIES["Namespace"]
    assert callable(namespace_reads.getattr)  # type: ignore[attr-defined]


def test_the_async_client_has_every_factory_of_the_sync_manager_for_a_built_in_kind() -> None:
    import inspect

    from procshare._kinds import KINDS

    for kind in set(KINDS) - {"LiveIterator"}:
        sync = getattr(procshare.SyncManager, kind)
        made = getattr(procshare.aio.AsyncClient, kind)
        assert inspect.iscoroutinefunction(made), kind
        sync_params = list(inspect.signature(sync).parameters)
        assert list(inspect.signature(made).parameters) == sync_params, kind


def test_factories_and_proxies_arriving_in_replies_are_the_typed_classes(
    m: procshare.SyncManager,
) -> None:
    A = procshare.aio

    async def main() -> None:
        async with await A.connect(m.address, m._authkey) as client:
            d = await client.dict()
            lock = await client.Lock()
            await d.setitem("lock", lock)
            assert isinstance(d, A.AsyncDictProxy)
            again = await d.getitem("lock")  # a proxy in a reply
            assert isinstance(again, A.AsyncAcquirer)
            assert isinstance(client.proxy(m.Queue()), A.AsyncQueue)
            assert isinstance(await client.named("typed").Event(), A.AsyncEvent)
            assert await again.acquire() is True and await lock.locked()
            await again.release()

    run(main())


def test_bounded_semaphore_barrier_action_value_lock_and_set_from_asyncio(
    m: procshare.SyncManager,
) -> None:
    flags = m.list()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            sem = await client.BoundedSemaphore(1)
            async with sem:
                assert await sem.get_value() == 0
            with pytest.raises(ValueError):
                await sem.release()  # over-released, as threading.BoundedSemaphore says
            barrier = await client.Barrier(2, action=_AppendTo(flags), timeout=10)
            assert await barrier.parties() == 2
            indexes = await asyncio.gather(barrier.wait(), barrier.wait())
            assert sorted(indexes) == [0, 1]
            value = await client.Value("i", 1, lock=False)
            assert await value.increment(2) == 3 and await value.swap(7) == 3
            shared = await client.set({1, 2})
            assert await shared.union({3}) == {1, 2, 3}
            assert await shared.issubset({1, 2, 5}) is True
            await shared.difference_update({1})
            assert await shared.copy() == {2}

    run(main())
    assert list(flags) == ["tripped"]


class _AppendTo:
    """A picklable barrier action: appends to a shared list (on the server's worker)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self) -> None:
        self.target.append("tripped")


# -- pipelines ---------------------------------------------------------------------------------


def test_a_pipeline_from_asyncio_is_one_round_trip_and_atomic(m: procshare.SyncManager) -> None:
    d, lst = m.dict(), m.list()
    on_redis = m.stats().get("backend") == "redis"  # (Redis counts no calls: Redis's own tests)
    before = None if on_redis else m._channel().control("stats")["counters"]["calls"]

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ad, alst = client.proxy(d), client.proxy(lst)
            async with client.pipeline() as p:
                for i in range(100):
                    p(ad)[i] = i * i
                    p(alst).append(i)
                size = p(ad).len()
                missing = p(ad).getitem("missing")
                p(ad).setitem("named", 1)
            assert size.value == 100
            assert isinstance(missing.error, KeyError)
            async with ad.pipeline() as pd:
                pd.delitem(0)
                got = pd.get(1)
            assert got.value == 1
            with pytest.raises(TypeError, match="async with"), client.pipeline():
                pass

    run(main())
    assert len(d) == 100 and d[99] == 99 * 99 and 0 not in d and d["named"] == 1
    assert lst[:] == list(range(100))
    if before is not None:
        counters = m._channel().control("stats")["counters"]
        assert counters["calls"] - before < 20  # (batches, not 203 calls)


def test_an_asyncio_pipeline_refuses_to_wait_and_objects_of_two_servers(
    m: procshare.SyncManager,
) -> None:
    lock = m.Lock()
    with procshare.Manager(ctx=FORK) as other:
        elsewhere = other.dict()

        async def main() -> None:
            async with (
                await procshare.aio.connect(m.address, m._authkey) as client,
                await procshare.aio.connect(other.address, other._authkey) as c2,
            ):
                alock = client.proxy(lock)
                await alock.acquire()
                async with alock.pipeline() as pl:
                    again = pl.acquire()
                assert isinstance(again.error, procshare.ProcshareError)
                await alock.release()
                p = client.pipeline()
                p(alock)
                with pytest.raises(procshare.ProcshareError, match="same server"):
                    p(c2.proxy(elsewhere))

        run(main())


# -- cached reads ------------------------------------------------------------------------------


def test_an_asyncio_cache_answers_locally_and_sees_other_writers(m: procshare.SyncManager) -> None:
    d = m.dict(a=1)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ad = await client.proxy(d).cache()
            assert ad.cached and await ad["a"] == 1 and await ad.contains("a")
            assert await ad.len() == 1 and await ad.get("zz") is None
            calls = m.stats()["counters"]["calls"]
            for _ in range(100):
                assert await ad.getitem("a") == 1
            assert m.stats()["counters"]["calls"] == calls  # no round trip for those reads
            await ad.setitem("mine", [1])  # a writer reads its own write at once
            assert await ad.getitem("mine") == [1]
            got = await ad.getitem("mine")
            got.append(2)  # (a copy: the replica is not changed through it)
            assert await ad.getitem("mine") == [1]
            # another connection writes: its change event brings the write to the replica
            await asyncio.to_thread(d.__setitem__, "a", 2)
            for _ in range(5000):
                if await ad.getitem("a") == 2:
                    break
                await asyncio.sleep(0.001)
            assert await ad.getitem("a") == 2
            assert sorted(await ad.keys()) == ["a", "mine"]
            await ad.cache(False)
            assert not ad.cached
            calls = m.stats()["counters"]["calls"]
            assert await ad.getitem("a") == 2
            assert m.stats()["counters"]["calls"] > calls  # asked the server again

    run(main())


def test_every_cacheable_kind_from_asyncio(m: procshare.SyncManager) -> None:
    lst, ns, v = m.list([3, 1, 2]), m.Namespace(x=1), m.Value("i", 1)
    arr, lock = m.Array("i", [1, 2]), m.Lock()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            al = await client.proxy(lst).cache()
            await al.sort()
            assert await al.getitem(slice(None)) == [1, 2, 3] and await al.index(2) == 1
            ans = await client.proxy(ns).cache()
            await ans.call("__setattr__", "y", 2)
            assert await ans.call("__getattribute__", "y") == 2
            av = await client.proxy(v).cache()
            await av.set(5)
            assert await av.get() == 5
            aa = await client.proxy(arr).cache()
            await aa.setitem(0, 9)
            assert await aa.tolist() == [9, 2] and await aa.len() == 2
            with pytest.raises(TypeError, match="cannot be cached"):
                await client.proxy(lock).cache()

    run(main())
    assert lst[:] == [1, 2, 3] and ns.y == 2 and v.value == 5 and list(arr[:]) == [9, 2]


def test_an_asyncio_cache_whose_server_died_raises() -> None:
    other = procshare.Manager(ctx=FORK)
    d = other.dict(a=1)

    async def main() -> None:
        client = await procshare.aio.connect(other.address, other._authkey)
        try:
            ad = await client.proxy(d).cache()
            assert await ad.getitem("a") == 1
            os.kill(other._process.pid, signal.SIGKILL)
            other._process.join(10)
            with pytest.raises(procshare.ConnectionLost):
                for _ in range(5000):  # (until the loss is noticed: never a stale answer)
                    await ad.getitem("a")
                    await asyncio.sleep(0.001)
        finally:
            await client.close()

    run(main())
    other.shutdown()


# -- reads that come with a lock's grant -------------------------------------------------------


def test_an_asyncio_lock_grant_brings_the_reads_of_its_last_hold(m: procshare.SyncManager) -> None:
    v, d, lock = m.Value("i", 7), m.dict(k="x"), m.Lock()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            if client._channel.leases is None:
                pytest.skip("leases are off on this platform")
            av, ad, alock = client.proxy(v), client.proxy(d), client.proxy(lock)
            async with alock:  # learns what is read while it is held
                assert await av.get() == 7 and await ad.getitem("k") == "x"
            async with alock:
                before = _server_calls(m)
                assert await av.get() == 7 and await ad.getitem("k") == "x"
                assert _server_calls(m) == before  # they came with the grant
            await asyncio.to_thread(setattr, v, "value", 8)  # another connection writes
            async with alock:
                assert await av.get() == 8  # never the value of an older grant
                await av.set(9)
                assert await av.get() == 9  # the holder's own write is read back

    run(main())
    assert v.value == 9


def test_a_cancelled_leasing_acquire_is_not_granted_later(m: procshare.SyncManager) -> None:
    v, lock = m.Value("i", 1), m.Lock()

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            av, alock = client.proxy(v), client.proxy(lock)
            async with alock:
                await av.get()
            lock.acquire()  # held elsewhere: the next acquire waits on the server
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(alock.acquire(), 0.2)
            lock.release()
            assert lock.acquire(timeout=5)  # the withdrawn request was not granted it
            lock.release()

    run(main())


def test_random_cancellations_never_lose_an_item_nor_keep_a_permit(
    m: procshare.SyncManager,
) -> None:
    """Tasks acquire a semaphore of 2 permits, move items between two queues and release
    (the release by a shielded task of its own: another owner than the taker, as
    ``threading`` allows), while they are cancelled at random moments (seeded): afterwards
    both permits are free and every item is in one of the queues exactly once (a get
    cancelled as it won gives its item back)."""
    import random

    sem, src, dst = m.Semaphore(2), m.Queue(), m.Queue()
    items = list(range(60))
    for item in items:
        src.put(item)
    rng = random.Random(20261207)

    async def main() -> None:
        async with await procshare.aio.connect(m.address) as client:
            asem, asrc, adst = client.proxy(sem), client.proxy(src), client.proxy(dst)
            # (a shielded call goes on after its caller was cancelled: the test waits for
            # them all before it looks, or it would race the last releases and puts)
            in_flight: set[asyncio.Future[Any]] = set()

            def shielded(call: Any) -> Any:
                inner = asyncio.ensure_future(call)
                in_flight.add(inner)
                inner.add_done_callback(in_flight.discard)
                return asyncio.shield(inner)

            async def mover() -> None:
                while True:
                    await asem.acquire()
                    try:
                        item = await asrc.get()
                        await shielded(adst.put(item))  # (an item got is put, always)
                    finally:
                        await shielded(asem.release())

            for _ in range(30):
                tasks = [asyncio.create_task(mover()) for _ in range(4)]
                await asyncio.sleep(rng.uniform(0, 0.03))
                for task in tasks:
                    await asyncio.sleep(rng.uniform(0, 0.005))
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if await asrc.empty():  # (all moved: move them back, and go on)
                    while not await adst.empty():
                        await asrc.put(await adst.get())
            await asyncio.gather(*in_flight)
            assert await asem.acquire(False) and await asem.acquire(False)
            await asem.release()
            await asem.release()

    run(main())
    seen = []
    for q in (src, dst):
        while not q.empty():
            seen.append(q.get_nowait())
    assert sorted(seen) == items


def test_random_cancellations_of_condition_waiters_leave_the_lock_free(
    m: procshare.SyncManager,
) -> None:
    """Consumers wait on a Condition for a shared count to move, a producer moves it and
    notifies, and consumers are cancelled at random moments (seeded), inside their wait or
    not: each cancelled wait ends holding the lock (``async with`` gives it back), so the
    producer never stalls, and at the end the lock is free."""
    import random

    count, cond = m.Value("i", 0), m.Condition()
    rng = random.Random(7)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            acount, acond = client.proxy(count), client.proxy(cond)

            async def consumer() -> None:
                while True:
                    async with acond:
                        seen = await acount.get()
                        while await acount.get() == seen:
                            await acond.wait(1)

            async def producer(rounds: int) -> None:
                for _ in range(rounds):
                    async with acond:
                        await acount.increment(1)
                        await acond.notify_all()
                    await asyncio.sleep(0)

            for _ in range(15):
                consumers = [asyncio.create_task(consumer()) for _ in range(3)]
                making = asyncio.create_task(producer(5))
                await asyncio.sleep(rng.uniform(0, 0.02))
                for task in consumers:
                    await asyncio.sleep(rng.uniform(0, 0.003))
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
                await asyncio.wait_for(making, 30)  # (never stalled by a waiter's lock)
            assert await acond.acquire(False)
            await acond.release()
            assert await acount.get() == 75

    run(main())


def test_a_release_whose_task_is_cancelled_as_it_is_sent_still_releases(
    m: procshare.SyncManager,
) -> None:
    """A call that does not wait (a release, a notify) is made even if its task is cancelled
    right after it was sent, as a request already sent to a server is: the lock is free
    after each such cancelled release."""

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            lock = await client.Lock()
            for _ in range(30):
                assert await lock.acquire()
                releasing = asyncio.create_task(lock.release())
                await asyncio.sleep(0)  # (it runs up to its first await: sent)
                releasing.cancel()
                await asyncio.gather(releasing, return_exceptions=True)
                assert await lock.acquire(False), "a cancelled release left the lock held"
                await lock.release()

    run(main())


def test_an_item_taken_by_a_task_that_ended_stays_taken_when_the_client_closes(
    m: procshare.SyncManager,
) -> None:
    """A task takes an item and ends without another call; the client closes on purpose: the
    item is its own (it arrived), not given back to the queue as a killed client's is."""
    q = m.Queue()
    q.put("once")

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            aq = client.proxy(q)
            assert await asyncio.create_task(aq.get()) == "once"

    run(main())
    for _ in range(1000):  # (until the server has seen the asyncio connection end)
        if not any(s.get("name") == "asyncio" for s in m.stats()["sessions"]):
            break
        time.sleep(0.01)
    assert q.empty() and q.qsize() == 0


def test_random_cancellations_at_a_barrier_never_break_it_nor_let_a_round_pass_short(
    m: procshare.SyncManager,
) -> None:
    """Two tasks and a third that is cancelled at a random moment (seeded) meet at a Barrier
    of 3, ten times: a cancelled party that had not passed leaves without breaking it
    (procshare's rule for an interrupted wait) and a helper takes its place; every round
    passes with three parties, and the barrier ends whole with nobody waiting."""
    import random

    barrier = m.Barrier(3)
    rng = random.Random(11)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ab = client.proxy(barrier)
            for _ in range(10):
                steady = [asyncio.create_task(ab.wait()) for _ in range(2)]
                flaky = asyncio.create_task(ab.wait())
                await asyncio.sleep(rng.uniform(0, 0.01))
                flaky.cancel()
                await asyncio.gather(flaky, return_exceptions=True)
                for _ in range(2000):  # (until the round passed, or the two wait for a third)
                    if all(t.done() for t in steady):
                        break
                    if await ab.n_waiting() == 2:
                        indexes = await asyncio.wait_for(asyncio.gather(ab.wait(), *steady), 30)
                        assert sorted(indexes) == [0, 1, 2]
                        break
                    await asyncio.sleep(0.005)
                assert not await ab.broken()
                assert sorted(await asyncio.gather(*steady)) in ([0, 1], [0, 2], [1, 2])
            assert not await ab.broken() and await ab.n_waiting() == 0

    run(main())


def test_random_cancellations_of_joinable_queue_consumers_still_let_join_return(
    m: procshare.SyncManager,
) -> None:
    """Consumers take items of a JoinableQueue and mark each done, and are cancelled at
    random moments (seeded) then replaced: every item is processed once, and ``join()``
    returns (a get won by a cancelled consumer gave its item back, unfinished)."""
    import random

    jq = m.JoinableQueue()
    for i in range(40):
        jq.put(i)
    rng = random.Random(5)

    async def main() -> None:
        async with await procshare.aio.connect(m.address, m._authkey) as client:
            ajq = client.proxy(jq)
            done: list[int] = []

            async def consumer() -> None:
                while True:
                    item = await ajq.get()
                    done.append(item)  # (processed: nothing awaits between get and this)
                    await asyncio.shield(ajq.task_done())

            while len(done) < 40:
                consumers = [asyncio.create_task(consumer()) for _ in range(3)]
                await asyncio.sleep(rng.uniform(0, 0.01))
                for task in consumers:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
            await asyncio.wait_for(ajq.join(), 30)
            assert sorted(done) == list(range(40))
            assert await ajq.empty()

    run(main())
