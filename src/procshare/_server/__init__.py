"""The procshare server: core (object table, sessions, dispatch), kinds, waiters, transport."""

from ._core import Core, ServerType, Session
from ._transport import Server

__all__ = ["Core", "Server", "ServerType", "Session"]
