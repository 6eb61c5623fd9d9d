"""When to busy-poll and where to run: the scheduling policy of clients and the server alike.

Most of a round trip between two processes is the sleep and wake-up of the one that waits. So
on a machine with a CPU to spare, both sides busy-poll (*spin*) for a short while before they
sleep, and a reply lands on a process that is still running. On a machine whose CPUs are busy
(the usual case: people use a manager because their workers compute), a spin holds a CPU that
a worker, the server or the client itself needs, and its yields hand the CPU to a computing
process for the rest of that process's time slice (milliseconds). So:

* **the server advises, with every reply** (``Flag.SPIN``): it knows which runnable tasks may
  be its own (its threads and the clients that called lately), reads how many are runnable
  (``/proc/loadavg``, ~0.5 us, at most every ``READ_EVERY``: ``LoadGauge``), and advises to
  spin only while no other process waits for a CPU, and no client of its computes between
  its calls (``Flag.THINKS``, measured by the client in CPU time, ``THINK_AFTER`` of it and at
  least ``THINK_SHARE`` of the time between its calls, its spins left out: the spin would hold
  the CPU that client, or the server thread it wakes, needs). Where the count alone cannot
  tell (more runnable than CPUs, but no more than may be ours: clients contending for a lock,
  and one computing process), it reads the states of its few local clients and its own threads
  (``TaskStates``): a runnable task that is none of them, in readings in a row, is a process
  that computes. The server spins by the same advice,
  for ``spin`` after its last activity; so a client spins only for a call made within that
  long of its last reply: later, the server sleeps, and the client does better to sleep at
  once, where the request it sends wakes the server on the client's own CPU (a spinning
  client holds it, and the server wakes elsewhere, on an idle CPU that must wake up too).
* **on a busy machine, a lone client shares the server's CPU**: a client asleep on another
  CPU is woken through an inter-processor interrupt, and on a CPU running a worker it may wait
  for the worker's slice to end; on the server's CPU it is woken where the server is about to
  sleep. So it *steps toward* the server's CPU, and a client about to spin on the server's CPU
  *steps aside* (two spinners on one CPU only slow each other). Both narrow the thread's
  affinity mask for a moment and give it back at once, which moves it now and lets it stay
  where it landed; never more than every ``STEP_EVERY`` seconds; nothing stays pinned. Several
  running clients (``Flag.CROWDED``) stay where they are: they would crowd onto one CPU. The
  server's CPU is known to clients on unix sockets only (a TCP peer may be elsewhere).
* **one switch**: ``spin`` is ``None`` (the default: up to ``DEFAULT_SPIN``), a number of
  seconds, or 0 (never spin, never step). ``$PROCSHARE_SPIN`` (``auto``, ``off``, or a duration
  such as ``50us``) sets it for a process; a server tells its clients its own setting when
  they connect, and a client takes the smaller of the two. A machine (or cgroup quota) with
  one CPU never spins: nobody could run meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time
from collections.abc import Callable
from typing import Final

__all__ = [
    "DEFAULT_SPIN",
    "QUIET_READINGS",
    "SLEPT_AFTER",
    "STEP_EVERY",
    "THINK_AFTER",
    "THINK_SHARE",
    "LoadGauge",
    "Stepper",
    "TaskStates",
    "available_cpus",
    "configured_spin",
    "current_cpu",
    "parse_spin",
    "quota_cpus",
    "runnable_tasks",
]

#: the longest busy-poll by default, on either side
DEFAULT_SPIN: Final = 50e-6
#: seconds between two moves of a thread (stepping aside or toward), at most
STEP_EVERY: Final = 0.01
#: a client that used more CPU time than this between two calls computes between them
#: (``Flag.THINKS``): it holds a CPU, where one that calls back to back mostly waits on the
#: server (the Python between two calls takes a few microseconds; a sleep of a millisecond,
#: ~17 of CPU here)
THINK_AFTER: Final = 50e-6
#: ... and that was on a CPU for at least this share of the time between their starts: a
#: consumer blocked in a wait of a millisecond uses tens of microseconds of CPU to block, wake
#: and call again (on these VMs, 40-160), but it holds no CPU, where one that computes does
THINK_SHARE: Final = 0.25
#: a client that spent this much longer off its CPU than on it between two calls slept
SLEPT_AFTER: Final = 20e-6


def _cgroup_quota() -> float | None:
    """The CPUs a cgroup v2 quota (``cpu.max``) allows this process, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            line = next((x for x in f if x.startswith("0::")), None)
        if line is None:
            return None
        with open(os.path.join("/sys/fs/cgroup" + line[3:].strip(), "cpu.max")) as f:
            return quota_cpus(f.read())
    except OSError:
        return None


def quota_cpus(cpu_max: str) -> float | None:
    """The CPUs a cgroup v2 ``cpu.max`` text (``"200000 100000"``, ``"max 100000"``) allows,
    or None for no quota or an unreadable text."""
    try:
        quota, period = cpu_max.split()
        if quota == "max":
            return None
        return max(1.0, int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, bounded by a cgroup's quota (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def _load_getcpu() -> Callable[[], int]:
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return lambda: -1
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu


#: The CPU the calling thread runs on now (through the vDSO, ~0.1 us), or -1 if unknown.
current_cpu: Callable[[], int] = _load_getcpu()

_CPUS = available_cpus()


class _ProcFile:
    """A small /proc file kept open and read again with ``pread`` (~0.5 us a read)."""

    __slots__ = ("fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def read(self) -> bytes:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return b""
        try:
            return os.pread(self.fd, 256, 0)
        except OSError:
            return b""

    def forget(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


_loadavg = _ProcFile("/proc/loadavg")


def runnable_tasks() -> int:
    """Tasks runnable on the whole machine right now (the caller included), or -1 if unknown."""
    try:
        # "0.52 0.58 0.59 3/467 12345": runnable/total is the fourth field
        field = _loadavg.read().split()[3]
        return int(field[: field.index(b"/")])
    except (IndexError, ValueError):
        return -1


class TaskStates:
    """Which of a few known tasks (processes, threads) are runnable now: each one's ``stat``
    file under ``/proc`` kept open and read again (~1 us a task)."""

    __slots__ = ("_files", "paths")

    def __init__(self) -> None:
        self._files: dict[str, _ProcFile] = {}
        #: what was last given to ``watch``
        self.paths: tuple[str, ...] = ()

    def watch(self, paths: tuple[str, ...]) -> None:
        """Watch these ``/proc/.../stat`` files from now on (and no others). One thread
        at a time."""
        self.paths = paths
        files = self._files
        wanted = set(paths)
        for path in [p for p in files if p not in wanted]:
            files.pop(path).forget()
        for path in wanted:
            if path not in files:
                files[path] = _ProcFile(path)

    def running(self) -> int:
        """How many of them are runnable (state ``R``) now."""
        count = 0
        for file in self._files.values():
            data = file.read()
            # "1234 (comm) R ...": the command may hold anything, so the last ")"
            end = data.rfind(b")")
            if end >= 0 and data[end + 2 : end + 3] == b"R":
                count += 1
        return count

    def forget(self) -> None:
        self.watch(())


#: how often the gauge reads the runnable count, at most, and how long "loaded" stands after a
#: reading found a process that is not ours waiting for a CPU (a client that sleeps is not
#: runnable when it is read: one reading in several finds it, and it must keep the state)
READ_EVERY: Final = 100e-6
LOADED_HOLD: Final = 0.005
#: quiet readings in a row that end a loaded spell (after ``LOADED_HOLD``): with one process
#: computing on two CPUs, a client asleep in its call is not runnable as one reading in two
#: is taken, and a lone quiet reading started spins that shared a CPU with it (measured: 16-26
#: us a dict set, 15 without spinning)
QUIET_READINGS: Final = 4
#: readings in a row that must find a runnable task not among ours, where ours are read, to
#: count it as a process that computes (the states are read after the count: a client that
#: just went to sleep looks foreign once in a while, a computing process every time)
SUSPECT_READINGS: Final = 2


class LoadGauge:
    """Whether the machine is loaded, as the server sees it: it knows which of the runnable
    tasks may be its own (its threads and its running clients), and the rest are not."""

    __slots__ = ("_cpus", "_loaded_until", "_quiet", "_read_at", "_suspect")

    def __init__(self, cpus: int) -> None:
        self._cpus = cpus
        self._read_at = 0.0
        self._loaded_until = 0.0
        self._quiet = QUIET_READINGS  # quiet readings since the last loaded one
        self._suspect = 0  # readings in a row that found a task that may not be ours

    @property
    def loaded_until(self) -> float:
        """Until when (``perf_counter``) the machine counts as loaded, from what was read."""
        return self._loaded_until

    def loaded(self, now: float, ours: int, ours_running: Callable[[], int] | None = None) -> bool:
        """Whether a process that is not ours waits for a CPU, or did lately. ``ours``: how
        many of the runnable tasks may be ours; ``now``: ``time.perf_counter()``;
        ``ours_running``: how many of ours are runnable now, where that can be read (-1
        where not): asked when more tasks run than there are CPUs but no more than may be
        ours, so that one computing process among clients that wait on each other (a lock)
        is told from those clients alone (they would spin while it needs the CPU)."""
        if now >= self._read_at:
            self._read_at = now + READ_EVERY
            running = runnable_tasks()
            foreign = running > self._cpus and running > ours
            if not foreign and running > self._cpus and ours_running is not None:
                mine = ours_running()
                self._suspect = self._suspect + 1 if 0 <= mine < running else 0
                foreign = self._suspect >= SUSPECT_READINGS
            if foreign:
                self._loaded_until = now + LOADED_HOLD
                self._quiet = 0
            elif self._quiet < QUIET_READINGS:
                self._quiet += 1
        return now < self._loaded_until or self._quiet < QUIET_READINGS


def parse_spin(value: object) -> float | None:
    """A ``spin`` setting as seconds (``None``: automatic).

    Accepts ``None``/``"auto"``, ``0``/``False``/``"off"``, a number of seconds, or a string
    with a unit: ``"50us"``, ``"0.2ms"``, ``"0.00005"``.

    Raises:
        ValueError: not one of these, or negative.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return DEFAULT_SPIN if value else 0.0
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "auto", "default"):
            return None
        if text in ("off", "no", "false", "never"):
            return 0.0
        scale = 1.0
        for unit, factor in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
            if text.endswith(unit):
                text, scale = text[: -len(unit)], factor
                break
        try:
            seconds = float(text) * scale
        except ValueError:
            raise ValueError(
                f"spin must be 'auto', 'off' or a duration such as '50us', not {value!r}"
            ) from None
    else:
        raise ValueError(f"spin must be None, a number of seconds or a string, not {value!r}")
    if not seconds >= 0.0:  # (also refuses NaN)
        raise ValueError(f"spin must not be negative: {value!r}")
    return seconds


def configured_spin(explicit: object = None) -> float:
    """The longest spin for this process: ``explicit`` if given, else ``$PROCSHARE_SPIN``,
    else ``DEFAULT_SPIN`` (0 on a machine with one CPU: nobody could run meanwhile).

    Raises:
        ValueError: the setting is malformed (named in the message).
    """
    spin = parse_spin(explicit)
    if spin is None:
        try:
            spin = parse_spin(os.environ.get("PROCSHARE_SPIN"))
        except ValueError as exc:
            raise ValueError(f"$PROCSHARE_SPIN: {exc}") from None
    if spin is None:
        spin = DEFAULT_SPIN if _CPUS > 1 else 0.0
    return spin


class Stepper:
    """Moves the calling thread onto or off a CPU, at most every ``STEP_EVERY`` seconds."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0.0

    def due(self) -> bool:
        """Whether a move would be made now (a cheap look before finding our CPU)."""
        return time.monotonic() >= self._next

    def _due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + STEP_EVERY
        return True

    def aside(self, cpu: int) -> bool:
        """Leave ``cpu`` (the server's) for another CPU we may use; whether we moved."""
        if not self._due():
            return False
        try:
            mask = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            return False
        return _move(mask, mask - {cpu}) and current_cpu() != cpu

    def toward(self, cpu: int) -> bool:
        """Move onto ``cpu`` (the server's), if we may run there; whether we moved."""
        if cpu < 0 or not self._due():
            return False
        try:
            mask = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            return False
        return cpu in mask and _move(mask, {cpu}) and current_cpu() == cpu


def _move(mask: set[int], narrowed: set[int]) -> bool:
    """Narrow this thread's affinity to ``narrowed`` (the kernel moves it now), then give
    ``mask`` back, which lets it stay where it landed."""
    if not narrowed:
        return False
    try:
        os.sched_setaffinity(0, narrowed)
    except OSError:
        return False
    # (If this fails, our cpuset changed in between, and the kernel's mask holds.)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, mask)
    return True


def _after_fork_in_child() -> None:
    _loadavg.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
