"""The two ends of a procshare connection as pure state machines (the h11 pattern).

Bytes go in with ``receive_data(data)`` (``b""`` for end of file); typed events come out of
``next_event()`` until it returns ``NEED_DATA``; messages to send become bytes through the
``encode_*``/``send`` methods. Nothing here touches a socket, a thread, or a clock, so the
protocol is tested by driving two ends against each other in memory.

Handshake (mutual HMAC-SHA256 proof of the authkey; no payload is deserialized before it ends)::

    server -> HELLO   {"magic", "protocol", "nonce", "serializers", "max_frame"}
    client -> LOGIN   {"protocol", "serializer", "nonce", "proof", "info", "max_frame"}
    server -> WELCOME {"proof", "info"}        or DENIED {"reason"} and close

States: before it is ready, the server accepts LOGIN only, and the client the frame listed
for its state in ``_CLIENT_ACCEPTS`` (or DENIED); any other opcode is a protocol violation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, NamedTuple

from .._errors import (
    AuthenticationError,
    ErrorNotRebuildable,
    FrameTooLarge,
    MemoryLimitError,
    ProtocolError,
    RemoteError,
    ResultNotSerializable,
    SerializationError,
    ServerBusy,
)
from .._serializers import RunsCode, Serializer, get_serializer
from ._framing import (
    DEFAULT_MAX_FRAME,
    HANDSHAKE_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    Flag,
    FrameReader,
    pack,
)
from ._messages import (
    Batch,
    Call,
    Cancel,
    Control,
    Create,
    Drain,
    Failure,
    Goodbye,
    LeaseAcquire,
    LeasedRead,
    Op,
    Post,
    Push,
    ReadSince,
    Release,
    Result,
    Retain,
    Unwatch,
    Watch,
)

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Authenticated",
    "BadRequest",
    "ClientProtocol",
    "ConnState",
    "ConnectionClosed",
    "Deferred",
    "Ready",
    "ServerProtocol",
]

#: 6: posts go into a pipe of their own, read in batches (DRAIN: apply what is there first);
#: 5: a leasing acquire may borrow the lock (LEASE's ``borrow``, ``_loans``); 4: posted calls
#: (POST, and the CALL flag POSTING); 3: whole-object reads since a version, leased reads and
#: leasing acquires became messages of their own (SINCE, READ, LEASE), where 2 sent them as
#: calls of names such as "#SINCE"
PROTOCOL_VERSION: Final = 6
# Plain ints and members bound once: an enum attribute costs ~80 ns per look-up in 3.11, and
# next_event runs twice per call on each side.
_CALL: Final = int(Op.CALL)
_LOGIN: Final = int(Op.LOGIN)
_RESULT: Final = int(Op.RESULT)
_FAILURE: Final = int(Op.FAILURE)
_PUSH: Final = int(Op.PUSH)
_VERSIONED: Final = int(Flag.VERSIONED)
_THINKS: Final = int(Flag.THINKS)
_EMPTY: Final = int(Flag.EMPTY)
_CROWDED: Final = int(Flag.CROWDED)
_SPIN: Final = int(Flag.SPIN)
_CPU_MASK: Final = int(Flag._CPU_MASK)
_CPU_SHIFT: Final = int(Flag.CPU_SHIFT)
_tuple_new: Final = tuple.__new__
_AFTER_LENGTH: Final = HEADER_SIZE - 4  # header bytes the length field counts
_ID_MASK: Final = 0xFFFFFFFF
_HEADER_PACK: Final[Callable[..., bytes]] = HEADER.pack
_HEADER_UNPACK: Final[Callable[..., tuple[int, int, int, int]]] = HEADER.unpack_from
_U32: Final = struct.Struct("!I")
#: a POST's stamp: a double, seconds of CLOCK_MONOTONIC
_STAMP: Final = struct.Struct("!d")
_POST: Final = int(Op.POST)
#: DRAIN carries nothing: one message serves them all
_DRAIN: Final = Drain()
_POSTING: Final = int(Flag.POSTING)
#: the flags a CALL carries that its ``Call`` records, and their values there by those bits
_CALL_FLAG_BITS: Final = _VERSIONED | _POSTING
_CALL_FLAGS: Final = {
    bits: (bool(bits & _VERSIONED), bool(bits & _POSTING))
    for bits in (0, _VERSIONED, _POSTING, _VERSIONED | _POSTING)
}
_INF: Final = float("inf")
#: the requests for one object other than CALL, and their opcodes
_ADDRESSED: Final[dict[type, Op]] = {
    ReadSince: Op.SINCE,
    LeaseAcquire: Op.LEASE,
    LeasedRead: Op.READ,
}
_ADDRESSED_OPS: Final = frozenset(int(op) for op in _ADDRESSED.values())
#: requests whose decoding may run code the sender names (``ServerProtocol.defer``)
_DEFERRABLE: Final = frozenset({int(Op.CALL), int(Op.CREATE), int(Op.BATCH)}) | _ADDRESSED_OPS


Payload = bytes | bytearray  # what the frame reader hands out
MAGIC: Final = "procshare"
NONCE_SIZE: Final = 32


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event()`` returns this when no complete event is buffered.
NEED_DATA: Final = _NeedData()


class ConnState(Enum):
    """Where a connection is in its life."""

    AWAIT_HELLO = "await-hello"  # client: waiting for the server's greeting
    AWAIT_LOGIN = "await-login"  # server: greeting sent, waiting for credentials
    AWAIT_WELCOME = "await-welcome"  # client: credentials sent
    READY = "ready"  # authenticated: requests and replies flow
    CLOSED = "closed"  # end of file seen, or a fatal error


_READY: Final = ConnState.READY


class Authenticated(NamedTuple):
    """Server side: the client proved it knows the authkey."""

    serializer: str
    info: dict[str, Any]


class Ready(NamedTuple):
    """Client side: the server proved it knows the authkey; requests may flow."""

    info: dict[str, Any]


class BadRequest(NamedTuple):
    """Server side: a well-framed request whose payload could not be decoded.

    Not fatal to the connection: the server answers ``req_id`` with ``error`` and carries on.
    """

    req_id: int
    error: Exception


class Deferred(NamedTuple):
    """Server side: a request whose payload may run the sender's code as it is decoded (it
    names a class or a function: a custom value's ``__reduce__`` or ``__setstate__``). Decode
    it with ``decode_deferred`` where that cannot stall others (another thread)."""

    opcode: int
    flags: int
    req_id: int
    payload: bytes | bytearray


class ConnectionClosed(NamedTuple):
    """The peer closed its end. ``truncated`` when it stopped in the middle of a frame."""

    truncated: bool = False


def _proof(authkey: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(authkey, label + first + second, hashlib.sha256).digest()


def _json_frame(opcode: Op, body: dict[str, Any]) -> bytes:
    return pack(opcode, 0, 0, json.dumps(body, separators=(",", ":")).encode())


def _json_body(payload: Payload) -> dict[str, Any]:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"handshake payload is not JSON: {exc}") from None
    except RecursionError:  # (nested deeper than the interpreter's stack: garbage, or abuse)
        raise ProtocolError("handshake payload is nested too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("handshake payload is not a JSON object")
    return body


def busy_frame(reason: str) -> bytes:
    """What a server sends, in place of its greeting, to a connection it will not serve
    (it has as many as it allows): the client raises ``ServerBusy``."""
    return _json_frame(Op.DENIED, {"reason": reason, "busy": True})


def _hex_field(body: dict[str, Any], key: str, size: int) -> bytes:
    value = body.get(key)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise ProtocolError(f"handshake field {key!r} must be {size} hex-encoded bytes")
    return raw


def _not_ready(_value: Any) -> Any:
    raise ProtocolError("the connection is not authenticated yet")


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Base:
    """What both ends share: the frame reader, the state, and the serializer once agreed."""

    def __init__(self, authkey: bytes, max_frame: int) -> None:
        if not isinstance(authkey, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
        self._authkey = bytes(authkey)
        self._max_frame = max_frame
        #: the largest frame the peer accepts (told during the handshake)
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self._reader = FrameReader(min(max_frame, HANDSHAKE_MAX_FRAME))
        #: How many bytes to ask the socket for next: enough for the rest of a large frame
        #: under way (one read instead of many), else ``RECV_SIZE``. (The reader's own method:
        #: it is asked before every read.)
        self.recv_size: Callable[[], int] = self._reader.recv_size
        #: Whether received bytes remain that ``next_event`` has not turned into events.
        self.has_buffered: Callable[[], bool] = self._reader.has_buffered
        self._eof = False
        self._out: list[bytes] = []
        self.state: ConnState = ConnState.CLOSED
        self.serializer: Serializer | None = None
        self._dumps: Any = _not_ready
        self._loads: Any = _not_ready
        self._loads_here: Any = _not_ready
        self._prepare: Any = None
        self._true = self._false = b""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its end."""
        if data:
            if self._eof:
                raise ProtocolError("data received after end of file")
            self._reader.feed(data)
        else:
            self._eof = True

    @property
    def peer_closed(self) -> bool:
        """Whether the peer's end of file was received (events may still be buffered)."""
        return self._eof

    def data_to_send(self) -> bytes:
        """Bytes the state machine produced by itself (handshake frames), to be sent in order."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _next_frame(self) -> Any:
        """The next whole frame ``(opcode, flags, req_id, payload)``, else the event that
        stands for its absence (``NEED_DATA``, ``ConnectionClosed``)."""
        if self.state is ConnState.CLOSED:
            return ConnectionClosed()
        try:
            frame = self._reader.next_frame()
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if frame is None:
            return self._closed_event() if self._eof else NEED_DATA
        return frame

    def _closed_event(self) -> ConnectionClosed:
        self.state = ConnState.CLOSED
        return ConnectionClosed(truncated=self._reader.has_buffered())

    def _fail(self, exc: Exception) -> Exception:
        self.state = ConnState.CLOSED
        return exc

    def _frame(self, opcode: int, flags: int, req_id: int, payload: bytes) -> bytes:
        """A frame for the peer, refused (nothing sent) if it exceeds the peer's limit."""
        if len(payload) + 6 > self.peer_max_frame:
            raise FrameTooLarge(
                f"a message of {len(payload) + 6} bytes exceeds the peer's limit of "
                f"{self.peer_max_frame} bytes"
            )
        return pack(opcode, flags, req_id, payload)

    def _enter_ready(self, serializer: Serializer) -> None:
        self.serializer = serializer
        self._dumps = serializer.dumps
        self._loads = serializer.loads
        self._loads_here = serializer.loads_here
        #: a data serializer's value semantics, applied to what users send and get (``_data``)
        self._prepare = getattr(serializer, "prepare", None)
        self._true = serializer.dumps(True)
        self._false = serializer.dumps(False)
        self._reader.max_frame = self._max_frame
        self.state = ConnState.READY


class ServerProtocol(_Base):
    """The server's end of one connection.

    Args:
        authkey: the shared secret; clients must prove they know it.
        serializers: names the server accepts, in order of preference.
        info: sent to the client in WELCOME once it has authenticated (server pid, session id).
        max_frame: largest frame accepted after authentication.
        nonce: the challenge; random unless a test fixes it.
    """

    def __init__(
        self,
        authkey: bytes,
        *,
        serializers: tuple[str, ...] = ("pickle",),
        info: dict[str, Any] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(authkey, max_frame)
        for name in serializers:
            get_serializer(name)  # fail at construction, not at the first login
        self._serializers = serializers
        #: the THINKS hint of the last CALL received (see ``Flag.THINKS``)
        self.client_thinks = False
        #: hand requests whose decoding would run code they name over as ``Deferred`` (the
        #: transport decodes them off its thread: ``Serializer.loads_here``, which stops at
        #: the first such name, before running anything); off: decode everything as it comes.
        #: A payload that holds ``defer_unless`` is decoded as it comes all the same (the
        #: transport's own objects, which must be rebuilt where it runs).
        self.defer = False
        self.defer_unless = b""
        #: what was read from the client's post pipe and not applied yet (``next_post``)
        self._posts = FrameReader(max_frame)
        self._info = dict(info or {})
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self.state = ConnState.AWAIT_LOGIN
        self._out.append(
            _json_frame(
                Op.HELLO,
                {
                    "magic": MAGIC,
                    "protocol": PROTOCOL_VERSION,
                    "nonce": self._nonce.hex(),
                    "serializers": list(serializers),
                    "max_frame": max_frame,
                },
            )
        )

    # -- events -------------------------------------------------------------------------------

    def next_event(self) -> Any:
        """Return the next event: a request message, ``Authenticated``, ``BadRequest``,
        ``ConnectionClosed``, or ``NEED_DATA``.

        Raises:
            AuthenticationError: the client's proof is wrong (a DENIED frame is queued in
                ``data_to_send()``; close the connection after sending it).
            ProtocolError: the client broke the protocol; close the connection.
        """
        # ``_next_frame`` written out for the READY state: every request passes here, and the
        # call (and its CLOSED check) would cost more than the lines it saves.
        if self.state is not _READY:
            return self._next_event_unready()
        try:
            frame = self._reader.next_frame()
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if frame is None:
            return self._closed_event() if self._eof else NEED_DATA
        return self._decode_request(*frame)

    def _decode_request(self, opcode: int, flags: int, req_id: int, payload: Payload) -> Any:
        """The request of one frame (``next_event``'s and ``take_call``'s)."""
        if opcode == _CALL:
            return self._take_call(flags, req_id, payload)
        if opcode in _ADDRESSED_OPS:
            self.client_thinks = bool(flags & _THINKS)
        if self.defer and opcode in _DEFERRABLE:
            return self._decode_here(opcode, flags, req_id, payload)
        decode = _REQUEST_DECODERS.get(opcode)
        if decode is None:
            raise self._fail(ProtocolError(f"unexpected opcode {opcode} from client"))
        return decode(self, req_id, payload)

    def _next_event_unready(self) -> Any:
        """``next_event`` before authentication (only LOGIN is accepted) and after the end."""
        frame = self._next_frame()
        if type(frame) is not tuple:
            return frame
        opcode, _flags, _req_id, payload = frame
        if opcode != _LOGIN:
            raise self._fail(ProtocolError(f"expected LOGIN, got opcode {opcode}"))
        return self._login(_json_body(payload))

    def _login(self, body: dict[str, Any]) -> Authenticated:
        if body.get("protocol") != PROTOCOL_VERSION:
            self._deny(f"protocol version {body.get('protocol')!r} is not {PROTOCOL_VERSION}")
            raise self._fail(ProtocolError("client speaks another protocol version"))
        name = body.get("serializer")
        if name not in self._serializers:
            self._deny(f"serializer {name!r} is not accepted; use one of {self._serializers}")
            raise self._fail(ProtocolError(f"client asked for serializer {name!r}"))
        try:
            client_nonce = _hex_field(body, "nonce", NONCE_SIZE)
            proof = _hex_field(body, "proof", hashlib.sha256().digest_size)
        except ProtocolError:
            self._deny("malformed login")
            raise
        expected = _proof(self._authkey, b"procshare-login", self._nonce, client_nonce)
        if not hmac.compare_digest(proof, expected):
            self._deny("authentication failed: wrong authkey")
            raise self._fail(AuthenticationError("client failed the authkey challenge"))
        info = body.get("info")
        limit = body.get("max_frame")
        if isinstance(limit, int) and limit >= HEADER_SIZE:
            self.peer_max_frame = limit
        welcome = {
            "proof": _proof(self._authkey, b"procshare-welcome", client_nonce, self._nonce).hex(),
            "info": self._info,
        }
        self._out.append(_json_frame(Op.WELCOME, welcome))
        self._enter_ready(get_serializer(str(name)))
        return Authenticated(str(name), info if isinstance(info, dict) else {})

    def _deny(self, reason: str) -> None:
        self._out.append(_json_frame(Op.DENIED, {"reason": reason}))

    def take_call(self, data: bytes) -> Any:
        """The request in ``data`` (a ``Call``, another request for one object, a
        ``BadRequest`` or a ``Deferred``) if it is exactly one such frame and nothing else is
        buffered, else ``NEED_DATA`` (``data`` untouched:
        feed it as usual).

        The usual request, decoded without the frame reader and the event loop of
        ``next_event``. (Never decoded twice: unpickling a proxy counts a reference.)
        """
        if self.state is not _READY or self._reader.has_buffered() or len(data) < HEADER_SIZE:
            return NEED_DATA
        length, opcode, flags, req_id = _HEADER_UNPACK(data, 0)
        if length + 4 != len(data) or length > self._reader.max_frame:
            return NEED_DATA
        if opcode == _CALL:
            return self._take_call(flags, req_id, data[HEADER_SIZE:])
        if opcode not in _ADDRESSED_OPS:
            return NEED_DATA
        return self._decode_request(opcode, flags, req_id, data[HEADER_SIZE:])

    def _take_call(self, flags: int, req_id: int, payload: Payload) -> Any:
        """A CALL's request: ``_decode_request`` and ``_decode_call`` written out for its
        usual shape (every request passes here); anything unusual goes the long way."""
        self.client_thinks = bool(flags & _THINKS)
        try:
            body = self._loads_here(payload) if self.defer else self._loads(payload)
        except RunsCode:  # (nothing it names has run: decided the long way)
            return self._decode_here(_CALL, flags, req_id, payload)
        except SerializationError as exc:
            return BadRequest(req_id, exc)
        return self._call_of(req_id, body, flags)

    def _decode_here(self, opcode: int, flags: int, req_id: int, payload: Payload) -> Any:
        """A deferrable request decoded here, unless that would run code it names: then a
        ``Deferred`` (or, holding ``defer_unless``, decoded here all the same)."""
        try:
            if opcode == _CALL:
                return self._decode_call(req_id, payload, flags, self._loads_here)
            return _REQUEST_DECODERS[opcode](self, req_id, payload, self._loads_here)
        except RunsCode:
            if self.defer_unless not in payload:
                return Deferred(opcode, flags, req_id, bytes(payload))
        if opcode == _CALL:
            return self._decode_call(req_id, payload, flags)
        return _REQUEST_DECODERS[opcode](self, req_id, payload)

    def decode_deferred(self, request: Deferred) -> Any:
        """Decode a ``Deferred`` request: the message it is, or a ``BadRequest``. Touches no
        state of the connection: any thread may call it while the connection waits."""
        opcode, flags, req_id, payload = request
        if opcode == _CALL:
            return self._decode_call(req_id, payload, flags)
        return _REQUEST_DECODERS[opcode](self, req_id, payload)

    # -- request decoders (READY) -----------------------------------------------------------

    def _payload(self, req_id: int, payload: Payload) -> Any:
        return self._loads(payload)

    def _decode_call(
        self, req_id: int, payload: Payload, flags: int = 0, loads: Any = None
    ) -> Call | BadRequest:
        """A CALL's message (its frame's ``flags``), decoded with ``loads`` (default: the
        serializer's ``loads``; ``loads_here`` raises ``RunsCode`` through this)."""
        try:
            body = (loads or self._loads)(payload)
        except SerializationError as exc:
            return BadRequest(req_id, exc)
        return self._call_of(req_id, body, flags)

    @staticmethod
    def _call_of(req_id: int, body: Any, flags: int) -> Call | BadRequest:
        """The ``Call`` a decoded CALL payload makes, or a ``BadRequest``."""
        # The common shape, checked inline (no keyword arguments); anything else the long way.
        if type(body) is tuple and len(body) == 5:
            obj_id, method, args, kwargs, owner = body
            if (
                kwargs is None
                and type(obj_id) is int
                and type(method) is str
                and type(args) is tuple
                and type(owner) is int
            ):
                fields = (req_id, obj_id, method, args, None, owner)
                return _tuple_new(Call, fields + _CALL_FLAGS[flags & _CALL_FLAG_BITS])
        try:
            call = _make_call(req_id, body)
        except ProtocolError as exc:
            return BadRequest(req_id, exc)
        if flags & (_VERSIONED | _POSTING):
            return call._replace(versioned=bool(flags & _VERSIONED), posting=bool(flags & _POSTING))
        return call

    def _decode_post(self, req_id: int, payload: Payload) -> Post | BadRequest:
        """A POST's message: a stamp, then ``(obj_id, method, args, owner)`` of plain data (a
        post is never decoded off the loop: one naming code is refused)."""
        if len(payload) < 8:
            raise self._fail(ProtocolError("POST payload must start with its stamp"))
        (stamp,) = _STAMP.unpack_from(payload, 0)
        try:
            body = (self._loads_here if self.defer else self._loads)(payload[8:])
        except RunsCode:
            return BadRequest(0, ProtocolError("a posted call's arguments must be plain data"))
        except SerializationError as exc:
            return BadRequest(0, exc)
        if not (type(body) is tuple and len(body) == 4):
            return BadRequest(
                0, ProtocolError("POST payload must be (obj_id, method, args, owner)")
            )
        obj_id, method, args, owner = body
        if (
            type(obj_id) is not int
            or type(method) is not str
            or type(args) is not tuple
            or type(owner) is not int
        ):
            return BadRequest(
                0, ProtocolError("POST needs an int id, a str method, a tuple of args")
            )
        return _tuple_new(Post, (obj_id, method, args, owner, stamp))

    def pending_stamp(self) -> float | None:
        """The stamp of the next buffered request if it is a complete POST, ``inf`` for any
        other complete request, ``None`` while no request is complete (``_server/_core``)."""
        return _stamp_of(self._reader, _INF)

    def _decode_create(
        self, req_id: int, payload: Payload, loads: Any = None
    ) -> Create | BadRequest:
        try:
            body = (loads or self._loads)(payload)
            if not (type(body) is tuple and len(body) == 4):
                raise ProtocolError("CREATE payload must be (typeid, args, kwargs, owner)")
            typeid, args, kwargs, owner = body
            if type(typeid) is not str:
                raise ProtocolError("CREATE typeid must be a str")
            _check_call_parts(args, kwargs, owner)
            return Create(req_id, typeid, args, kwargs, owner)
        except (SerializationError, ProtocolError) as exc:
            return BadRequest(req_id, exc)

    def _decode_pair(
        self, req_id: int, payload: Payload, first: type, second: type, shape: str
    ) -> tuple[Any, Any] | BadRequest:
        """A payload that must be a 2-tuple of exactly these types (a bad one is the
        request's own error, not the connection's)."""
        try:
            body = self._payload(req_id, payload)
            if not (
                type(body) is tuple
                and len(body) == 2
                and type(body[0]) is first
                and type(body[1]) is second
            ):
                raise ProtocolError(f"{shape}: malformed payload")
            return body
        except (SerializationError, ProtocolError) as exc:
            return BadRequest(req_id, exc)

    def _decode_addressed(
        self, req_id: int, payload: Payload, message: Any, loads: Any = None
    ) -> Any:
        """A request for one object other than a CALL (``ReadSince``, ``LeaseAcquire``,
        ``LeasedRead``): its fields after ``req_id``, as a tuple, the object id first and the
        owner last (both ints); the core checks the others."""
        try:
            body = (loads or self._loads)(payload)
            if not (
                type(body) is tuple
                and len(body) == len(message._fields) - 1
                and type(body[0]) is int
                and type(body[-1]) is int
            ):
                raise ProtocolError(f"{message.__name__}: malformed payload")
            return message(req_id, *body)
        except (SerializationError, ProtocolError) as exc:
            return BadRequest(req_id, exc)

    def _decode_since(self, req_id: int, payload: Payload, loads: Any = None) -> Any:
        return self._decode_addressed(req_id, payload, ReadSince, loads)

    def _decode_lease(self, req_id: int, payload: Payload, loads: Any = None) -> Any:
        return self._decode_addressed(req_id, payload, LeaseAcquire, loads)

    def _decode_read(self, req_id: int, payload: Payload, loads: Any = None) -> Any:
        return self._decode_addressed(req_id, payload, LeasedRead, loads)

    def _decode_control(self, req_id: int, payload: Payload) -> Control | BadRequest:
        body = self._decode_pair(req_id, payload, str, tuple, "CONTROL (command, args)")
        return body if type(body) is BadRequest else Control(req_id, *body)

    def _decode_batch(self, req_id: int, payload: Payload, loads: Any = None) -> Batch | BadRequest:
        try:
            body = (loads or self._loads)(payload)
            if type(body) is not tuple:
                raise ProtocolError("BATCH payload must be a tuple of calls")
            for item in body:
                if not (
                    type(item) is tuple
                    and len(item) == 5
                    and type(item[0]) is int
                    and type(item[1]) is str
                    and type(item[2]) is tuple
                    and type(item[4]) is int
                    and (item[3] is None or type(item[3]) is dict)
                ):
                    raise ProtocolError(
                        "each BATCH call must be (obj_id, method, args, kwargs, owner)"
                    )
                if item[3] is not None and not all(type(k) is str for k in item[3]):
                    raise ProtocolError("call keyword arguments must be a dict with str keys")
            return Batch(req_id, body)
        except (SerializationError, ProtocolError) as exc:
            return BadRequest(req_id, exc)

    def _decode_ids(self, req_id: int, payload: Payload) -> tuple[int, ...]:
        try:
            ids = self._payload(req_id, payload)
        except SerializationError:
            ids = None
        if type(ids) is not tuple or not all(type(i) is int for i in ids):
            raise self._fail(ProtocolError("RETAIN/RELEASE payload must be a tuple of ints"))
        return ids

    def _decode_retain(self, req_id: int, payload: Payload) -> Retain:
        return Retain(self._decode_ids(req_id, payload))

    def _decode_release(self, req_id: int, payload: Payload) -> Release:
        return Release(self._decode_ids(req_id, payload))

    def _decode_watch(self, req_id: int, payload: Payload) -> Watch | BadRequest:
        body = self._decode_pair(req_id, payload, int, dict, "WATCH (obj_id, options)")
        return body if type(body) is BadRequest else Watch(req_id, *body)

    def _decode_unwatch(self, req_id: int, payload: Payload) -> Unwatch | BadRequest:
        try:
            body = self._payload(req_id, payload)
            if type(body) is not int:
                raise ProtocolError("UNWATCH payload must be a subscription id")
            return Unwatch(req_id, body)
        except (SerializationError, ProtocolError) as exc:
            return BadRequest(req_id, exc)

    def _decode_cancel(self, req_id: int, payload: Payload) -> Cancel:
        if len(payload) != 4:
            raise self._fail(ProtocolError("CANCEL payload must be the target's request id"))
        return Cancel(_U32.unpack(payload)[0])

    def _decode_goodbye(self, req_id: int, payload: Payload) -> Goodbye:
        return Goodbye()

    def _decode_drain(self, req_id: int, payload: Payload) -> Drain:
        return _DRAIN

    # -- the post pipe -----------------------------------------------------------------------

    def feed_posts(self, data: bytes) -> None:
        """Append bytes read from the client's post pipe (``next_post`` takes them apart;
        that stream is apart from the requests': ``_server/_post_pipes``)."""
        self._posts.feed(data)

    def next_post_stamp(self) -> float | None:
        """The stamp of the next post fed from the post pipe if it is complete (``-inf`` for
        a complete frame that is no POST: ``next_post`` refuses it), else ``None``."""
        return _stamp_of(self._posts, -_INF)

    def next_post(self) -> Post | BadRequest | None:
        """The next post fed from the post pipe, or ``None`` while none is complete.

        Raises:
            ProtocolError: what the pipe holds is not a POST (close the connection).
        """
        reader = self._posts
        try:
            frame = reader.next_frame()
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if frame is None:
            return None
        opcode, _flags, _req_id, payload = frame
        if opcode != _POST:
            raise self._fail(
                ProtocolError(f"opcode {opcode} in the post pipe, where only POST goes")
            )
        return self._decode_post(0, payload)

    def has_posts_buffered(self) -> bool:
        """Whether bytes fed from the post pipe have not all been taken as posts yet."""
        return self._posts.has_buffered()

    # -- encoders (READY) --------------------------------------------------------------------

    def encode_result(self, req_id: int, value: Any, flags: int = 0) -> bytes:
        """Frame a successful reply. Never raises: an unserializable value becomes a failure."""
        if value is None:
            return _HEADER_PACK(_AFTER_LENGTH, _RESULT, flags | _EMPTY, req_id & _ID_MASK)
        if value is True or value is False:  # (a lock's grant, a test): serialized once
            known = self._true if value else self._false
            size = len(known) + _AFTER_LENGTH
            return _HEADER_PACK(size, _RESULT, flags, req_id & _ID_MASK) + known
        try:
            if self._prepare is not None:
                value = self._prepare(value)
            body: bytes = self._dumps(value)
            size = len(body) + _AFTER_LENGTH
            if size <= self.peer_max_frame:
                return _HEADER_PACK(size, _RESULT, flags, req_id & _ID_MASK) + body
            return self._frame(Op.RESULT, flags, req_id, body)  # raises FrameTooLarge
        except SerializationError as exc:
            return self.encode_failure(
                req_id, ResultNotSerializable(f"the result could not be serialized: {exc}"), flags
            )
        except FrameTooLarge as exc:
            return self.encode_failure(req_id, exc, flags)
        except MemoryError:  # (building the frame of a large result)
            return self.encode_failure(
                req_id, MemoryLimitError("the server had no memory left to send the result"), flags
            )

    @staticmethod
    def is_failure(frame: bytes) -> bool:
        """Whether ``frame`` (from ``encode_result``) reports a failure instead of a value."""
        return len(frame) > 4 and frame[4] == _FAILURE

    def serialize(self, value: Any) -> bytes:
        """The payload ``encode_result`` would carry for ``value`` (to reuse it later).

        Raises:
            SerializationError: ``value`` cannot be serialized.
        """
        if self._prepare is not None:
            value = self._prepare(value)
        return self._dumps(value)  # type: ignore[no-any-return]

    def encode_serialized(self, req_id: int, payload: bytes, flags: int = 0) -> bytes:
        """Frame a successful reply whose payload was produced by ``serialize``."""
        try:
            return self._frame(Op.RESULT, flags, req_id, payload)
        except FrameTooLarge as exc:
            return self.encode_failure(req_id, exc, flags)

    def encode_failure(self, req_id: int, error: BaseException, flags: int = 0) -> bytes:
        """Frame a failed reply. Never raises: an unserializable error becomes a RemoteError,
        one that would not unpickle on the other side an ``ErrorNotRebuildable``."""
        text = f"{type(error).__name__}: {error}"
        try:
            payload = self._dumps(error)
        except SerializationError:
            payload = self._dumps(RemoteError(text, _exception_text(error)))
            return pack(Op.FAILURE, flags, req_id, payload)
        if type(error).__module__ != "builtins":  # (the builtins rebuild: KeyError, ...)
            try:
                self._loads(payload)
            except SerializationError:
                payload = self._dumps(ErrorNotRebuildable(text, _exception_text(error)))
        return pack(Op.FAILURE, flags, req_id, payload)

    def encode_push(self, sub_id: int, payload: Any) -> bytes:
        """Frame an unrequested message for subscription ``sub_id``."""
        return pack(Op.PUSH, 0, sub_id, self._dumps(payload))


def _check_call_parts(args: Any, kwargs: Any, owner: Any) -> None:
    if type(args) is not tuple:
        raise ProtocolError("call arguments must be a tuple")
    if kwargs is not None and not (type(kwargs) is dict and all(type(k) is str for k in kwargs)):
        raise ProtocolError("call keyword arguments must be a dict with str keys")
    if type(owner) is not int:
        raise ProtocolError("call owner must be an int")


def _make_call(req_id: int, body: Any) -> Call:
    if not (type(body) is tuple and len(body) == 5):
        raise ProtocolError("CALL payload must be (obj_id, method, args, kwargs, owner)")
    obj_id, method, args, kwargs, owner = body
    if type(obj_id) is not int or type(method) is not str:
        raise ProtocolError("CALL needs an int object id and a str method name")
    _check_call_parts(args, kwargs, owner)
    return Call(req_id, obj_id, method, args, kwargs, owner)


def _stamp_of(reader: FrameReader, other: float) -> float | None:
    """The stamp of the next frame ``reader`` holds whole if it is a POST, ``other`` if it is
    another, ``None`` while none is whole (it stays buffered)."""
    head = reader.peek()
    if head is None:
        return None
    opcode, first = head
    if opcode != _POST or len(first) < 8:
        return other
    return float(_STAMP.unpack(first)[0])


_REQUEST_DECODERS: dict[int, Any] = {
    Op.CALL: ServerProtocol._decode_call,
    Op.CREATE: ServerProtocol._decode_create,
    Op.CONTROL: ServerProtocol._decode_control,
    Op.BATCH: ServerProtocol._decode_batch,
    Op.RETAIN: ServerProtocol._decode_retain,
    Op.RELEASE: ServerProtocol._decode_release,
    Op.WATCH: ServerProtocol._decode_watch,
    Op.UNWATCH: ServerProtocol._decode_unwatch,
    Op.CANCEL: ServerProtocol._decode_cancel,
    Op.GOODBYE: ServerProtocol._decode_goodbye,
    Op.SINCE: ServerProtocol._decode_since,
    Op.LEASE: ServerProtocol._decode_lease,
    Op.READ: ServerProtocol._decode_read,
    Op.POST: ServerProtocol._decode_post,
    Op.DRAIN: ServerProtocol._decode_drain,
}


class ClientProtocol(_Base):
    """The client's end of one connection.

    Args:
        authkey: the shared secret.
        serializer: the serializer to ask for.
        info: told to the server at login (pid, process name): shows in ``stats`` and ``top``.
        max_frame: largest frame accepted from the server.
        nonce: the client's challenge; random unless a test fixes it.
    """

    def __init__(
        self,
        authkey: bytes,
        *,
        serializer: str = "pickle",
        info: dict[str, Any] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(authkey, max_frame)
        self._wanted = get_serializer(serializer)
        self._info = dict(info or {})
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._server_nonce = b""
        self.state = ConnState.AWAIT_HELLO
        #: The server's advice with the last reply: ``Flag.CROWDED`` and ``Flag.SPIN``.
        self.server_crowded = False
        self.server_spin = False
        #: The CPU the server last answered from, or -1 if it did not say (see ``Flag``).
        self.server_cpu = -1

    def next_event(self) -> Any:
        """Return the next event: ``Ready``, ``Result``, ``Failure``, ``Push``,
        ``ConnectionClosed`` or ``NEED_DATA``.

        Raises:
            AuthenticationError: the server denied the login, or failed to prove the authkey.
            ProtocolError: the server broke the protocol.
        """
        # ``_next_frame`` written out for the READY state, as in the server's next_event: every
        # reply passes here.
        if self.state is not _READY:
            return self._next_event_unready()
        try:
            frame = self._reader.next_frame()
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if frame is None:
            return self._closed_event() if self._eof else NEED_DATA
        opcode, flags, req_id, payload = frame
        self.server_crowded = bool(flags & _CROWDED)
        self.server_spin = bool(flags & _SPIN)
        self.server_cpu = ((flags & _CPU_MASK) >> _CPU_SHIFT) - 1
        if opcode == _RESULT:
            if flags & _EMPTY:
                return _tuple_new(Result, (req_id, None))
            try:
                return _tuple_new(Result, (req_id, self._loads(payload)))
            except SerializationError as exc:
                return Failure(req_id, exc)
        if opcode == _FAILURE:
            return Failure(req_id, self._decode_error(payload))
        if opcode == _PUSH:
            try:
                return Push(req_id, self._loads(payload))
            except SerializationError as exc:
                return Push(req_id, exc)
        raise self._fail(ProtocolError(f"unexpected opcode {opcode} from server"))

    def take_result(self, data: bytes, req_id: int) -> Any:
        """The reply in ``data`` (a ``Result`` or ``Failure``) if it is exactly one RESULT for
        ``req_id`` and nothing else is buffered, else ``NEED_DATA`` (``data`` untouched: feed
        it as usual).

        The usual reply, decoded without the frame reader and the event loop of
        ``next_event``; the server's hints are updated as there. (Never decoded twice:
        unpickling a proxy takes over a reference.)
        """
        if self.state is not _READY or self._reader.has_buffered() or len(data) < HEADER_SIZE:
            return NEED_DATA
        length, opcode, flags, rid = _HEADER_UNPACK(data, 0)
        if opcode != _RESULT or rid != req_id or length + 4 != len(data):
            return NEED_DATA
        if length > self._reader.max_frame:
            return NEED_DATA  # (the reader raises FrameTooLarge for it)
        self.server_crowded = bool(flags & _CROWDED)
        self.server_spin = bool(flags & _SPIN)
        self.server_cpu = ((flags & _CPU_MASK) >> _CPU_SHIFT) - 1
        if flags & _EMPTY:
            return _tuple_new(Result, (req_id, None))
        try:
            return _tuple_new(Result, (req_id, self._loads(data[HEADER_SIZE:])))
        except SerializationError as exc:
            return Failure(req_id, exc)

    def _next_event_unready(self) -> Any:
        """``next_event`` during the handshake and after the end."""
        frame = self._next_frame()
        if type(frame) is not tuple:
            return frame
        opcode, _flags, _req_id, payload = frame
        expected = _CLIENT_ACCEPTS[self.state]
        if opcode == Op.DENIED:
            denied = _json_body(payload)
            reason = denied.get("reason", "login refused")
            if denied.get("busy"):
                raise self._fail(ServerBusy(f"server refused the connection: {reason}"))
            raise self._fail(AuthenticationError(f"server refused the connection: {reason}"))
        if opcode != expected:
            raise self._fail(ProtocolError(f"expected {expected.name}, got opcode {opcode}"))
        body = _json_body(payload)
        if opcode == Op.HELLO:
            self._hello(body)
            return self.next_event()
        return self._welcome(body)

    def _hello(self, body: dict[str, Any]) -> None:
        if body.get("magic") != MAGIC:
            raise self._fail(ProtocolError("the peer is not a procshare server"))
        if body.get("protocol") != PROTOCOL_VERSION:
            raise self._fail(
                ProtocolError(
                    f"server speaks protocol {body.get('protocol')!r}, we speak {PROTOCOL_VERSION}"
                )
            )
        offered = body.get("serializers")
        if not isinstance(offered, list) or self._wanted.name not in offered:
            raise self._fail(
                ProtocolError(
                    f"server does not accept serializer {self._wanted.name!r} (it accepts "
                    f"{', '.join(map(repr, offered)) if isinstance(offered, list) else 'none'}: "
                    "pass serializer= to the manager)"
                )
            )
        self._server_nonce = _hex_field(body, "nonce", NONCE_SIZE)
        limit = body.get("max_frame")
        if isinstance(limit, int) and limit >= HEADER_SIZE:
            self.peer_max_frame = limit
        login = {
            "protocol": PROTOCOL_VERSION,
            "serializer": self._wanted.name,
            "nonce": self._nonce.hex(),
            "proof": _proof(
                self._authkey, b"procshare-login", self._server_nonce, self._nonce
            ).hex(),
            "info": self._info,
            "max_frame": self._max_frame,
        }
        self._out.append(_json_frame(Op.LOGIN, login))
        self.state = ConnState.AWAIT_WELCOME

    def _welcome(self, body: dict[str, Any]) -> Ready:
        proof = _hex_field(body, "proof", hashlib.sha256().digest_size)
        expected = _proof(self._authkey, b"procshare-welcome", self._nonce, self._server_nonce)
        if not hmac.compare_digest(proof, expected):
            raise self._fail(AuthenticationError("server failed the authkey challenge"))
        self._enter_ready(self._wanted)
        info = body.get("info")
        return Ready(info if isinstance(info, dict) else {})

    def _decode_error(self, payload: Payload) -> BaseException:
        try:
            error = self._loads(payload)
        except SerializationError as exc:
            return RemoteError(
                f"the server raised an error that cannot be deserialized here: {exc}"
            )
        if not isinstance(error, BaseException):
            return ProtocolError(f"FAILURE payload is not an exception: {type(error).__name__}")
        return error

    # -- encoders ------------------------------------------------------------------------------

    def encode_call(
        self,
        req_id: int,
        obj_id: int,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        owner: int = 0,
        versioned: bool = False,
        thinks: bool = False,
        posting: bool = False,
    ) -> bytes:
        """Frame a CALL. Raises SerializationError (nothing sent) if an argument won't pickle.

        ``thinks``: the caller computed for a while since its last call (``Flag.THINKS``);
        ``posting``: it asks to post this method's next calls (``Call.posting``).
        """
        prepare = self._prepare
        if prepare is not None:
            args = tuple(prepare(a) for a in args)
            if kwargs:
                kwargs = {k: prepare(v) for k, v in kwargs.items()}
        body: bytes = self._dumps((obj_id, method, args, kwargs, owner))
        size = len(body) + 6
        if size > self.peer_max_frame:
            self._frame(Op.CALL, 0, req_id, body)  # raises FrameTooLarge with the details
        flags = (_VERSIONED if versioned else 0) | (_THINKS if thinks else 0)
        if posting:
            flags |= _POSTING
        return _HEADER_PACK(size, _CALL, flags, req_id & _ID_MASK) + body

    def encode_post(
        self, obj_id: int, method: str, args: tuple[Any, ...], owner: int, stamp: float
    ) -> bytes | None:
        """Frame a POST stamped ``stamp``, or ``None`` where its arguments are not plain data
        (the server decodes a post as it comes, so it must name no code: make it a call).

        Raises:
            SerializationError: an argument cannot be serialized (nothing is sent).
        """
        body: bytes = self._dumps((obj_id, method, args, owner))
        serializer = self.serializer
        if serializer is None or serializer.names_code(body):
            return None
        size = len(body) + 14
        if size > self.peer_max_frame:
            return None
        return _HEADER_PACK(size, _POST, 0, 0) + _STAMP.pack(stamp) + body

    def send(self, msg: Any, thinks: bool = False) -> bytes:
        """Frame any client message (``thinks``: as for ``encode_call``, on the requests for
        one object).

        Raises:
            SerializationError: a value in the message cannot be serialized; nothing is sent.
        """
        if self.state is not ConnState.READY:
            raise ProtocolError(f"cannot send {type(msg).__name__} in state {self.state.value}")
        dumps = self._dumps
        if type(msg) is Call:
            return self.encode_call(*msg)
        op = _ADDRESSED.get(type(msg))  # (a leased read, a lock's leasing acquire: next)
        if op is not None:
            return self._frame(op, _THINKS if thinks else 0, msg.req_id, dumps(tuple(msg[1:])))
        if type(msg) is Create:
            return self._frame(Op.CREATE, 0, msg.req_id, dumps(msg[1:]))
        if type(msg) is Control:
            return self._frame(Op.CONTROL, 0, msg.req_id, dumps((msg.command, msg.args)))
        if type(msg) is Batch:
            return self._frame(Op.BATCH, 0, msg.req_id, dumps(tuple(msg.calls)))
        if type(msg) is Retain:
            return pack(Op.RETAIN, 0, 0, dumps(tuple(msg.obj_ids)))
        if type(msg) is Release:
            return pack(Op.RELEASE, 0, 0, dumps(tuple(msg.obj_ids)))
        if type(msg) is Watch:
            return pack(Op.WATCH, 0, msg.req_id, dumps((msg.obj_id, msg.options)))
        if type(msg) is Unwatch:
            return pack(Op.UNWATCH, 0, msg.req_id, dumps(msg.sub_id))
        if type(msg) is Cancel:
            return pack(Op.CANCEL, 0, 0, _U32.pack(msg.target & _ID_MASK))  # (no pickle: cheap)
        if type(msg) is Goodbye:
            return pack(Op.GOODBYE, 0, 0)
        if type(msg) is Drain:
            return pack(Op.DRAIN, 0, 0)
        raise TypeError(f"not a client message: {type(msg).__name__}")


_CLIENT_ACCEPTS: Final = {
    ConnState.AWAIT_HELLO: Op.HELLO,
    ConnState.AWAIT_WELCOME: Op.WELCOME,
}
