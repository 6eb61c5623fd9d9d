"""Serializers: how Python values become payload bytes and back.

The protocol is agnostic: a connection agrees on one serializer during the handshake and uses
it for every payload after that. ``pickle`` is the default for trusted peers (the HMAC handshake
decides who is trusted, exactly as with ``multiprocessing``): it carries any picklable value,
including proxies. Handshake payloads never go through a serializer, so nothing is ever
unpickled before the peer has proven it knows the authkey.

Invariant: ``dumps`` either returns bytes or raises :class:`SerializationError`; ``loads`` either
returns a value or raises :class:`SerializationError`. Nothing else escapes, so callers convert
failures at exactly one seam: not even ``SystemExit`` or ``KeyboardInterrupt`` raised by the
code a value runs as it is unpickled or pickled (``__reduce__`` returning ``(sys.exit, (7,))``),
which would otherwise end the server, and every client's objects with it. (A client's own
Ctrl-C during a call still interrupts it: it is raised outside the serializer, or, in the rare
case it lands inside, surfaces as the ``KeyboardInterrupt`` that ``SerializationError`` carries
as its cause.)
"""

from __future__ import annotations

import copyreg
import io
import pickle
import re
from typing import Any, Final, Protocol

from ._errors import SerializationError, serialization_error

__all__ = [
    "PickleSerializer",
    "RunsCode",
    "Serializer",
    "get_serializer",
    "serializer_names",
]


class RunsCode(Exception):
    """Raised by ``loads_here``: decoding this payload would run code that it names."""


class Serializer(Protocol):
    """What the protocol needs of a serializer."""

    name: str

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``; raise :class:`SerializationError` if it cannot be."""
        ...

    def loads(self, data: bytes | bytearray) -> Any:
        """Deserialize ``data``; raise :class:`SerializationError` if it cannot be."""
        ...

    def loads_here(self, data: bytes | bytearray) -> Any:
        """``loads``, where that runs no code the payload names (a class's ``__setstate__``
        may take seconds, and the server's loop must not wait for it); else raise
        :class:`RunsCode` (then decode it with ``loads`` on another thread)."""
        ...

    def names_code(self, data: bytes | bytearray) -> bool:
        """Whether decoding ``data`` may run code it names (``True`` when in doubt)."""
        ...


def _views_as_lists(view: Any) -> tuple[Any, tuple[Any]]:
    return list, (list(view),)


# Like multiprocessing's ForkingPickler: dict views travel as lists (a view of a dict that lives
# in another process could not mean anything else).
_VIEW_TYPES: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_FALLBACK_TABLE: dict[type, Any] = copyreg.dispatch_table.copy()
_FALLBACK_TABLE.update(dict.fromkeys(_VIEW_TYPES, _views_as_lists))


class PickleSerializer:
    """Pickle, protocol 5. For trusted peers only: unpickling runs code chosen by the sender."""

    name = "pickle"
    protocol = pickle.HIGHEST_PROTOCOL

    def dumps(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, self.protocol)
        except MemoryError as exc:  # (no retry: it would need as much memory again)
            raise SerializationError(f"no memory to serialize {_describe(obj)}") from exc
        except BaseException:  # noqa: BLE001,S110 - rare: retry with the extra reducers below
            pass
        try:
            buf = io.BytesIO()
            pickler = pickle.Pickler(buf, self.protocol)
            pickler.dispatch_table = _FALLBACK_TABLE
            pickler.dump(obj)
            return buf.getvalue()
        except BaseException as exc:
            raise serialization_error(f"cannot serialize {_describe(obj)}: {exc!r}", exc) from exc

    def loads(self, data: bytes | bytearray) -> Any:
        try:
            return pickle.loads(data)
        except SerializationError:
            raise
        except BaseException as exc:
            raise SerializationError(f"cannot deserialize payload: {exc!r}") from exc

    def names_code(self, data: bytes | bytearray) -> bool:
        if _NAMES_GLOBAL.search(data) is None:
            return False  # the usual payload
        try:  # (or plain data that looks like it: an int or a string holding those bytes)
            _LoopUnpickler(io.BytesIO(data)).load()
        except BaseException:  # noqa: BLE001 - RunsCode, or anything else: in doubt
            return True
        return False

    def loads_here(self, data: bytes | bytearray) -> Any:
        try:
            if _NAMES_GLOBAL.search(data) is None:
                return pickle.loads(data)  # the usual payload: plain data
            return _LoopUnpickler(io.BytesIO(data)).load()
        except RunsCode:
            raise
        except BaseException as exc:
            raise SerializationError(f"cannot deserialize payload: {exc!r}") from exc


#: bytes that are pickle opcodes naming a global (STACK_GLOBAL, EXT1/2/4): a payload without
#: any of them names no class or function, so decoding it runs no code of the sender's. (A
#: protocol-5 pickler names globals with these only; the same bytes also occur inside plain
#: data, an int or a string, and then ``_LoopUnpickler`` tells the two apart.)
_NAMES_GLOBAL: Final = re.compile(rb"[\x82\x83\x84\x93]")
#: globals that run nothing slow: builtin types made from the data that follows them
_QUICK_BUILTINS: Final = frozenset({"set", "frozenset", "bytearray", "complex", "slice", "range"})


class _LoopUnpickler(pickle.Unpickler):
    """Unpickles what names only quick builtins; stops at any other name (``RunsCode``)
    before anything it names has run: what it made until then is plain data, thrown away.
    (procshare's own names too: a proxy is rebuilt once, where its caller decides.)"""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _QUICK_BUILTINS:
            return super().find_class(module, name)
        raise RunsCode(f"{module}.{name}")


def _describe(obj: Any) -> str:
    if isinstance(obj, (str, bytes)):
        text = repr(obj[:80])  # (not the whole of a large one: it may be why memory ran out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        text = repr(obj) if isinstance(obj, float) or obj.bit_length() < 256 else "a large int"
    else:
        text = type(obj).__name__
    return text if len(text) < 80 else text[:77] + "..."


_SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer()}
#: made when first asked for (their modules cost import time nobody else should pay)
_LATER: Final = ("msgpack", "xmlrpclib")


def get_serializer(name: str) -> Serializer:
    """Return the serializer registered under ``name``.

    Raises:
        ValueError: no serializer has that name.
    """
    serializer = _SERIALIZERS.get(name)
    if serializer is None and name in _LATER:
        from . import _data

        made = _data.MsgpackSerializer if name == "msgpack" else _data.XmlRpcSerializer
        serializer = _SERIALIZERS[name] = made()
    if serializer is None:
        raise ValueError(
            f"unknown serializer {name!r}; available: {', '.join(serializer_names())}"
        ) from None
    return serializer


def serializer_names() -> list[str]:
    """Names of the available serializers."""
    return sorted({*_SERIALIZERS, *_LATER})
