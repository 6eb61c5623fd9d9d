"""Managers and clients of the real ``redis-server`` of ``tests/conftest.py``'s
``redis_server`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import procshare


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The server's URL with a short session ttl (deaths are noticed within a second)."""
    return f"{redis_server}?session_ttl=1&release_delay=0.2"


@pytest.fixture
def rm(redis_url: str) -> Iterator[procshare.SyncManager]:
    """A manager on Redis, in a namespace of its own (deleted at the end)."""
    m = procshare.SyncManager(address=redis_url)
    m.start()
    yield m
    m.shutdown()


@pytest.fixture
def raw(redis_server: str) -> Iterator[object]:
    """A plain redis-py client of the same server (to look at the keys)."""
    import redis

    port = int(redis_server.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    client = redis.Redis(host="127.0.0.1", port=port)
    yield client
    client.close()
