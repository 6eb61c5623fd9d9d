"""Redis URLs: what is accepted, refused, and what a token carries (never the password)."""

from __future__ import annotations

import pytest

from procshare._address import parse_address
from procshare._redis._url import credentials_for, parse_redis_url


def test_a_url_names_host_port_db_namespace_and_options() -> None:
    url = parse_redis_url("rediss://:s3cret@cache.example:6380/2?namespace=jobs&session_ttl=2")
    assert (url.tls, url.host, url.port, url.db, url.namespace) == (
        True,
        "cache.example",
        6380,
        2,
        "jobs",
    )
    assert url.session_ttl == 2.0 and url.prefix == "ps:{jobs}:"
    assert "s3cret" not in url.canonical and url.canonical.startswith("rediss://")
    kept = credentials_for(parse_redis_url(url.canonical))  # (kept in this process)
    assert kept == (None, "s3cret")
    user = parse_redis_url("redis://ann:pw@h/0?namespace=users")
    assert "ann" not in user.canonical
    assert credentials_for(parse_redis_url(user.canonical)) == ("ann", "pw")
    assert parse_address("redis://localhost") == "redis://localhost:6379/0?namespace=default"


def test_a_manager_of_its_own_gets_a_fresh_namespace() -> None:
    a = parse_redis_url("redis://h", fresh_namespace=True)
    b = parse_redis_url("redis://h", fresh_namespace=True)
    assert a.namespace != b.namespace
    assert parse_redis_url("redis://h?namespace=x", fresh_namespace=True).namespace == "x"


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/zero",
        "redis://h?namespace=a{b}",
        "redis://h?namespace=",
        "redis://h?colour=blue",
        "redis://h?session_ttl=-1",
        "redis://h?session_ttl=nan",
        "redis://h:notaport",
        "http://h",
    ],
)
def test_a_malformed_url_is_refused_with_its_reason(url: str) -> None:
    with pytest.raises(ValueError):
        parse_redis_url(url)
