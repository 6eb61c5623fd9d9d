"""Pushes from the server: ``watch()`` subscriptions, and the feed that keeps caches current.

Each process has one extra connection per server for everything pushed to it, read by a daemon
thread that hands each event to its subscriber. Calls keep their own connection and fast path:
watching costs them nothing. A subscriber's handler runs on the reading thread and must be
quick; :class:`Watch` only appends to a bounded queue.

A consumer blocked in ``Watch.get`` reads the connection itself (on this machine, where it is
a pipe): the push then wakes one thread, the one waiting for it, where a daemon thread woken by
it and waking the consumer in turn made two wake-ups, one after the other (~50 us each on an
idle VM). The daemon steps aside while a consumer waits (a byte on its wake pipe stops its
poll) and reads again once no consumer has waited for ``LINGER`` seconds (at once where a
cache is fed by this connection: a replica must not wait for a consumer's next ``get``).
Whoever reads hands every event to its subscriber, so no event waits for a particular reader.

Order and completeness: the server publishes each change of an object to its subscribers in the
order it applied them, with the object's version, right after applying it; one connection
carries them in order. Nothing is skipped silently: a watcher whose queue (``maxsize``) is full,
or whose connection fell behind on the server, gets an ``"overflow"`` change telling how many
changes it missed, in the place where they were missed.

Fork: the hub, its thread and its subscriptions belong to the process that made them; a forked
child makes its own when it first watches (a ``Watch`` inherited through fork receives
nothing).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from .._address import Address, is_redis_url
from .._errors import ConnectionLost, WaitTimeout, WatchClosed
from ._channel import Channel, current_pid

__all__ = ["LINGER", "Change", "ChangeBuffer", "PushHub", "Watch", "hub_for"]

#: Seconds after the last consumer stopped waiting before the daemon thread reads again: a
#: consumer comes back for its next change sooner than that, and finds the connection free.
LINGER: Final = 0.02


class Change(NamedTuple):
    """One change of a watched object, as the server applied it.

    Attributes:
        op: the method that changed it (``"__setitem__"``, ``"append"``, ``"update"``, ``"set"``,
            ...), or ``"overflow"`` (``missed`` changes were lost to a slow watcher) or
            ``"dispose"`` (the object was freed; nothing more will come).
        args: the method's positional arguments.
        kwargs: its keyword arguments (``None`` if there were none).
        version: the object's version after the change; versions of one object only grow.
        result: what the method returned (the popped item of ``pop()``, say).
        missed: for ``"overflow"``, how many changes were missed.
    """

    op: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    version: int = 0
    result: Any = None
    missed: int = 0


def change_from(payload: Any) -> Change:
    """Decode a server event ``(obj_id, version, op, args, kwargs, result)``."""
    _obj_id, version, op, args, kwargs, result = payload
    if op == "overflow":
        return Change("overflow", args, None, version, None, int(args[0]))
    return Change(op, tuple(args), kwargs, version, result)


class ChangeBuffer:
    """Changes kept for one consumer, at most ``maxsize``: those that do not fit are counted
    and handed out as one ``"overflow"`` change in the place where they were lost.

    Not thread-safe: :class:`Watch` guards it with its condition, ``AsyncWatch`` uses it from
    its event loop only.
    """

    __slots__ = ("_events", "_missed", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._events: deque[Change] = deque()
        self._missed = 0

    def add(self, change: Change) -> bool:
        """Keep ``change``, or count it as missed if full; whether it was kept."""
        lost = change.missed if change.op == "overflow" else 1  # the server's own overflow
        if len(self._events) >= self.maxsize:
            self._missed += lost
            return False
        if self._missed:
            if change.op == "overflow":  # one report for both losses
                lost += self._missed
                change = change._replace(args=(lost,), missed=lost)
            else:
                self._events.append(_overflow(self._missed, change.version))
            self._missed = 0
        self._events.append(change)
        return True

    def __bool__(self) -> bool:
        """Whether a change (or an overflow) waits."""
        return bool(self._events) or bool(self._missed)

    def take(self) -> Change | None:
        """The next change (an ``"overflow"`` included), or ``None`` if there is none."""
        if self._events:
            return self._events.popleft()
        if self._missed:
            missed, self._missed = self._missed, 0
            return _overflow(missed, -1)
        return None

    def clear(self) -> None:
        self._events.clear()
        self._missed = 0


def _overflow(missed: int, version: int) -> Change:
    return Change("overflow", (missed,), None, version, None, missed)


class PushHub:
    """This process's push connection to one server, and who reads it: the daemon thread, or
    a consumer waiting in ``Watch.get`` (the module docstring)."""

    def __init__(self, address: Address, authkey: bytes, serializer: str = "pickle") -> None:
        self.pid = current_pid()
        self.channel = Channel(address, authkey, serializer=serializer, spin=0.0)
        self.broken: BaseException | None = None
        self._on_broken: dict[int, Callable[[BaseException], None]] = {}
        #: guards the reader's role below; the daemon waits on it
        self._cond = threading.Condition(threading.Lock())
        self._daemon_reads = False
        self._consumer_reads = False
        #: consumers waiting for a change now (told when the role is free)
        self._waiting: set[Watch] = set()
        self._linger_until = 0.0
        #: subscriptions that are no ``Watch`` (a cache's feed): read them promptly
        self._feeds = 0
        target: Callable[..., None]
        args: tuple[Any, ...]
        if self.channel.reads_itself:
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            poll = select.poll()
            poll.register(self.channel._rfd, select.POLLIN)
            poll.register(self._wake_r, select.POLLIN)
            self._wake_poll = poll.poll
            target, args = self._run, ()
        else:
            self._wake_r = self._wake_w = -1
            target, args = self.channel.read_forever, (self._broke,)
        self._thread = threading.Thread(
            target=target, args=args, name="procshare-push", daemon=True
        )
        self._thread.start()

    @property
    def consumers_read(self) -> bool:
        """Whether consumers may read the connection themselves (``Watch.get``)."""
        return self._wake_w >= 0

    def subscribe(
        self,
        obj_id: int,
        handler: Callable[[Any], None],
        on_broken: Callable[[BaseException], None],
        *,
        snapshot: bool = False,
        feed: bool = False,
    ) -> tuple[int, Any]:
        """Watch ``obj_id``; return (subscription id, the server's answer). ``feed``: the
        handler is no ``Watch`` with a consumer to read for it (a cache's replica)."""
        if self.broken is not None:
            raise ConnectionLost(str(self.broken))
        sub_id, answer = self.channel.subscribe(obj_id, {"snapshot": snapshot}, handler)
        self._on_broken[sub_id] = on_broken
        if feed:
            with self._cond:
                self._feeds += 1
                self._cond.notify_all()  # (read now, not after a lingering consumer)
        return sub_id, answer

    def unsubscribe(self, sub_id: int, feed: bool = False) -> None:
        self._on_broken.pop(sub_id, None)
        if feed:
            with self._cond:
                self._feeds -= 1
        if self.broken is None and self.pid == current_pid():
            self.channel.unsubscribe(sub_id)

    def _broke(self, error: BaseException) -> None:
        with self._cond:
            if self.broken is not None:
                return
            self.broken = error
        for callback in list(self._on_broken.values()):
            callback(error)
        self._on_broken.clear()

    # -- who reads --------------------------------------------------------------------------

    def _run(self) -> None:
        """The daemon thread: read while no consumer waits (``LINGER`` after the last one);
        once the connection ends (or a handler failed here), tell every subscriber."""
        try:
            self._read_while_nobody_waits()
        finally:
            self._broke(
                self.channel._broken or self.broken or ConnectionLost("the connection closed")
            )

    def _read_while_nobody_waits(self) -> None:
        channel = self.channel
        cond = self._cond
        while channel._broken is None:
            with cond:
                while self.broken is None:
                    now = time.monotonic()
                    active = bool(self._waiting)  # (a consumer that reads waits too)
                    if not active and (now >= self._linger_until or self._feeds):
                        break
                    # (not woken at each consumer's release: a consumer comes back sooner)
                    cond.wait(LINGER if active else self._linger_until - now)
                if self.broken is not None:
                    break
                self._daemon_reads = True
            try:
                read = channel.read_pushes(self._wanted, None, self._wake_poll)
            finally:
                with cond:
                    self._daemon_reads = False
                self._role_freed()
            if not read and channel._broken is None:
                time.sleep(0.001)  # (a subscribing thread reads for its answer: not for long)

    def close(self) -> None:
        """Close the connection and the wake pipe (a hub found broken, replaced)."""
        self.channel.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wanted(self) -> bool:
        """Whether the daemon should let go of the connection: a consumer waits. (The wake
        pipe is drained first, every time: a byte left in it would wake every poll.)"""
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 64)
        return bool(self._waiting)

    def wait_for(self, watch: Watch) -> None:
        """``watch``'s consumer waits for a change from now on: the daemon lets go."""
        with self._cond:
            self._waiting.add(watch)
            if not self._daemon_reads:
                return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def done_waiting(self, watch: Watch) -> None:
        with self._cond:
            self._waiting.discard(watch)
            self._linger_until = time.monotonic() + LINGER
            if self._feeds and not self._waiting:
                self._cond.notify_all()  # (the daemon reads for the feeds at once)

    def take_role(self) -> bool:
        """Become the connection's reader as a consumer, if nobody else is."""
        with self._cond:
            if self._daemon_reads or self._consumer_reads or self.broken is not None:
                return False
            self._consumer_reads = True
            return True

    def give_role(self) -> None:
        with self._cond:
            self._consumer_reads = False
        self._role_freed()

    def _role_freed(self) -> None:
        """Tell the consumers waiting that the connection has no reader now."""
        with self._cond:
            waiting = list(self._waiting)
        for watch in waiting:
            watch._nudge()


_hubs: dict[tuple[Address, bytes], PushHub] = {}
_hubs_lock = threading.Lock()


def hub_for(address: Address, authkey: bytes, serializer: str = "pickle") -> PushHub:
    """This process's push hub for the server at ``address`` (made on first use), speaking
    ``serializer`` (the one the server accepts, as the proxy's own connection does)."""
    if is_redis_url(address):
        from .._redis._watch import redis_hub_for

        return redis_hub_for(address, bytes(authkey), serializer)  # type: ignore[return-value]
    key = (address, bytes(authkey))
    hub = _hubs.get(key)
    if hub is not None and hub.pid == current_pid() and hub.broken is None:
        return hub
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None or hub.pid != current_pid() or hub.broken is not None:
            if hub is not None and hub.pid == current_pid():
                hub.close()
            hub = PushHub(address, key[1], serializer)
            _hubs[key] = hub
    return hub


class Watch:
    """The changes of one shared object, as they happen: iterate, or ``get()`` one at a time.

    Made by ``proxy.watch()``. Iterating yields :class:`Change` events in the order the server
    applied them, blocking until the next one; with a ``timeout`` the iteration ends after that
    many seconds without a change. Use it as a context manager (or call ``close()``) to
    unsubscribe.

    Args:
        proxy: the shared object to watch.
        timeout: seconds of silence after which iterating stops (``None``: never).
        maxsize: changes kept for a slow consumer; beyond it they are dropped and reported as
            one ``"overflow"`` change.
        snapshot: also fetch the object's value, atomically with the subscription
            (``watch.value`` then is the value just before the first change delivered).
    """

    def __init__(
        self,
        proxy: Any,
        *,
        timeout: float | None = None,
        maxsize: int = 10_000,
        snapshot: bool = False,
    ) -> None:
        self._changes = ChangeBuffer(maxsize)
        self.proxy = proxy
        self.timeout = timeout
        self.maxsize = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._error: BaseException | None = None
        self._hub = hub_for(proxy._token.address, proxy._authkey, proxy._serializer)
        self._sub_id, answer = self._hub.subscribe(
            proxy._id, self._on_event, self._on_broken, snapshot=snapshot
        )
        #: the object's version when the subscription started
        self.version: int = answer["version"]
        #: the object's value then (with ``snapshot=True``), else ``None``
        self.value: Any = answer.get("value")

    # -- the daemon thread's side -----------------------------------------------------------

    def _on_event(self, payload: Any) -> None:
        change = change_from(payload)
        with self._cond:
            if not self._closed and self._changes.add(change):
                self._cond.notify()

    def _on_broken(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # -- the consumer's side ------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Change:
        """The next change, waiting up to ``timeout`` seconds for it.

        Raises:
            TimeoutError: nothing changed within ``timeout``.
            ConnectionLost: the server went away (pending changes are delivered first).
            ValueError: the watch is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        hub = self._hub
        if not hub.consumers_read or hub.pid != current_pid():  # (inherited: receives nothing)
            with self._cond:
                while True:
                    outcome = self._nothing_yet(deadline, timeout)
                    if outcome is not True:
                        return outcome  # type: ignore[no-any-return]
                    self._cond.wait(self._remaining(deadline))
        with self._cond:
            change = self._changes.take()
            if change is not None:
                return change  # (the usual case of a busy object: no wait at all)
        hub.wait_for(self)
        try:
            while True:
                with self._cond:
                    outcome = self._nothing_yet(deadline, timeout)
                    if outcome is not True:
                        return outcome  # type: ignore[no-any-return]
                    if not hub.take_role():
                        # Another thread reads: it hands our changes on (and tells us when
                        # it stops reading).
                        self._cond.wait(self._remaining(deadline))
                        continue
                try:
                    read = hub.channel.read_pushes(self._ready, self._remaining(deadline))
                finally:
                    hub.give_role()
                if hub.channel._broken is not None:
                    hub._broke(hub.channel._broken)
                elif not read:
                    with self._cond:  # (a subscribing thread reads for its answer)
                        self._cond.wait(0.001)
        finally:
            hub.done_waiting(self)

    def _ready(self) -> bool:
        """Whether ``get`` has something to return or raise (read without the lock: a
        reader only stops to look again)."""
        return bool(self._changes) or self._closed or self._error is not None

    def _nothing_yet(self, deadline: float | None, timeout: float | None) -> Any:
        """The next change, or raise why there is none to wait for; ``True``: wait on.
        (``self._cond`` held.)"""
        change = self._changes.take()
        if change is not None:
            return change
        if self._closed:
            raise WatchClosed("the watch is closed")
        if self._error is not None:
            raise ConnectionLost(str(self._error)) from self._error
        if deadline is not None and deadline - time.monotonic() <= 0:
            raise WaitTimeout(f"no change within {timeout} s")
        return True

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _nudge(self) -> None:
        """The connection has no reader now: a consumer waiting may become it."""
        with self._cond:
            self._cond.notify_all()

    def get_nowait(self) -> Change | None:
        """The next change if one is waiting (an ``"overflow"`` included), else ``None``."""
        with self._cond:
            return self._changes.take()

    def __iter__(self) -> Iterator[Change]:
        while True:
            try:
                change = self.get(self.timeout)
            except TimeoutError:
                return
            except ValueError:
                if self._closed:
                    return
                raise
            yield change
            if change.op == "dispose":
                return

    def close(self) -> None:
        """Unsubscribe (idempotent); iteration stops."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._changes.clear()
            self._cond.notify_all()
        with contextlib.suppress(ConnectionLost):
            self._hub.unsubscribe(self._sub_id)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and self._hub.pid == current_pid():
                self._hub._on_broken.pop(self._sub_id, None)
                self._hub.channel.unsubscribe_soon(self._sub_id)
        except Exception:  # noqa: BLE001,S110 - finalizers run at odd times
            pass
