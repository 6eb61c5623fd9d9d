"""The table of kinds, the server's handlers and the client's proxies agree."""

from __future__ import annotations

from procshare._kinds import KINDS
from procshare._manager import SyncManager, _server_types
from procshare._server._objects import HANDLERS
from procshare.managers import (
    ArrayProxy,
    DictProxy,
    ListProxy,
    NamespaceProxy,
    QueueProxy,
    SetProxy,
    ValueProxy,
)

PROXIES = {
    "dict": DictProxy,
    "list": ListProxy,
    "set": SetProxy,
    "Value": ValueProxy,
    "Array": ArrayProxy,
    "Queue": QueueProxy,
}


def test_every_kind_method_has_a_server_handler_and_nothing_else_does() -> None:
    for name, kind in KINDS.items():
        public = {m for m in HANDLERS[name] if not m.startswith("#")}
        assert public == set(kind.methods), name
        # (the one internal handler: a borrower giving a lent lock back, ``_loans``)
        internal = set(HANDLERS[name]) - public
        assert internal == ({"#loan"} if name in ("Lock", "RLock") else set()), name


def test_proxies_offer_every_method_of_their_kind() -> None:
    for name, proxy in PROXIES.items():
        for method in KINDS[name].methods:
            if method in ("__repr__", "__str__", "__getattribute__"):
                continue
            assert hasattr(proxy, method), f"{proxy.__name__} lacks {method}"
        assert set(proxy._exposed_) == set(KINDS[name].exposed)
    assert set(NamespaceProxy._exposed_) == set(KINDS["Namespace"].exposed)


def test_syncmanager_types_map_to_native_kinds() -> None:
    types = _server_types(SyncManager._registry)
    for name in KINDS:
        assert types[name].kind == name, name
    assert types["Pool"].kind is None  # user code (the pool) runs on worker threads


def test_the_local_reads_of_cached_replicas_are_exactly_each_kinds_cacheable_reads() -> None:
    from procshare._client._cache import _READS

    for name, kind in KINDS.items():
        cacheable = {m.name for m in kind.methods.values() if m.cacheable}
        assert set(_READS.get(name, {})) == cacheable, name


def test_every_kind_but_the_live_iterator_has_a_server_factory() -> None:
    from procshare._server._objects import FACTORIES

    assert set(FACTORIES) == set(KINDS) - {"LiveIterator"}
