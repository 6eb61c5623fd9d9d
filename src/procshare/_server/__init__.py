"""The procshare server: core (object table, sessions, dispatch), kinds, waiters, transport."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import Core, ServerType, Session
    from ._transport import Server

__all__ = ["Core", "Server", "ServerType", "Session"]


def __getattr__(name: str) -> Any:
    # Imported when first used: a client (a spawned worker, say) never loads the server.
    if name == "Server":
        from ._transport import Server

        return Server
    if name in ("Core", "ServerType", "Session"):
        from . import _core

        return getattr(_core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
