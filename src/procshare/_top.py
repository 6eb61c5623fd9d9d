"""``procshare top``: a server's objects, clients, locks and rates, as plain text.

``render(before, after, seconds)`` turns two ``stats()`` snapshots taken ``seconds`` apart
into the screen: rates are the differences (calls a second, overall and per client; changes a
second per object, from its version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["render"]

_MAX_ROWS = 20


def _size(obj: dict[str, Any]) -> str:
    if "len" in obj:
        return str(obj["len"])
    state = obj.get("state") or {}
    for key in ("size", "value"):
        if key in state:
            return f"{key}={state[key]}"
    return ""


def _locks(obj: dict[str, Any]) -> str:
    state = obj.get("state") or {}
    holder = state.get("holder")
    waiters = state.get("waiters") or []
    parts = []
    if holder:
        parts.append(f"held by pid {holder['pid']}")
    if waiters:
        parts.append(f"{len(waiters)} waiting")
    return ", ".join(parts)


def render(before: dict[str, Any], after: dict[str, Any], seconds: float) -> str:
    """The top screen for the change from ``before`` to ``after`` over ``seconds``."""
    seconds = max(seconds, 1e-6)
    server = after.get("server") or {}
    calls = after["counters"].get("calls", 0) - before["counters"].get("calls", 0)
    rss = server.get("rss")
    memory = after.get("memory") or {}
    lines = [
        f"procshare {server.get('version', '?')} at {server.get('address', '?')}  "
        f"pid {server.get('pid', '?')}  up {server.get('uptime', 0):.0f}s  "
        f"{calls / seconds:,.0f} calls/s  "
        + (f"{rss / 2**20:.1f} MiB resident" if rss else "")
        + (f"  (limit {memory['limit'] / 2**20:.0f} MiB)" if memory.get("limit") else ""),
        "",
    ]
    versions = {o["id"]: o["version"] for o in before["objects"]}
    objects = sorted(
        after["objects"],
        key=lambda o: (-(o["version"] - versions.get(o["id"], o["version"])), o["id"]),
    )
    lines.append(
        f"OBJECTS ({len(objects)})\n{'name or id':20s} {'type':16s} {'size':>12s} "
        f"{'version':>8s} {'changes/s':>10s}  locks"
    )

    def object_row(obj: dict[str, Any]) -> str:
        label = obj.get("name") or f"#{obj['id']}"
        rate = (obj["version"] - versions.get(obj["id"], obj["version"])) / seconds
        return (
            f"{label[:20]:20s} {obj['typeid'][:16]:16s} {_size(obj)[:12]:>12s} "
            f"{obj['version']:>8} {rate:>10.0f}  {_locks(obj)}"
        )

    lines += _rows(objects, object_row)
    earlier = {s["id"]: s["calls"] for s in before["sessions"]}
    sessions = sorted(after["sessions"], key=lambda s: s["id"])
    lines += [
        "",
        f"CLIENTS ({len(sessions)})\n{'pid':>8s} {'program':24s} {'calls/s':>9s} "
        f"{'since':>8s} {'holds':>6s} {'waiting':>8s}",
    ]

    def client_row(s: dict[str, Any]) -> str:
        rate = (s["calls"] - earlier.get(s["id"], s["calls"])) / seconds
        return (
            f"{s['pid']!s:>8s} {str(s['name'])[:24]:24s} {rate:>9.0f} {s['age']:>7.0f}s "
            f"{s['holds']:>6} {s['waiting']:>8}"
        )

    lines += _rows(sessions, client_row)
    return "\n".join(lines)


def _rows(items: list[dict[str, Any]], row: Callable[[dict[str, Any]], str]) -> list[str]:
    """The first ``_MAX_ROWS`` items as rows, and how many more there are."""
    lines = [row(item) for item in items[:_MAX_ROWS]]
    if len(items) > _MAX_ROWS:
        lines.append(f"... {len(items) - _MAX_ROWS} more")
    return lines
