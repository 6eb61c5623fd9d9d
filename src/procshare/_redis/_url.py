"""Redis URLs: ``redis://[[user]:password@]host[:port][/db][?namespace=NAME&session_ttl=S]``.

``rediss://`` is the same over TLS. The canonical form (a token's address, the key of this
process's backends) names the host, port, db and namespace, never the user or password: tokens
travel inside shared data and to other processes. They are kept in this process
(``credentials_for``), which forked children inherit; a spawned child, or a process on another
machine, finds them in its URL or in ``$PROCSHARE_REDIS_USERNAME`` and
``$PROCSHARE_REDIS_PASSWORD``.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from .._address import is_redis_url

if TYPE_CHECKING:
    import redis

__all__ = [
    "PASSWORD_ENV",
    "USERNAME_ENV",
    "RedisURL",
    "credentials_for",
    "is_redis_url",
    "parse_redis_url",
    "redis_client",
]

PASSWORD_ENV: Final = "PROCSHARE_REDIS_PASSWORD"
USERNAME_ENV: Final = "PROCSHARE_REDIS_USERNAME"
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_SESSION_TTL: Final = 5.0
#: a namespace is part of every key's hash tag ``{ns}``: no braces, nothing odd
_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_OPTIONS: Final = frozenset({"namespace", "session_ttl", "release_delay"})

#: canonical URL -> the (user, password) given for it in this process
_credentials: dict[str, tuple[str | None, str]] = {}


class RedisURL(NamedTuple):
    """A parsed Redis URL."""

    tls: bool
    host: str
    port: int
    db: int
    namespace: str
    session_ttl: float
    release_delay: float
    password: str | None
    username: str | None

    @property
    def canonical(self) -> str:
        """The URL without its password: a token's address."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{scheme}://{host}:{self.port}/{self.db}?namespace={self.namespace}"
        if self.session_ttl != DEFAULT_SESSION_TTL:
            text += f"&session_ttl={self.session_ttl:g}"
        if self.release_delay != 5.0:
            text += f"&release_delay={self.release_delay:g}"
        return text

    @property
    def prefix(self) -> str:
        """Every key of the namespace starts with it; ``{ns}`` puts them in one hash slot."""
        return f"ps:{{{self.namespace}}}:"


def _seconds(options: dict[str, list[str]], name: str, default: float) -> float:
    values = options.get(name)
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {values[-1]!r}") from None
    if not 0 < value < float("inf"):  # (NaN too)
        raise ValueError(f"{name} must be a positive number of seconds, not {values[-1]!r}")
    return value


def parse_redis_url(url: str, *, fresh_namespace: bool = False) -> RedisURL:
    """Parse ``url``; ``fresh_namespace``: a URL naming none gets a new random one (what a
    ``Manager()`` of its own uses), else ``"default"``.

    Raises:
        ValueError: not a Redis URL, or a malformed part (port, db, namespace, option).
    """
    if not is_redis_url(url):
        raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database of {url!r} must be a number, not {path!r}")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown option(s) in {url!r}: {', '.join(sorted(unknown))}")
    names = options.get("namespace")
    if names:
        namespace = names[-1]
    elif fresh_namespace:
        namespace = f"m{secrets.token_hex(8)}"
    else:
        namespace = DEFAULT_NAMESPACE
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"a namespace is 1-100 letters, digits, '_', '.' or '-', not {namespace!r}"
        )
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    parsed = RedisURL(
        tls=url.startswith("rediss://"),
        host=parts.hostname or "localhost",
        port=port,
        db=int(path) if path else 0,
        namespace=namespace,
        session_ttl=_seconds(options, "session_ttl", DEFAULT_SESSION_TTL),
        release_delay=_seconds(options, "release_delay", 5.0),
        password=password,
        username=username,
    )
    if password is not None:
        _credentials[parsed.canonical] = (username, password)
    return parsed


def credentials_for(parsed: RedisURL) -> tuple[str | None, str | None]:
    """The ``(user, password)`` to give: the URL's, else those this process was given for
    the same server and namespace, else ``$PROCSHARE_REDIS_USERNAME`` and
    ``$PROCSHARE_REDIS_PASSWORD`` (no user: Redis's ``default``)."""
    if parsed.password is not None:
        return parsed.username, parsed.password
    known = _credentials.get(parsed.canonical)
    if known is not None:
        return known
    return (os.environ.get(USERNAME_ENV) or None, os.environ.get(PASSWORD_ENV) or None)


def redis_client(parsed: RedisURL, **options: Any) -> redis.Redis:
    """A redis-py client of the server ``parsed`` names, with its credentials (``options``:
    more of ``redis.Redis``'s)."""
    import redis  # (an extra: imported when used)

    username, password = credentials_for(parsed)
    return redis.Redis(
        host=parsed.host,
        port=parsed.port,
        db=parsed.db,
        username=username,
        password=password,
        ssl=parsed.tls,
        **options,
    )
