"""``dict(proxy)``: a dict read key by key after ``keys()``, answered from one leased copy
(``_client/_scans``), across real processes.

Each test checks what the stdlib's Manager would answer (the copy a plain ``dict`` makes of
the same items), and, where it matters, that the copy was used (the server counts few calls)
or not (a change since, a poster, a mutable value). Changes are made by other processes that
finish before the next read: a read must see them, as a round trip would.
"""

from __future__ import annotations

from typing import Any

import pytest

from procshare._client._scans import SCAN_AFTER, SCAN_MIN
from tests import _children
from tests._threads import run_threads

N = 500


def _calls(manager: Any) -> int:
    return int(manager._channel().control("stats")["counters"]["calls"])


def _leasing(proxy: Any) -> bool:
    return proxy._channel().leases is not None


def _assert_copy_held(d: Any) -> None:
    """The scan's reads are answered from its copy from here on (where leases are on)."""
    if _leasing(d):
        assert d._scan is not None and d._scan.copy is not None


@pytest.fixture
def items() -> dict[Any, Any]:
    return {**{i: i * 2 for i in range(N)}, "t": (1, "x"), "s": "text", "n": None}


def test_dict_of_a_proxy_is_the_dict_and_costs_a_few_calls(manager: Any, items: Any) -> None:
    d = manager.dict(items)
    before = _calls(manager)
    assert dict(d) == items
    assert {k: d[k] for k in d.keys()} == items  # noqa: SIM118 - the proxy's keys()
    if _leasing(d):
        # two keys() and, in each scan, its first reads and the copy: not a call per key
        assert _calls(manager) - before <= 2 * (SCAN_AFTER + 3)


def test_a_change_made_after_the_copy_is_read_from_the_server(
    manager: Any, run: Any, items: Any
) -> None:
    d = manager.dict(items)
    keys = d.keys()
    got = [d[k] for k in keys[: SCAN_AFTER + 2]]
    _assert_copy_held(d)
    run(_children.set_item, d, keys[20], "changed")  # another process, finished
    got += [d[k] for k in keys[SCAN_AFTER + 2 :]]
    assert dict(zip(keys, got, strict=True)) == {**items, keys[20]: "changed"}


def test_a_key_deleted_during_the_scan_raises_key_error(manager: Any, run: Any, items: Any) -> None:
    d = manager.dict(items)
    keys = d.keys()
    for k in keys[: SCAN_AFTER + 1]:
        assert d[k] == items[k]
    _assert_copy_held(d)
    run(_children.delete_item, d, keys[10])
    with pytest.raises(KeyError):
        d[keys[10]]
    assert dict(d) == {k: v for k, v in items.items() if k != keys[10]}


def test_mutable_values_come_fresh_from_the_server(manager: Any, items: Any) -> None:
    d = manager.dict({**items, "l": [1, 2], "d": {"a": 1}})
    keys = d.keys()
    for k in keys[: SCAN_AFTER + 1]:
        d[k]
    _assert_copy_held(d)
    first = d["l"]
    first.append(3)
    assert d["l"] == [1, 2]
    whole = dict(d)
    whole["d"]["b"] = 2
    assert dict(d) == {**items, "l": [1, 2], "d": {"a": 1}}


def test_keys_of_another_type_that_compare_equal_are_not_taken_for_the_scan(
    manager: Any,
) -> None:
    d = manager.dict({i: f"int {i}" for i in range(SCAN_MIN * 2)})
    keys = d.keys()
    assert [d[float(k)] for k in keys] == [f"int {i}" for i in range(SCAN_MIN * 2)]
    with pytest.raises(KeyError):
        d[0.5]


def test_reads_out_of_order_end_the_scan_and_stay_right(manager: Any, items: Any) -> None:
    d = manager.dict(items)
    keys = d.keys()
    shuffled = keys[1::2] + keys[::2]
    assert {k: d[k] for k in shuffled} == items
    assert d._scan is None


def test_a_dict_another_process_posts_to_is_read_plainly_and_right(
    manager: Any, ctx: Any, items: Any
) -> None:
    d = manager.dict(items)
    started, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_children.post_sets, args=(d, ["w0", "w1"], started, stop))
    writer.start()
    try:
        assert started.wait(30)
        for _ in range(3):
            copy = dict(d)
            assert {k: v for k, v in copy.items() if k not in ("w0", "w1")} == items
            assert type(copy["w0"]) is int and copy["w1"] >= copy["w0"] - 1
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0


def test_a_child_reads_through_its_own_connection(manager: Any, ctx: Any, items: Any) -> None:
    d = manager.dict(items)
    keys = d.keys()
    for k in keys[: SCAN_AFTER + 1]:
        d[k]
    _assert_copy_held(d)
    out = ctx.Queue()
    child = ctx.Process(target=_children.read_keys, args=(d, keys[SCAN_AFTER + 1 :], out))
    child.start()
    assert out.get(timeout=30) == {k: items[k] for k in keys[SCAN_AFTER + 1 :]}
    child.join(30)
    assert child.exitcode == 0
    assert {k: d[k] for k in keys[SCAN_AFTER + 1 :]} == {
        k: items[k] for k in keys[SCAN_AFTER + 1 :]
    }


def test_threads_scanning_one_proxy_all_read_the_dict(manager: Any, items: Any) -> None:
    d = manager.dict(items)
    results: list[dict[Any, Any]] = []
    run_threads(lambda: results.extend(dict(d) for _ in range(5)), [()] * 4)
    assert len(results) == 20 and all(r == items for r in results)
