"""Length-prefixed frames: the only byte layout on the wire.

A frame is a 10-byte header followed by a payload::

    u32 length   number of bytes after this field (6 + len(payload)), big-endian
    u8  opcode   what the payload is (see ``_messages.Op``)
    u8  flags    per-frame bits (``Flag``)
    u32 req_id   request id; replies carry the id of their request, pushes their subscription

Invariants: a reader never buffers more than one frame beyond ``max_frame`` bytes, and rejects a
length prefix above ``max_frame`` as soon as the header arrives, before any payload is read, so a
peer that claims gigabytes costs nothing. A frame with a length below the header size is garbage.
"""

from __future__ import annotations

import struct
from typing import Final

from .._errors import FrameTooLarge, ProtocolError

HEADER: Final = struct.Struct("!IBBI")
HEADER_SIZE: Final = HEADER.size  # 10
_AFTER_LENGTH: Final = HEADER_SIZE - 4  # header bytes counted by the length field

#: Default limit for one frame, both directions. Configurable per connection.
DEFAULT_MAX_FRAME: Final = 256 * 1024 * 1024
#: bytes a read asks for. Below glibc's mmap threshold (128 KiB) on purpose: a larger buffer
#: that a short read then shrinks is mapped and unmapped on every read (measured 14 us a read
#: instead of 2 us in a process with a small heap).
RECV_SIZE: Final = 64 * 1024
#: the most a read asks for to finish a large frame under way
MAX_RECV_SIZE: Final = 8 * 1024 * 1024
#: Limit before the peer has authenticated: the handshake is a few hundred bytes.
HANDSHAKE_MAX_FRAME: Final = 16 * 1024


class Flag:
    """Bits of the flags byte.

    Bit 0 means the same both ways (``EMPTY``). On requests, bit 2 is ``VERSIONED``, bit 3
    ``THINKS`` and bit 4 ``POSTING``. On replies, bits 1 and 7 are the server's advice on
    waiting (``CROWDED``, ``SPIN``), and bits 2-6 carry ``cpu + 1`` of the CPU the server
    answered from (0: unknown): where a client should run (see ``_sched``).
    """

    #: The payload is omitted: the value is ``None`` (saves a serializer call per reply).
    EMPTY: Final = 0x01
    #: On replies: other clients of the server are running too, so a client stays on its CPU
    #: instead of moving next to the server (they would crowd onto one CPU).
    CROWDED: Final = 0x02
    #: On a CALL: reply with ``(result, version)`` (see ``Call.versioned``).
    VERSIONED: Final = 0x04
    #: On a CALL: the client computed for a while since its previous call returned (it holds
    #: a CPU between its calls, rather than waiting on the server most of the time).
    THINKS: Final = 0x08
    #: On a CALL: reply with ``(result, registered)`` (see ``Call.posting``).
    POSTING: Final = 0x10
    #: On replies: busy-polling for the next reply takes nobody's CPU now (no process is
    #: waiting for one but the server's own clients, and none of them computes between calls).
    SPIN: Final = 0x80
    #: Shift and limit of the server CPU field (bits 2-6).
    CPU_SHIFT: Final = 2
    CPU_LIMIT: Final = 31
    _CPU_MASK: Final = 0x1F << 2

    @staticmethod
    def with_cpu(flags: int, cpu: int) -> int:
        """``flags`` with the CPU field set to ``cpu`` (unknown when out of range)."""
        field = cpu + 1 if 0 <= cpu < Flag.CPU_LIMIT else 0
        return (flags & ~Flag._CPU_MASK & 0xFF) | (field << Flag.CPU_SHIFT)

    @staticmethod
    def cpu_of(flags: int) -> int:
        """The CPU field of ``flags``: the server's CPU, or -1 if unknown."""
        return ((flags & Flag._CPU_MASK) >> Flag.CPU_SHIFT) - 1


def pack(opcode: int, flags: int, req_id: int, payload: bytes = b"") -> bytes:
    """Return one frame with ``payload``."""
    return HEADER.pack(len(payload) + _AFTER_LENGTH, opcode, flags, req_id & 0xFFFFFFFF) + payload


class FrameReader:
    """Accumulates received bytes and cuts them into frames.

    ``feed(data)`` appends bytes; ``next_frame()`` returns ``(opcode, flags, req_id, payload)``
    for each complete frame, then ``None`` when more data is needed. When a read ends on a
    frame boundary (the usual case: one reply per read), the data is used as it came, without
    copying it into a buffer first; the reader may therefore keep a reference to ``data``.
    """

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame must be at least {HEADER_SIZE}, got {max_frame}")
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self.max_frame = max_frame

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        buf = self._buf
        if self._pos >= len(buf):
            # Everything before was consumed: take the new bytes as they are (no copy).
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if type(buf) is not bytearray:
            buf = bytearray(buf[self._pos :])  # a frame is split across reads: buffer it
        elif self._pos:
            del buf[: self._pos]  # drop what was consumed: one memmove per feed at most
        self._pos = 0
        buf += data
        self._buf = buf

    def recv_size(self) -> int:
        """How many bytes to ask the socket for: enough for the rest of a large frame under
        way (one read instead of many), else ``RECV_SIZE``."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return RECV_SIZE  # the usual case: nothing, or a few bytes, buffered
        length: int = HEADER.unpack_from(buf, pos)[0]
        return max(RECV_SIZE, min(pos + 4 + length - len(buf), MAX_RECV_SIZE))

    def peek(self) -> tuple[int, bytes] | None:
        """The opcode and the first 8 payload bytes of the next frame if it is complete, else
        ``None``; the frame stays buffered."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        length, opcode, _flags, _req_id = HEADER.unpack_from(buf, pos)
        if len(buf) - pos - 4 < length or length > self.max_frame:
            return None  # (an oversized one is refused by next_frame)
        return opcode, bytes(buf[pos + HEADER_SIZE : pos + HEADER_SIZE + 8])

    def has_buffered(self) -> bool:
        """Whether any received bytes have not been returned as frames yet."""
        return self._pos < len(self._buf)

    def next_frame(self) -> tuple[int, int, int, bytes | bytearray] | None:
        """Return the next complete frame, or ``None`` if it has not fully arrived yet.

        Raises:
            FrameTooLarge: the length prefix exceeds ``max_frame``.
            ProtocolError: the length prefix is smaller than a header.
        """
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            return None
        length, opcode, flags, req_id = HEADER.unpack_from(buf, pos)
        if length > self.max_frame:
            raise FrameTooLarge(
                f"frame of {length} bytes exceeds the limit of {self.max_frame} bytes"
            )
        if length < _AFTER_LENGTH:
            raise ProtocolError(f"frame length {length} is shorter than its header")
        end = pos + 4 + length
        if len(buf) < end:
            return None
        self._pos = end
        return opcode, flags, req_id, buf[pos + HEADER_SIZE : end]
