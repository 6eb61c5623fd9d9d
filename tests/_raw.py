"""Talking to a live server below the client: a raw socket, logged in with the protocol."""

from __future__ import annotations

import socket
from typing import Any

from procshare._protocol import NEED_DATA, ClientProtocol


def raw_connect(address: Any) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX if isinstance(address, str) else socket.AF_INET)
    sock.settimeout(5)
    sock.connect(address)
    return sock


def logged_in(manager: Any, serializer: str = "pickle") -> tuple[socket.socket, ClientProtocol]:
    """A connection to ``manager``'s server, past the handshake, and its protocol end."""
    sock = raw_connect(manager.address)
    proto = ClientProtocol(bytes(manager._authkey), serializer=serializer)
    while True:
        event = proto.next_event()
        out = proto.data_to_send()
        if out:
            sock.sendall(out)
        if event is not NEED_DATA:
            return sock, proto
        proto.receive_data(sock.recv(65536))
