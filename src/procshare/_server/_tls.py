"""TLS for a server's TCP connections, over the reactor's non-blocking sockets.

The reactors read and write connections through ``conn.recv``/``conn.send``; ``TlsWire``
gives them the same two calls with TLS in between (the standard ``ssl`` module's
``SSLObject`` over memory buffers, as asyncio does it), so the loop stays as it is:

* ``recv``: reads what the socket has, runs the handshake or decrypts, and returns every byte
  of plaintext there is (none left inside TLS: epoll's readiness stays the truth); while only
  the handshake moved, it raises ``BlockingIOError``, as a socket with nothing to read.
* ``send``: encrypts, and sends what the socket takes. Ciphertext the socket did not take is
  kept; the call then reports the last plaintext byte as not sent, so that the loop keeps
  waiting until the socket is writable and calls again (that byte is not encrypted twice).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

__all__ = ["TlsWire", "server_context"]

log = logging.getLogger("procshare.server")

_READ = 256 * 1024


class TlsWire:
    """The TLS end of one accepted connection (see the module docstring)."""

    __slots__ = ("_cipher", "_done", "_early", "_in", "_obj", "_out", "_owed", "_sock")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self._done = False
        self._early = bytearray()  # plaintext sent before the handshake finished (HELLO)
        self._cipher = bytearray()  # ciphertext the socket did not take yet
        self._owed = 0  # plaintext bytes reported unsent but already encrypted

    def recv(self, _size: int) -> bytes:
        raw = self._sock.recv(_READ)  # BlockingIOError: nothing there (the loop returns)
        if not raw:
            return b""
        self._in.write(raw)
        try:
            if not self._done:
                self._obj.do_handshake()
                self._done = True
                if self._early:
                    self._obj.write(self._early)
                    self._early.clear()
                self._flush(blocking=True)  # its last flight, and what was sent before it
        except ssl.SSLWantReadError:
            self._flush(blocking=True)  # the handshake's own messages (small)
            raise BlockingIOError from None
        except ssl.SSLError as exc:
            log.info("TLS handshake with %s failed: %s", _peer(self._sock), exc)
            self._flush(blocking=True)  # (the alert that says why)
            return b""  # the loop closes the connection
        plain = bytearray()
        try:
            while True:
                chunk = self._obj.read(_READ)
                if not chunk:
                    break
                plain += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            log.info("TLS error from %s: %s", _peer(self._sock), exc)
            return b""
        self._flush(blocking=False)  # (anything TLS itself has to say: key updates)
        if not plain:
            raise BlockingIOError
        return bytes(plain)

    def send(self, data: Any) -> int:
        if not self._done:
            self._early += data
            return len(data)
        if self._cipher:
            self._flush(blocking=False)
            if self._cipher:
                raise BlockingIOError
        view = memoryview(data)
        owed, self._owed = self._owed, 0
        if len(view) > owed:
            self._obj.write(view[owed:])
        self._cipher += self._out.read()
        self._flush(blocking=False)
        if self._cipher and view:
            self._owed = 1  # (see the module docstring)
            return len(view) - 1
        return len(view)

    def _flush(self, *, blocking: bool) -> None:
        self._cipher += self._out.read()
        if not self._cipher:
            return
        try:
            sent = self._sock.send(self._cipher)
        except (BlockingIOError, InterruptedError):
            sent = 0
        del self._cipher[:sent]
        if self._cipher and blocking:
            self._sock.settimeout(5.0)
            try:
                self._sock.sendall(self._cipher)
                self._cipher.clear()
            finally:
                self._sock.setblocking(False)


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client"
    return f"{host}:{port}"


def server_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A server-side context from PEM files; with ``ca``, clients must present a certificate
    it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
