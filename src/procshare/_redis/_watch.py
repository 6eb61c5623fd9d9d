"""``watch()`` on Redis: each watched object's changes come from its stream, read by one thread.

The script that changes a watched container also appends the change to the object's stream
``<id>:x`` (``_scripts._WATCHED``): the same order as the changes, each with the version after
it, nothing written while nobody watches. A process reads all the streams it watches on one
connection of its own (``XREAD BLOCK``, in slices, so that a new watch joins within one), from
the last entry it delivered: a dropped connection resumes where it stopped. An entry gives
the ``Change`` events the local server would push, so :class:`~procshare._client._push.Watch`
(and ``wait_until``) work unchanged on it. Versions of one object are consecutive: a gap (the
stream was trimmed past what this process had read, at ~10,000 entries) is delivered as an
``"overflow"`` change saying how many were missed, never skipped silently.

Not keyspace notifications (off by default, fire and forget, no value, no version) and not
pub/sub (lost on reconnect).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._client._channel import current_pid
from .._errors import ConnectionLost, MethodNotExposed, ObjectNotFound
from .._kinds import KINDS
from ._items import decode_value

if TYPE_CHECKING:
    from ._channel import RedisChannel

__all__ = ["RedisHub", "redis_hub_for"]

#: the changes whose result is the entry's stored value (``r``): what they popped or made
STORED_RESULTS: Final = frozenset({"pop", "setdefault", "increment"})

#: seconds between two checks that the namespace is still the one watched (a ``FLUSHALL``
#: or a deleted namespace ends every watch, and drops every cached replica)
INSTANCE_CHECK: Final = 1.0

#: the longest XREAD BLOCK: a new watch is read from at most this late (its changes wait in
#: the stream meanwhile, none is lost)
READ_SLICE_MS: Final = 100


def _entry_id(eid: Any) -> tuple[int, int]:
    text = eid.decode() if isinstance(eid, bytes) else str(eid)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class _Sub:
    __slots__ = ("handler", "last", "obj_id", "version")

    def __init__(self, obj_id: int, handler: Callable[[Any], None], last: Any, version: int):
        self.obj_id = obj_id
        self.handler = handler
        self.last = _entry_id(last)  # the last stream entry delivered
        self.version = version  # the object's version after the last change delivered


class RedisHub:
    """This process's watches of one Redis namespace, and the thread that reads them (the
    ``PushHub`` of ``_client._push``, for Redis)."""

    #: consumers wait for their changes; only the thread here reads (``PushHub``)
    consumers_read = False

    def __init__(self, channel: RedisChannel) -> None:

        self.pid = current_pid()
        self.redis_channel = channel
        self.channel = self  # (``Watch.__del__`` calls ``hub.channel.unsubscribe_soon``)
        self.broken: BaseException | None = None
        self._on_broken: dict[int, Callable[[BaseException], None]] = {}
        self._subs: dict[int, _Sub] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._dropped: list[int] = []  # subscriptions to end (from finalizers)
        # (its commands go through the channel's ``_send``, on the reading thread's own
        # connection: a blocking XREAD holds no connection the calls need)
        self._thread = threading.Thread(
            target=self._read, name="procshare-redis-watch", daemon=True
        )
        self._thread.start()

    def subscribe(
        self,
        obj_id: int,
        handler: Callable[[Any], None],
        on_broken: Callable[[BaseException], None],
        *,
        snapshot: bool = False,
        feed: bool = False,
    ) -> tuple[int, Any]:
        """Watch ``obj_id``; ``(subscription id, {"version": v[, "value": value]})``
        (``feed``: as ``PushHub.subscribe``; here the reading thread serves all alike)."""
        if self.broken is not None:
            raise ConnectionLost(str(self.broken))
        ch = self.redis_channel
        typeid, kind = ch._type_of(obj_id)
        if not (kind in KINDS and KINDS[kind].watchable):
            raise MethodNotExposed(f"objects of type {typeid!r} cannot be watched")
        answer = ch._run("watch", obj_id, ch.session, 1)
        if answer[0] in (b"gone", "gone"):
            raise ObjectNotFound.of(obj_id)
        version, last = int(answer[1]), answer[2]
        reply: dict[str, Any] = {"version": version}
        if snapshot:
            # (read after the watch began: the changes up to its version are in the value,
            # and those of the stream up to that version are skipped)
            if kind == "Event":
                pipe = ch._client.pipeline(transaction=True)  # (flag and version at once)
                pipe.get(f"{ch._prefix}{obj_id}:d")
                pipe.get(f"{ch._prefix}{obj_id}:v")
                flag, at = pipe.execute()
                version = int(at or 0)
                reply = {"version": version, "value": flag == b"1"}
            else:
                read_version, stored = ch._read(obj_id, kind, None)
                version = int(read_version)
                reply = {"version": version, "value": ch._decode_whole(kind, stored)}
        sub_id = next(self._ids)
        with self._lock:
            self._subs[sub_id] = _Sub(obj_id, handler, last, version)
            self._on_broken[sub_id] = on_broken
        return sub_id, reply

    def unsubscribe(self, sub_id: int, feed: bool = False) -> None:
        with self._lock:
            sub = self._subs.pop(sub_id, None)
            self._on_broken.pop(sub_id, None)
        if sub is not None and self.pid == current_pid():
            ch = self.redis_channel
            with contextlib.suppress(Exception):
                ch._run("watch", sub.obj_id, ch.session, -1)

    def unsubscribe_soon(self, sub_id: int) -> None:
        """``unsubscribe`` from a finalizer: done by the reading thread."""
        self._dropped.append(sub_id)

    # -- the reading thread ------------------------------------------------------------------------

    def _read(self) -> None:
        import redis

        send = self.redis_channel._send
        prefix = self.redis_channel._prefix
        instance = self.redis_channel.server_info["instance"].encode()
        next_check = 0.0
        while not self.redis_channel._closed and self.pid == current_pid():
            while self._dropped:
                self.unsubscribe(self._dropped.pop())
            now = time.monotonic()
            if now >= next_check:  # (a namespace deleted under it: FLUSHALL, a shutdown)
                next_check = now + INSTANCE_CHECK
                try:
                    current = send(("GET", prefix + "instance"))
                except redis.ConnectionError:
                    current = instance  # (looked at again next time)
                except Exception as exc:  # noqa: BLE001 - told to every watcher, not lost
                    self._failed(exc)
                    return
                if current != instance:
                    self._broke(ConnectionLost("the Redis namespace was deleted"))
                    return
            with self._lock:
                subs = list(self._subs.values())
            if not subs:
                time.sleep(READ_SLICE_MS / 1000)
                continue
            streams: dict[str, str] = {}
            for sub in subs:  # (from the earliest entry any watch of the object still needs)
                key = f"{prefix}{sub.obj_id}:x"
                have = streams.get(key)
                mine = f"{sub.last[0]}-{sub.last[1]}"
                if have is None or _entry_id(mine) < _entry_id(have):
                    streams[key] = mine
            try:
                since = tuple(streams.values())
                answer: Any = send(
                    ("XREAD", "COUNT", 1000, "BLOCK", READ_SLICE_MS, "STREAMS", *streams, *since)
                )
            except redis.ConnectionError:
                time.sleep(0.05)  # (resumed from the last entries delivered)
                continue
            except Exception as exc:  # noqa: BLE001 - told to every watcher, not lost
                self._failed(exc)
                return
            if isinstance(answer, dict):  # (RESP3 answers a map, RESP2 pairs)
                answer = answer.items()
            for key, entries in answer or ():
                obj_id = int(key.decode().rsplit(":", 2)[-2])
                for eid, flat in entries:
                    fields = dict(zip(flat[::2], flat[1::2], strict=True))
                    self._deliver(obj_id, _entry_id(eid), fields, subs)

    def _failed(self, error: Exception) -> None:
        """The reading thread met ``error``: tell every watcher, unless the channel was closed
        under it (a shutdown: redis-py may then fail inside, with an ``AttributeError``)."""
        if not self.redis_channel._closed:
            self._broke(error)

    def _deliver(self, obj_id: int, eid: tuple[int, int], fields: Any, subs: list[_Sub]) -> None:
        loads = self.redis_channel._serializer.loads
        version = int(fields[b"v"])
        described = fields[b"e"]
        count, _, blob = described.partition(b":")
        changes = loads(blob) if blob else []
        first = version - int(count or 1) + 1
        stored_result = fields.get(b"r") or b""
        for sub in subs:
            if sub.obj_id != obj_id or eid <= sub.last:
                continue
            sub.last = eid
            if first > sub.version + 1:  # (trimmed away before this process read them)
                missed = first - sub.version - 1
                sub.handler((obj_id, first - 1, "overflow", (missed,), None, None))
            for offset, change in enumerate(changes):
                op, args, kwargs, result = change
                at = first + offset
                if at <= sub.version:
                    continue  # (already in the value the watch started from)
                if stored_result and op in STORED_RESULTS:
                    result = decode_value(stored_result, loads)
                sub.handler((obj_id, at, op, args, kwargs, result))
            sub.version = max(sub.version, version)

    def _broke(self, error: BaseException) -> None:
        self.broken = error
        with self._lock:
            callbacks = list(self._on_broken.values())
            self._on_broken.clear()
        for callback in callbacks:
            callback(error)


_hubs: dict[tuple[str, int], RedisHub] = {}
_hubs_lock = threading.Lock()


def redis_hub_for(address: str, authkey: bytes, serializer: str = "pickle") -> RedisHub:
    """This process's watch hub for the Redis namespace at ``address``."""
    from ._channel import get_redis_channel

    key = (address, current_pid())
    hub = _hubs.get(key)
    if hub is not None and hub.broken is None and not hub.redis_channel._closed:
        return hub
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None or hub.broken is not None or hub.redis_channel._closed:
            hub = RedisHub(get_redis_channel(address, authkey, serializer))
            _hubs[key] = hub
    return hub
