"""The scheduling policy's pieces (``_sched``): the spin setting, the load gauge, the CPU moves."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

import procshare
from procshare import _sched
from procshare._sched import (
    DEFAULT_SPIN,
    LOADED_HOLD,
    QUIET_READINGS,
    READ_EVERY,
    SUSPECT_READINGS,
    LoadGauge,
    Stepper,
    TaskStates,
    configured_spin,
    parse_spin,
    quota_cpus,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("auto", None),
        ("", None),
        (0, 0.0),
        (False, 0.0),
        ("off", 0.0),
        ("OFF", 0.0),
        (True, DEFAULT_SPIN),
        (0.0002, 0.0002),
        ("50us", 50e-6),
        ("0.2ms", 0.2e-3),
        ("1s", 1.0),
        (" 0.00005 ", 0.00005),
    ],
)
def test_a_spin_setting_is_read_as_seconds(value: object, seconds: float | None) -> None:
    assert parse_spin(value) == pytest.approx(seconds) if seconds else parse_spin(value) == seconds


@pytest.mark.parametrize("value", [-1, "-5us", "fast", "5 parsecs", float("nan"), [50]])
def test_a_bad_spin_setting_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="spin"):
        parse_spin(value)


def test_the_environment_sets_spin_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sched, "_CPUS", 2)
    monkeypatch.delenv("PROCSHARE_SPIN", raising=False)
    assert configured_spin() == DEFAULT_SPIN
    monkeypatch.setenv("PROCSHARE_SPIN", "off")
    assert configured_spin() == 0.0
    assert configured_spin("20us") == pytest.approx(20e-6)  # an explicit setting wins
    monkeypatch.setenv("PROCSHARE_SPIN", "sometimes")
    with pytest.raises(ValueError, match=r"\$PROCSHARE_SPIN"):
        configured_spin()


def test_one_cpu_never_spins_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sched, "_CPUS", 1)
    monkeypatch.delenv("PROCSHARE_SPIN", raising=False)
    assert configured_spin() == 0.0


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000", None), ("200000 100000", 2.0), ("50000 100000", 1.0), ("garbage", None)],
)
def test_a_cgroup_quota_bounds_the_cpus(text: str, cpus: float | None) -> None:
    assert quota_cpus(text) == cpus


def test_the_runnable_count_includes_the_caller() -> None:
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("no /proc/loadavg")
    assert _sched.runnable_tasks() >= 1
    assert _sched.available_cpus() >= 1


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Runnable counts the gauge will read, in order (it counts how many it took)."""
    values: list[int] = []
    taken = [0]

    def fake() -> int:
        taken[0] += 1
        return values.pop(0)

    monkeypatch.setattr(_sched, "runnable_tasks", fake)
    yield values
    assert not values, "the gauge read fewer counts than the test expected"


def test_a_process_not_ours_waiting_for_a_cpu_means_loaded(readings: list[int]) -> None:
    gauge = LoadGauge(cpus=2)
    readings.extend([2, 3, 4])
    assert not gauge.loaded(10.0, ours=2)  # us alone, fitting the CPUs
    assert not gauge.loaded(10.1, ours=3)  # oversubscribed, but by our own: they yield
    assert gauge.loaded(10.2, ours=3)  # one more than ours and than the CPUs
    assert gauge.loaded(10.2 + READ_EVERY / 2, ours=3)  # (too soon to read again)


def test_ours_read_tell_a_computing_process_among_them(readings: list[int]) -> None:
    """Four clients that wait on each other and one CPU-bound process on two CPUs: the count
    (3) is no more than may be ours (5), but the clients' states show that only two of the
    runnable are ours; a lone such reading is a race with a client going to sleep."""
    gauge = LoadGauge(cpus=2)
    readings.extend([3] * (SUSPECT_READINGS + 1))
    assert not gauge.loaded(10.0, ours=5, ours_running=lambda: 3)  # all of them ours
    now = 10.0
    for _ in range(SUSPECT_READINGS - 1):
        now += READ_EVERY * 1.01
        assert not gauge.loaded(now, ours=5, ours_running=lambda: 2)
    now += READ_EVERY * 1.01
    assert gauge.loaded(now, ours=5, ours_running=lambda: 2)  # every time: loaded


def test_ours_are_read_only_where_the_count_cannot_tell(readings: list[int]) -> None:
    gauge = LoadGauge(cpus=2)
    readings.extend([2, 6])

    def never() -> int:
        raise AssertionError("read although the count told")

    assert not gauge.loaded(10.0, ours=5, ours_running=never)  # fits the CPUs
    assert gauge.loaded(11.0, ours=5, ours_running=never)  # more than ours: loaded


def test_task_states_count_the_runnable() -> None:
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc")
    ctx = procshare.get_context("fork")
    sleeper = ctx.Process(target=time.sleep, args=(30,))
    spinner = ctx.Process(target=_spin_for, args=(30.0,))
    sleeper.start()
    spinner.start()
    try:
        states = TaskStates()
        me = f"/proc/self/task/{threading.get_native_id()}/stat"
        states.watch([me, f"/proc/{sleeper.pid}/stat", f"/proc/{spinner.pid}/stat"])
        deadline = time.monotonic() + 10
        while states.running() != 2 and time.monotonic() < deadline:
            pass  # (until the spinner spins: runnable, whether on a CPU or waiting for one)
        assert states.running() == 2  # this thread and the spinner
        states.watch([f"/proc/{sleeper.pid}/stat"])
        assert states.running() == 0
        states.forget()
        assert states.running() == 0
    finally:
        for p in (sleeper, spinner):
            p.kill()
            p.join(10)


def _spin_for(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_loaded_stands_a_while_then_ends_after_quiet_readings_in_a_row(
    readings: list[int],
) -> None:
    gauge = LoadGauge(cpus=2)
    readings.extend([5] + [1] * QUIET_READINGS)
    assert gauge.loaded(10.0, ours=2)
    assert gauge.loaded(10.0 + READ_EVERY * 1.5, ours=2)  # a quiet reading: still holds
    now = 10.0 + LOADED_HOLD * 1.5
    for _ in range(QUIET_READINGS - 2):  # past the hold: quiet, but not long enough yet
        assert gauge.loaded(now, ours=2)
        now += READ_EVERY * 1.01
    assert not gauge.loaded(now, ours=2)  # (the last quiet reading in a row)


def test_a_loaded_reading_among_quiet_ones_starts_the_count_again(readings: list[int]) -> None:
    gauge = LoadGauge(cpus=2)
    readings.extend([5, 1, 1, 5] + [1] * QUIET_READINGS)
    now = 10.0
    for _ in range(4):
        assert gauge.loaded(now, ours=2)
        now += LOADED_HOLD * 1.01
    for _ in range(QUIET_READINGS - 1):
        assert gauge.loaded(now, ours=2)
        now += READ_EVERY * 1.01
    assert not gauge.loaded(now, ours=2)


def test_the_gauge_reads_at_most_every_read_every(readings: list[int]) -> None:
    gauge = LoadGauge(cpus=2)
    readings.extend([1, 1])
    for i in range(10):  # ten questions within READ_EVERY: one reading
        gauge.loaded(10.0 + i * READ_EVERY / 20, ours=1)
    gauge.loaded(10.0 + READ_EVERY * 1.01, ours=1)


needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs and affinity masks",
)


@needs_two_cpus
def test_a_thread_moves_onto_a_cpu_and_keeps_its_mask() -> None:
    mask = os.sched_getaffinity(0)
    target = max(mask)
    stepper = Stepper()
    assert stepper.toward(target) is True or _sched.current_cpu() != target
    assert os.sched_getaffinity(0) == mask  # nothing stays pinned
    assert stepper.toward(target) is False  # at most every STEP_EVERY


@needs_two_cpus
def test_a_thread_moves_off_a_cpu_and_keeps_its_mask() -> None:
    mask = os.sched_getaffinity(0)
    here = _sched.current_cpu()
    stepper = Stepper()
    stepper.aside(here)
    assert os.sched_getaffinity(0) == mask
    assert Stepper().toward(-1) is False  # an unknown CPU: no move


def _compute(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_a_client_tells_the_server_it_computed_between_calls_or_slept() -> None:
    """``Flag.THINKS`` and the slept mark, as the channel works them out from CPU time."""
    with procshare.Manager() as m:
        d = m.dict()
        channel = d._channel()
        for i in range(50):
            d[i] = i
        _compute(0.005)
        assert channel._since_last_call() is True
        d[0] = 0
        time.sleep(0.005)
        channel._since_last_call()  # (a sleep costs some CPU too: 17-70 us seen)
        assert channel._slept is True
