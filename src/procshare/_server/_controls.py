"""What the server answers about itself: the control commands and the ``stats`` snapshot.

A ``Control`` message names a command of ``CONTROLS`` (``ping``, ``names``, ``stats``, the
stdlib's ``number_of_objects``/``debug_info``/``get_methods``, ...); each is
``fn(core, session, now, *args)``. They read the core's tables and change nothing but what
they are for (``shutdown``, ``delete``, ``collect``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._errors import ObjectNotFound
from ._host import Primitive

if TYPE_CHECKING:
    from ._core import Core
    from ._session import Session

__all__ = ["CONTROLS", "snapshot"]


def snapshot(core: Core, now: float) -> dict[str, Any]:
    """A snapshot of the server for ``stats()``, ``inspect`` and ``top``."""
    objects = []
    name_of = {obj_id: name for name, obj_id in core.names.items()}
    for entry in core.objects.values():
        item: dict[str, Any] = {
            "id": entry.id,
            "name": name_of.get(entry.id),
            "typeid": entry.typeid,
            "refs": entry.refs,
            "version": entry.version,
            "watchers": len(entry.watchers or ()),
        }
        referent = entry.referent
        if isinstance(referent, Primitive):
            item["state"] = referent.describe()
        else:
            with contextlib.suppress(Exception):  # size is optional information
                item["len"] = len(referent)
        objects.append(item)
    sessions = [
        {
            "id": s.id,
            "pid": s.pid,
            "name": s.name,
            "refs": sum(s.refs.values()),
            "holds": len(s.holdings),
            "waiting": len(s.waiters),
            "calls": s.calls,
            "subscriptions": len(s.subscriptions),
            "age": now - s.started,
            "reactor": s.home.index,
            "host": s.host,
        }
        for s in core.sessions.values()
    ]
    return {
        "objects": objects,
        "sessions": sessions,
        "counters": dict(core.stats_counters),
        "server": {
            "pid": os.getpid(),
            "version": _version(),
            "address": _describe_address(core.address),
            "uptime": now - core.started,
            "rss": _rss_bytes(),
            "names": len(core.names),
        },
        "pending_jobs": len(core.jobs),
        "memory": core.memory.describe() if core.memory is not None else None,
    }


def _version() -> str:
    from .. import __version__

    return __version__


def _describe_address(address: Any) -> str:
    from .._address import describe

    try:
        return describe(address)
    except Exception:  # (a test's made-up address)
        return repr(address)


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux), for ``inspect`` and ``top``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _ctl_ping(core: Core, session: Session, now: float) -> str:
    return "pong"


def _ctl_shutdown(core: Core, session: Session, now: float) -> None:
    core.shutdown_requested = True


def _ctl_names(core: Core, session: Session, now: float) -> dict[str, str]:
    objects = core.objects
    return {n: objects[i].typeid for n, i in sorted(core.names.items()) if i in objects}


def _ctl_delete(core: Core, session: Session, now: float, name: str) -> None:
    core.delete_name(name, now)


def _ctl_stats(core: Core, session: Session, now: float) -> dict[str, Any]:
    return snapshot(core, now)


def _client_refs(core: Core) -> dict[int, int]:
    """Object id -> references held by client processes' proxies.

    What the stdlib's ``_number_of_objects`` and ``_debug_info`` count: a proxy stored inside
    another shared object is not a client's (the stdlib keeps those apart, as its server's
    "local" proxies), nor is an object waiting out its release delay.
    """
    counts: dict[int, int] = {}
    for session in core.sessions.values():
        for obj_id, held in session.refs.items():
            if held > 0 and obj_id in core.objects:
                counts[obj_id] = counts.get(obj_id, 0) + held
    return counts


def _ctl_number_of_objects(core: Core, session: Session, now: float) -> int:
    return len(_client_refs(core))


def _ctl_debug_info(core: Core, session: Session, now: float) -> str:
    lines = []
    for obj_id, refs in sorted(_client_refs(core).items()):
        try:
            text = str(core.objects[obj_id].referent)[:75]
        except BaseException as exc:
            text = f"<unprintable: {exc!r}>"
        lines.append(f"  {obj_id}:       refcount={refs}\n    {text}")
    return "\n".join(lines)


def _ctl_get_methods(core: Core, session: Session, now: float, obj_id: int) -> tuple[str, ...]:
    entry = core.objects.get(obj_id)
    if entry is None:
        raise ObjectNotFound.of(obj_id)
    return entry.exposed


def _ctl_collect(core: Core, session: Session, now: float) -> int:
    return core.references.collect_cycles()


def _ctl_unpost(core: Core, session: Session, now: float, obj_id: int) -> None:
    """The client posts to object ``obj_id`` no more (what it posted came before this)."""
    entry = core.objects.get(obj_id) if type(obj_id) is int else None
    if entry is not None:
        core.unregister_poster(entry, session)


def _ctl_session(core: Core, session: Session, now: float) -> dict[str, Any]:
    return {"id": session.id, "pid": session.pid, "name": session.name}


CONTROLS: Final[dict[str, Callable[..., Any]]] = {
    "ping": _ctl_ping,
    "dummy": _ctl_ping,
    "shutdown": _ctl_shutdown,
    "names": _ctl_names,
    "delete": _ctl_delete,
    "stats": _ctl_stats,
    "number_of_objects": _ctl_number_of_objects,
    "debug_info": _ctl_debug_info,
    "get_methods": _ctl_get_methods,
    "session": _ctl_session,
    "collect": _ctl_collect,
    "unpost": _ctl_unpost,
}
