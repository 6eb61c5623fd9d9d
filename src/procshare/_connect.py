"""``procshare.connect(url)``: a manager connected to a server that is already running.

The URL and the authkey may come from the environment (``$PROCSHARE_URL``,
``$PROCSHARE_AUTHKEY``), so that a program need not be changed to use a shared server:
``procshare.Manager()`` connects there too when ``$PROCSHARE_URL`` is set.
"""

from __future__ import annotations

import os
from typing import Any, Final

from ._address import parse_command_line_address
from ._manager import SyncManager

__all__ = ["AUTHKEY_ENV", "URL_ENV", "connect", "default_tls_context"]

URL_ENV: Final = "PROCSHARE_URL"
AUTHKEY_ENV: Final = "PROCSHARE_AUTHKEY"


def default_tls_context(cafile: str | None = None) -> Any:
    """The client context for a ``tls://`` URL given none: the server's certificate checked
    against ``cafile``, else ``$PROCSHARE_TLS_CA``, else the system's CAs."""
    import ssl

    return ssl.create_default_context(cafile=cafile or os.environ.get("PROCSHARE_TLS_CA") or None)


def connect(
    url: str | None = None,
    *,
    authkey: bytes | str | None = None,
    serializer: str = "pickle",
    tls: Any = None,
    **options: Any,
) -> SyncManager:
    """Connect to the server at ``url`` and return its manager, with every SyncManager type.

    Args:
        url: ``unix:///path``, ``tcp://host:port``, ``host:port`` (TCP) or a path with a
            ``/``; default ``$PROCSHARE_URL``.
        authkey: the server's secret; default ``$PROCSHARE_AUTHKEY``, else this process's
            own authkey (``multiprocessing.current_process().authkey``, as the stdlib).
        serializer: the server's serializer (``pickle``, ``msgpack``, ``xmlrpclib``).
        tls: a client ``ssl.SSLContext`` (a ``tls://`` URL without one checks the server's
            certificate against the system's CAs, or ``$PROCSHARE_TLS_CA``).
        **options: further manager options (``cache``, ``spin``, ...).

    Raises:
        ValueError: no URL given and ``$PROCSHARE_URL`` unset, or a malformed URL.
        ConnectionLost: nobody listens there (``ServerRefused``, ``ServerNotFound``).
        AuthenticationError: the authkey is wrong.

    ``shutdown()`` (or leaving a ``with`` block) of the manager returned disconnects; it
    never stops the server, which others may be using.
    """
    if url is None:
        url = os.environ.get(URL_ENV)
        if not url:
            raise ValueError(f"connect() needs a URL, or ${URL_ENV} set")
    address = parse_command_line_address(url)
    if address is None:
        raise ValueError(f"no address in {url!r}")
    if authkey is None:
        from_env = os.environ.get(AUTHKEY_ENV)
        authkey = from_env.encode() if from_env is not None else None
    elif isinstance(authkey, str):
        authkey = authkey.encode()
    if tls is None and url.startswith("tls://"):
        tls = default_tls_context()
    manager = SyncManager(
        address=address, authkey=authkey, serializer=serializer, tls=tls, **options
    )
    manager.connect()
    return manager
