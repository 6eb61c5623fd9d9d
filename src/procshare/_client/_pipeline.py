"""Pipelines: many operations, one round trip.

::

    with manager.pipeline() as p:             # or: with d.pipeline() as pd: pd[k] = v
        for i in range(1000):
            p(d)[i] = i                       # queued, not sent
        size = p(d).len()                     # a Pending
    print(size.value)                         # known once the block has run

From asyncio, the same with ``async with``: ``async with proxy.pipeline() as pd:`` (or
``client.pipeline()``), and ``await p.execute()``.

Leaving the block (or ``p.execute()``) sends the queued calls in batches of up to
``batch_size`` (one message each, all sent before any answer is awaited). The server applies
each batch in order as one step: no other client's request lands in the middle of it. Each
call's outcome fills its :class:`Pending`; one call failing does not stop the others (its
``Pending`` raises its error). A call that would have to wait (acquiring a held lock, getting
from an empty queue) fails instead of waiting; methods of registered custom classes are refused
inside a pipeline; each with its own error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .._errors import ProcshareError
from .._protocol import Batch

__all__ = ["AsyncPipeline", "Pending", "Pipeline", "Pipelined"]

_UNSET: Any = object()


class Pending:
    """The outcome of one pipelined call, known once the pipeline has run."""

    __slots__ = ("_error", "_value")

    def __init__(self) -> None:
        self._value: Any = _UNSET
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether the pipeline has run (successfully or not) for this call."""
        return self._value is not _UNSET or self._error is not None

    @property
    def value(self) -> Any:
        """The call's result.

        Raises:
            the call's own exception, if it failed;
            RuntimeError: the pipeline has not run yet.
        """
        if self._error is not None:
            raise self._error
        if self._value is _UNSET:
            raise RuntimeError("the pipeline has not run yet")
        return self._value

    @property
    def error(self) -> BaseException | None:
        """The call's exception, or ``None``."""
        return self._error

    def __repr__(self) -> str:
        if self._error is not None:
            return f"<Pending error={self._error!r}>"
        return "<Pending>" if self._value is _UNSET else f"<Pending value={self._value!r}>"


class Pipelined:
    """A proxy's methods as pipeline steps: each call is queued and returns a :class:`Pending`.

    ``p[k] = v`` and ``del p[k]`` queue too; reads that Python wants answered at once have
    named forms: ``getitem(k)``, ``contains(k)``, ``len()``.
    """

    __slots__ = ("_id", "_pipeline", "_proxy")
    _pipeline: Pipeline
    _proxy: Any
    _id: int

    def __init__(self, pipeline: Pipeline, proxy: Any) -> None:
        pipeline._adopt(proxy)
        object.__setattr__(self, "_pipeline", pipeline)
        object.__setattr__(self, "_proxy", proxy)
        object.__setattr__(self, "_id", proxy._id)

    def __getattr__(self, name: str) -> Callable[..., Pending]:
        if name.startswith("_"):
            raise AttributeError(name)
        pipeline, obj_id = self._pipeline, self._id

        def queued(*args: Any, **kwargs: Any) -> Pending:
            return pipeline._queue(obj_id, name, args, kwargs or None)

        return queued

    def __setitem__(self, key: Any, value: Any) -> None:
        pipeline = self._pipeline
        pipeline._wire.append((self._id, "__setitem__", (key, value), None, pipeline._owner))
        pipeline._pending.append(None)

    def __delitem__(self, key: Any) -> None:
        pipeline = self._pipeline
        pipeline._wire.append((self._id, "__delitem__", (key,), None, pipeline._owner))
        pipeline._pending.append(None)

    def setitem(self, key: Any, value: Any) -> None:
        self[key] = value  # (the asyncio proxies' name for it)

    def delitem(self, key: Any) -> None:
        del self[key]

    def getitem(self, key: Any) -> Pending:
        return self._pipeline._queue(self._id, "__getitem__", (key,), None)

    def contains(self, key: Any) -> Pending:
        return self._pipeline._queue(self._id, "__contains__", (key,), None)

    def len(self) -> Pending:
        return self._pipeline._queue(self._id, "__len__", (), None)


class Pipeline:
    """Queued calls to shared objects of one server, sent together. See the module docs.

    Args:
        batch_size: the most calls in one batch (one atomic step on the server).
        proxy: bind the pipeline to one proxy: ``with`` then yields its :class:`Pipelined`
            view instead of the pipeline (``with d.pipeline() as pd: pd[k] = v``).
    """

    def __init__(self, *, batch_size: int = 10_000, proxy: Any = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._bound = proxy
        self._owner = self._caller()
        # the calls in wire form (obj_id, method, args, kwargs, owner), and their Pendings
        # (None where nobody can look at the outcome: item assignment and deletion)
        self._wire: list[tuple[int, str, tuple[Any, ...], dict[str, Any] | None, int]] = []
        self._pending: list[Pending | None] = []
        self._proxies: dict[int, Any] = {}
        self._channel: Any = None
        #: the outcome of each call after ``execute()``: its result, or its exception
        self.results: list[Any] = []

    def __call__(self, proxy: Any) -> Pipelined:
        """The pipelined view of ``proxy``."""
        return Pipelined(self, proxy)

    def __len__(self) -> int:
        return len(self._wire)

    @staticmethod
    def _caller() -> int:
        """The owner tag of the calls (a thread: as the sync proxies' calls)."""
        return threading.get_ident()

    @staticmethod
    def _backend_of(proxy: Any) -> Any:
        return proxy._channel()

    def _adopt(self, proxy: Any) -> None:
        channel = self._backend_of(proxy)
        if self._channel is None:
            self._channel = channel
        elif channel is not self._channel:
            raise ProcshareError("a pipeline's objects must all live on the same server")
        self._proxies[id(proxy)] = proxy

    def _queue(
        self, obj_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> Pending:
        pending = Pending()
        self._wire.append((obj_id, method, args, kwargs, self._owner))
        self._pending.append(pending)
        return pending

    def execute(self) -> list[Any]:
        """Send every queued call; fill the Pendings; return the outcomes in order.

        An outcome is the call's result, or its exception (which its ``Pending`` raises).

        Raises:
            ConnectionLost: the server went away (the calls' fate is unknown).
        """
        batches, pendings = self._take()
        if not batches:
            return []
        return self._settle(pendings, self._channel.request_many(batches))

    def _take(self) -> tuple[list[Batch], list[Pending | None]]:
        """The queued calls as batches, and their Pendings (the queue is emptied)."""
        wire, pendings = self._wire, self._pending
        self._wire, self._pending = [], []
        size = self.batch_size
        batches = [Batch(0, tuple(wire[i : i + size])) for i in range(0, len(wire), size)]
        return batches, pendings

    def _settle(self, pendings: list[Pending | None], replies: list[Any]) -> list[Any]:
        """Fill the Pendings from the batches' replies; the outcomes in order."""
        outcomes: list[Any] = []
        position = 0
        for values, errors in replies:
            if errors:
                for index, error in errors.items():
                    values[index] = error
                    pending = pendings[position + index]
                    if pending is not None:
                        pending._error = error
            for index, pending in enumerate(pendings[position : position + len(values)]):
                if pending is not None and index not in errors:
                    pending._value = values[index]
            outcomes.extend(values)
            position += len(values)
        for proxy in self._proxies.values():
            replica = getattr(proxy, "_replica", None)
            if replica is not None:
                replica.invalidate()  # a cached proxy reads its own pipelined writes
        self.results = outcomes
        return outcomes

    def __enter__(self) -> Any:
        return Pipelined(self, self._bound) if self._bound is not None else self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.execute()
        else:
            self._wire.clear()  # the block failed: send nothing
            self._pending.clear()


class AsyncPipeline(Pipeline):
    """A :class:`Pipeline` of asyncio proxies: ``async with`` and ``await execute()``.

    Queuing is the same (no round trip: nothing to await); the calls' owner is the task
    that made the pipeline.
    """

    @staticmethod
    def _caller() -> int:
        task = asyncio.current_task()
        return id(task) if task is not None else 0  # (as the asyncio proxies' calls)

    @staticmethod
    def _backend_of(proxy: Any) -> Any:
        return proxy._channel

    async def execute(self) -> list[Any]:  # type: ignore[override]
        """``Pipeline.execute``, awaited."""
        batches, pendings = self._take()
        if not batches:
            return []
        return self._settle(pendings, await self._channel.request_many(batches))

    def __enter__(self) -> Any:
        raise TypeError("an asyncio pipeline runs with 'async with'")

    async def __aenter__(self) -> Any:
        return Pipelined(self, self._bound) if self._bound is not None else self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            await self.execute()
        else:
            self._wire.clear()
            self._pending.clear()
