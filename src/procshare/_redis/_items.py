"""Dicts and lists on Redis, item by item: a dict is a Redis hash, a list a Redis list.

A dict's entries are the hash ``<id>:e`` (field: the key's encoding, value: the value's) and
its insertion order the sorted set ``<id>:o`` (field -> insertion number), so iteration
follows Python's order. A list's items are the Redis list ``<id>:l``. So a set, a get, an
append or an index read is one script on one entry, whatever the size of the container, and
``HGETALL``/``LRANGE`` in ``redis-cli`` show what is inside.

What a single entry cannot do (``sort``, ``remove``, slices, ``popitem``, ``|=``...) is
done as the other containers are: on a copy of the whole, written back by compare-and-set
against the object's version (``<id>:v``, bumped by every change, item-wise ones included).

**Keys** are encoded canonically, so that keys Python finds equal are one field: ``True``,
``1`` and ``1.0`` are the key ``1``, as they are one key in a dict (it comes back as ``1``:
the one difference from a dict, documented). A str key is its UTF-8 text; others are
``\\x00`` and a tag: ``i`` int, ``f`` float, ``b`` bytes, ``n`` None, ``s`` a str that
starts with ``\\x00``, ``t`` a tuple of such keys (as canonical JSON). Other keys
(frozensets, objects) have no encoding equal objects are sure to share across processes and
machines and are refused with a ``TypeError``.

**Values**: a plain ``int`` in 64 bits is stored as its decimal digits (so ``HINCRBY`` and
other tools work on it); anything else as ``~`` and its serialized form.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, cast

__all__ = [
    "INT64",
    "ITEMWISE",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "plain_int",
]

#: the kinds kept item by item
ITEMWISE: Final = frozenset({"dict", "list"})

INT64: Final = (-(2**63), 2**63 - 1)

_KEY_TYPES: Final = "None, bool, int, float, str, bytes or tuples of them"


def plain_int(value: Any) -> bool:
    """Whether ``value`` is stored as decimal digits (an ``int``, not a ``bool``, in 64 bits)."""
    return type(value) is int and INT64[0] <= value <= INT64[1]


def encode_value(value: Any, dumps: Any) -> bytes:
    """How an item or a dict's value is stored."""
    if plain_int(value):
        return str(value).encode()
    blob: bytes
    blob = dumps(value)
    return b"~" + blob


def decode_value(stored: bytes, loads: Any) -> Any:
    """The value ``encode_value`` stored (a fresh copy)."""
    if stored[:1] == b"~":
        return loads(stored[1:])
    return int(stored)


def _canonical(key: Any) -> Any:
    """The one form of every key a dict finds equal to ``key``: a bool or a whole float is its
    int; a tuple, its items' forms. Raises ``TypeError`` for a key with no such form."""
    kind = type(key)
    if kind is str or kind is bytes or kind is int or key is None:
        return key
    if kind is bool:
        return int(key)
    if kind is float:
        if math.isnan(key):
            raise TypeError("a NaN is not a dict key on Redis (it equals nothing, itself included)")
        return int(key) if key.is_integer() else key
    if kind is tuple:
        return tuple(_canonical(k) for k in key)
    raise TypeError(
        f"a {type(key).__name__} is not a dict key on Redis: keys there are {_KEY_TYPES}"
    )


def _jsonable(key: Any) -> Any:
    """A canonical key as JSON can carry it: bytes as ``{"b": latin-1 text}``, tuples as
    lists (only tuples are lists here)."""
    if type(key) is bytes:
        return {"b": key.decode("latin-1")}
    if type(key) is tuple:
        return [_jsonable(k) for k in key]
    return key


def _from_json(value: Any) -> Any:
    if type(value) is list:
        return tuple(_from_json(v) for v in value)
    if type(value) is dict:
        return value["b"].encode("latin-1")
    return value


def encode_key(key: Any) -> bytes:
    """The field of ``key``: the same for every two keys a dict finds equal."""
    canon = _canonical(key)
    kind = type(canon)
    if kind is str:
        text = cast(str, canon)
        if text[:1] != "\x00":
            return text.encode("utf-8", "surrogatepass")
        return b"\x00s" + text.encode("utf-8", "surrogatepass")
    if kind is bytes:
        return b"\x00b" + cast(bytes, canon)
    if canon is None:
        return b"\x00n"
    if kind is int:
        return b"\x00i" + str(canon).encode()
    if kind is float:
        return b"\x00f" + repr(canon).encode()
    # a tuple: canonical JSON (no spaces, ASCII, floats by repr: the same text everywhere)
    text = json.dumps(_jsonable(canon), ensure_ascii=True, separators=(",", ":"))
    return b"\x00t" + text.encode()


def decode_key(field: bytes) -> Any:
    """The key ``encode_key`` made ``field`` from (in its canonical form: ``1``, not ``1.0``)."""
    if field[:1] != b"\x00":
        return field.decode("utf-8", "surrogatepass")
    tag, payload = field[1:2], field[2:]
    if tag == b"i":
        return int(payload)
    if tag == b"s":
        return payload.decode("utf-8", "surrogatepass")
    if tag == b"b":
        return payload
    if tag == b"n":
        return None
    if tag == b"f":
        return float(payload)
    if tag == b"t":  # (not ast.literal_eval: it is not thread-safe before Python 3.12)
        return _from_json(json.loads(payload))
    raise ValueError(f"not a key's encoding: {field!r}")
