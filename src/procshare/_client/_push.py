"""Pushes from the server: ``watch()`` subscriptions, and the feed that keeps caches current.

Each process has one extra connection per server for everything pushed to it, read by a daemon
thread that hands each event to its subscriber. Calls keep their own connection and fast path:
watching costs them nothing. A subscriber's handler runs on that daemon thread and must be
quick; :class:`Watch` only appends to a bounded queue.

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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .._address import Address, is_redis_url
from .._errors import ConnectionLost, WaitTimeout, WatchClosed
from ._channel import Channel, current_pid

__all__ = ["Change", "ChangeBuffer", "PushHub", "Watch", "hub_for"]


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
    """This process's push connection to one server and the thread that reads it."""

    def __init__(self, address: Address, authkey: bytes, serializer: str = "pickle") -> None:
        self.pid = current_pid()
        self.channel = Channel(address, authkey, serializer=serializer, spin=0.0)
        self.broken: BaseException | None = None
        self._on_broken: dict[int, Callable[[BaseException], None]] = {}
        self._thread = threading.Thread(
            target=self.channel.read_forever,
            args=(self._broke,),
            name="procshare-push",
            daemon=True,
        )
        self._thread.start()

    def subscribe(
        self,
        obj_id: int,
        handler: Callable[[Any], None],
        on_broken: Callable[[BaseException], None],
        *,
        snapshot: bool = False,
    ) -> tuple[int, Any]:
        """Watch ``obj_id``; return (subscription id, the server's answer)."""
        if self.broken is not None:
            raise ConnectionLost(str(self.broken))
        sub_id, answer = self.channel.subscribe(obj_id, {"snapshot": snapshot}, handler)
        self._on_broken[sub_id] = on_broken
        return sub_id, answer

    def unsubscribe(self, sub_id: int) -> None:
        self._on_broken.pop(sub_id, None)
        if self.broken is None and self.pid == current_pid():
            self.channel.unsubscribe(sub_id)

    def _broke(self, error: BaseException) -> None:
        self.broken = error
        for callback in list(self._on_broken.values()):
            callback(error)
        self._on_broken.clear()


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
                hub.channel.close()
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
        with self._cond:
            while True:
                change = self._changes.take()
                if change is not None:
                    return change
                if self._closed:
                    raise WatchClosed("the watch is closed")
                if self._error is not None:
                    raise ConnectionLost(str(self._error)) from self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WaitTimeout(f"no change within {timeout} s")
                self._cond.wait(remaining)

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
