"""The procshare server: core (object table, dispatch), sessions, primitives over their host
interface, waiters, transport."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import Core
    from ._session import Session
    from ._table import ServerType
    from ._transport import Server

__all__ = ["Core", "Server", "ServerType", "Session"]


def __getattr__(name: str) -> Any:
    # Imported when first used: a client (a spawned worker, say) never loads the server.
    if name == "Server":
        from ._transport import Server

        return Server
    if name == "Core":
        from ._core import Core

        return Core
    if name == "ServerType":
        from ._table import ServerType

        return ServerType
    if name == "Session":
        from ._session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
