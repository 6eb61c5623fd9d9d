"""Serializers that carry data only: decoding runs no code the sender chose.

Pickle carries any object, which is why only peers that proved the authkey may send it. A data
serializer carries a fixed set of types and nothing else, in a format of its own (``msgpack``,
and ``xmlrpclib``, the standard library's other manager serializer): ``None``, ``bool``,
``int``, ``float``, ``str``, ``bytes``, lists, dicts; and, tagged in a dict with one key that
starts with ``~``, what procshare's messages need: tuples, sets, ranges, slices, dicts whose
keys are not all strings, ints past the format's range, shared objects (as their token: a
proxy is rebuilt on the other side, never an object of a class the sender names) and
exceptions (rebuilt as the builtin, ``queue``, ``threading`` or procshare exception of that
name, else a ``RemoteError`` carrying its text).

``prepare(value)`` gives a value the semantics the format has for users: XML-RPC has no
tuples (a tuple arrives as a list, as with the standard library's ``xmlrpclib`` manager), and
refuses what it cannot marshal (a function: ``TypeError``) before anything is sent. The
protocol prepares the values users send and get back (arguments, results), not its own
message structure, which the tags carry exactly.
"""

from __future__ import annotations

import builtins
import contextlib
import queue
import threading
from typing import Any, Final

from . import _errors
from ._errors import RemoteError, SerializationError, serialization_error
from ._token import Token

__all__ = ["DataSerializer", "MsgpackSerializer", "XmlRpcSerializer"]

_TAG: Final = "~"
#: exceptions rebuilt by name (anything else arrives as a RemoteError with its text)
_KNOWN_ERRORS: Final[dict[str, type[BaseException]]] = {
    **{
        name: obj
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    },
    "queue.Empty": queue.Empty,
    "queue.Full": queue.Full,
    "threading.BrokenBarrierError": threading.BrokenBarrierError,
    **{
        f"procshare.{name}": obj
        for name, obj in vars(_errors).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    },
}


def _error_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    if cls.__module__ in {"_queue", "queue"}:
        return f"queue.{cls.__qualname__}"
    if cls.__module__ == "threading":
        return f"threading.{cls.__qualname__}"
    if cls.__module__ == "procshare._errors":
        return f"procshare.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


class DataSerializer:
    """The tags and the shared-object handling; a subclass gives the format
    (``_format_dumps``/``_format_loads``) and the range of its ints (``int_bits``)."""

    name = "data"
    #: ints outside +-2**(int_bits - 1) are tagged (XML-RPC's are 32-bit)
    int_bits = 64

    # -- what subclasses give --------------------------------------------------------------

    def _format_dumps(self, data: Any) -> bytes:
        raise NotImplementedError

    def _format_loads(self, raw: bytes | bytearray) -> Any:
        raise NotImplementedError

    def prepare(self, value: Any) -> Any:
        """``value`` as a user on the other side will get it (see the module docstring)."""
        return value

    # -- the serializer --------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        try:
            return self._format_dumps(self._to_data(obj))
        except SerializationError:
            raise
        except Exception as exc:
            raise serialization_error(f"cannot serialize {type(obj).__name__}: {exc}", exc) from exc

    def loads(self, data: bytes | bytearray) -> Any:
        try:
            return self._from_data(self._format_loads(data))
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot deserialize payload: {exc!r}") from exc

    def loads_here(self, data: bytes | bytearray) -> Any:
        return self.loads(data)  # plain data: decoding it runs no code of the sender's

    def names_code(self, data: bytes | bytearray) -> bool:
        return False  # (plain data only)

    # -- to data ---------------------------------------------------------------------------

    def _to_data(self, obj: Any) -> Any:
        if obj is None or obj is True or obj is False or type(obj) in (str, float):
            return obj
        if type(obj) is int:
            limit = 1 << (self.int_bits - 1)
            return obj if -limit <= obj < limit else {"~i": str(obj)}
        if type(obj) in (bytes, bytearray):
            return bytes(obj)
        if type(obj) is list:
            return [self._to_data(x) for x in obj]
        if type(obj) is tuple:
            return {"~t": [self._to_data(x) for x in obj]}
        if type(obj) is dict:
            if all(type(k) is str and not k.startswith(_TAG) for k in obj):
                return {k: self._to_data(v) for k, v in obj.items()}
            return {"~d": [[self._to_data(k), self._to_data(v)] for k, v in obj.items()]}
        if type(obj) in (set, frozenset):
            tag = "~s" if type(obj) is set else "~f"
            return {tag: [self._to_data(x) for x in obj]}
        if isinstance(obj, BaseException):
            return self._error_to_data(obj)
        if isinstance(obj, Token):
            return {"~k": [obj.typeid, self._to_data(obj.address), obj.id]}
        if type(obj) is range:  # (``m.list(range(10))``)
            return {"~r": [obj.start, obj.stop, obj.step]}
        if type(obj) is slice:  # (``lst[1:3]``)
            return {
                "~l": [self._to_data(obj.start), self._to_data(obj.stop), self._to_data(obj.step)]
            }
        shared = self._shared_to_data(obj)
        if shared is not None:
            return shared
        if isinstance(obj, tuple):  # a named tuple: its fields
            return {"~t": [self._to_data(x) for x in obj]}
        raise TypeError(f"cannot marshal {type(obj).__name__} objects")

    def _shared_to_data(self, obj: Any) -> Any:
        """A proxy (or a server's reference to one of its objects) as its token."""
        reduce = getattr(type(obj), "__reduce__", None)
        if not getattr(obj, "_shares_as_proxy_", False) or reduce is None:
            return None
        _rebuild, (proxytype, token, _serializer, kwds) = obj.__reduce__()
        exposed = kwds.get("exposed")
        return {
            "~p": [
                token.typeid,
                self._to_data(token.address),
                token.id,
                list(exposed) if exposed is not None else None,
                bool(kwds.get("owned", False)),
                getattr(proxytype, "__qualname__", ""),
            ]
        }

    def _error_to_data(self, exc: BaseException) -> Any:
        if isinstance(exc, RemoteError):
            args: list[Any] = [exc.message, exc.remote_traceback]
        else:
            try:
                args = [self._to_data(a) for a in exc.args]
            except TypeError:
                args = [str(a) for a in exc.args]
        return {"~e": [_error_name(exc), args, str(exc)]}

    # -- from data -------------------------------------------------------------------------

    def _from_data(self, data: Any) -> Any:
        if type(data) is list:
            return [self._from_data(x) for x in data]
        if type(data) is not dict:
            return data
        if len(data) == 1:
            ((key, value),) = data.items()
            if type(key) is str and key.startswith(_TAG):
                return self._untag(key, value)
        return {k: self._from_data(v) for k, v in data.items()}

    def _untag(self, tag: str, value: Any) -> Any:
        if tag == "~t":
            return tuple(self._from_data(x) for x in value)
        if tag == "~d":
            return {self._from_data(k): self._from_data(v) for k, v in value}
        if tag == "~s":
            return {self._from_data(x) for x in value}
        if tag == "~f":
            return frozenset(self._from_data(x) for x in value)
        if tag == "~i":
            return int(value)
        if tag == "~r":
            start, stop, step = (int(x) for x in value)
            return range(start, stop, step)
        if tag == "~l":
            start, stop, step = (self._from_data(x) for x in value)
            return slice(start, stop, step)
        if tag == "~k":
            typeid, address, obj_id = value
            return Token(typeid, self._from_data(address), obj_id)
        if tag == "~e":
            return self._error_from_data(*value)
        if tag == "~p":
            return self._proxy_from_data(*value)
        raise ValueError(f"unknown tag {tag!r}")

    def _error_from_data(self, name: str, args: list[Any], text: str) -> BaseException:
        cls = _KNOWN_ERRORS.get(name)
        if cls is not None and issubclass(cls, RemoteError):
            return cls(*args[:2])
        if cls is not None:
            with contextlib.suppress(Exception):  # (one that wants other arguments)
                return cls(*[self._from_data(a) for a in args])
        return RemoteError(f"{name}: {text}")

    def _proxy_from_data(
        self,
        typeid: str,
        address: Any,
        obj_id: int,
        exposed: list[str] | None,
        owned: bool,
        proxytype_name: str,
    ) -> Any:
        from ._client import _proxies

        address = self._from_data(address)
        if isinstance(address, list):
            address = tuple(address)
        token = Token(typeid, address, obj_id)
        kwds: dict[str, Any] = {"owned": owned}
        if exposed is not None:
            kwds["exposed"] = tuple(exposed)
        return _proxies.RebuildProxy(
            _proxies.proxy_type_for(token, proxytype_name), token, self.name, kwds
        )


class XmlRpcSerializer(DataSerializer):
    """XML-RPC, as the standard library's ``serializer='xmlrpclib'``: values arrive as XML-RPC
    carries them (tuples as lists; ints within 32 bits; no functions or instances)."""

    name = "xmlrpclib"
    int_bits = 32

    def __init__(self) -> None:
        import xmlrpc.client  # (only for those who ask for it: ~5 ms to import)

        self._xmlrpc = xmlrpc.client

    def prepare(self, value: Any) -> Any:
        try:
            return self._prepared(value)
        except (TypeError, OverflowError) as exc:
            raise serialization_error(f"cannot marshal {type(value).__name__}: {exc}", exc) from exc

    def _prepared(self, value: Any) -> Any:
        """XML-RPC's value semantics (as ``xmlrpc.client`` marshals it), shared objects kept."""
        if value is None or type(value) in (bool, str, float, bytes):
            return value
        if type(value) is int:
            if not -(1 << 31) <= value < 1 << 31:
                raise OverflowError("int exceeds XML-RPC limits")
            return value
        if type(value) is bytearray:
            return bytes(value)
        if isinstance(value, (list, tuple)):
            return [self._prepared(v) for v in value]
        if isinstance(value, dict):
            if not all(type(k) is str for k in value):
                raise TypeError("dictionary key must be string")
            return {k: self._prepared(v) for k, v in value.items()}
        if getattr(value, "_shares_as_proxy_", False):
            return value
        if hasattr(value, "__dict__") and not callable(value):
            return self._prepared(vars(value))  # (an instance: its attributes, as a struct)
        raise TypeError(f"cannot marshal {type(value)} objects")

    def _format_dumps(self, data: Any) -> bytes:
        return self._xmlrpc.dumps((data,), allow_none=True).encode("utf-8")

    def _format_loads(self, raw: bytes | bytearray) -> Any:
        ((data,), _method) = self._xmlrpc.loads(bytes(raw).decode("utf-8"), use_builtin_types=True)
        return data


class MsgpackSerializer(DataSerializer):
    """MessagePack (``pip install 'procshare[msgpack]'``): plain data only, and a server that
    speaks it never unpickles anything a client sends. Values arrive as they were sent (tuples
    stay tuples, through the tags); anything else (an instance, a function) is refused with a
    ``SerializationError`` before it is sent. Registered custom classes cannot be created
    through it (their arguments and results are data like any other), which is the point."""

    name = "msgpack"
    int_bits = 64

    def __init__(self) -> None:
        try:
            import msgpack  # type: ignore[import-untyped]
        except ImportError:
            raise ValueError(
                "the msgpack serializer needs the msgpack package: pip install 'procshare[msgpack]'"
            ) from None
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def _format_dumps(self, data: Any) -> bytes:
        return self._packb(data, use_bin_type=True)  # type: ignore[no-any-return]

    def _format_loads(self, raw: bytes | bytearray) -> Any:
        return self._unpackb(raw, raw=False, strict_map_key=False)
