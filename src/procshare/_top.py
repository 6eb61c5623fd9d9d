"""``procshare top``: a server's objects, clients, locks and rates.

``screen(before, after, seconds)`` turns two ``stats()`` snapshots taken ``seconds`` apart into
what top shows: rates are the differences (calls a second, overall and per client; changes a
second per object, from its version). ``render`` lays it out as plain text (``--once``, and
where ``rich`` is not installed); ``render_rich`` as ``rich`` tables for the live view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Screen", "render", "render_rich", "screen"]

_MAX_ROWS = 20

OBJECT_COLUMNS = ("name or id", "type", "size", "version", "changes/s", "locks")
CLIENT_COLUMNS = ("pid", "program", "host", "calls/s", "since", "holds", "waiting")


class Screen(NamedTuple):
    header: str
    objects: Sequence[tuple[str, ...]]
    clients: Sequence[tuple[str, ...]]
    more_objects: int
    more_clients: int


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


def screen(before: dict[str, Any], after: dict[str, Any], seconds: float) -> Screen:
    """What top shows for the change from ``before`` to ``after`` over ``seconds``."""
    seconds = max(seconds, 1e-6)
    versions = {o["id"]: o["version"] for o in before["objects"]}

    def changes(obj: dict[str, Any]) -> float:
        return float(obj["version"] - versions.get(obj["id"], obj["version"])) / seconds

    if after.get("backend") == "redis":  # (no server process: the namespace's own figures)
        header = (
            f"procshare on {after.get('url', 'Redis')}  {after.get('objects_total', 0)} objects"
            f"  {len(after['sessions'])} processes"
            f"  {sum(changes(o) for o in after['objects']):,.0f} changes/s"
        )
    else:
        server = after.get("server") or {}
        calls = after["counters"].get("calls", 0) - before["counters"].get("calls", 0)
        rss = server.get("rss")
        memory = after.get("memory") or {}
        header = (
            f"procshare {server.get('version', '?')} at {server.get('address', '?')}  "
            f"pid {server.get('pid', '?')}  up {server.get('uptime', 0):.0f}s  "
            f"{calls / seconds:,.0f} calls/s"
            + (f"  {rss / 2**20:.1f} MiB resident" if rss else "")
            + (f" (limit {memory['limit'] / 2**20:.0f} MiB)" if memory.get("limit") else "")
        )

    objects = sorted(after["objects"], key=lambda o: (-changes(o), o["id"]))
    object_rows = [
        (
            str(o.get("name") or f"#{o['id']}"),
            str(o["typeid"]),
            _size(o),
            str(o["version"]),
            f"{changes(o):.0f}",
            _locks(o),
        )
        for o in objects[:_MAX_ROWS]
    ]
    earlier = {s["id"]: s["calls"] for s in before["sessions"]}

    def rate(s: dict[str, Any]) -> str:
        if s["calls"] is None:  # (a backend that counts no calls: Redis)
            return "-"
        return f"{(s['calls'] - earlier.get(s['id'], s['calls'])) / seconds:.0f}"

    sessions = sorted(after["sessions"], key=lambda s: s["id"])
    client_rows = [
        (
            str(s["pid"]),
            str(s["name"]),
            str(s.get("host") or "local"),
            rate(s),
            f"{s['age']:.0f}s",
            str(s["holds"]),
            str(s["waiting"]),
        )
        for s in sessions[:_MAX_ROWS]
    ]
    return Screen(
        header,
        object_rows,
        client_rows,
        max(0, len(objects) - _MAX_ROWS),
        max(0, len(sessions) - _MAX_ROWS),
    )


#: plain-text column widths (a negative one is left-aligned)
_OBJECT_WIDTHS = (-20, -16, 12, 8, 10, -30)
_CLIENT_WIDTHS = (8, -24, -15, 9, 8, 6, 8)


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    parts = []
    for cell, width in zip(cells, widths, strict=True):
        size = abs(width)
        text = cell[:size]
        parts.append(text.ljust(size) if width < 0 else text.rjust(size))
    return " ".join(parts).rstrip()


def render(before: dict[str, Any], after: dict[str, Any], seconds: float) -> str:
    """The top screen as plain text."""
    view = screen(before, after, seconds)
    lines = [view.header, "", f"OBJECTS ({len(view.objects) + view.more_objects})"]
    lines.append(_line(OBJECT_COLUMNS, _OBJECT_WIDTHS))
    lines += [_line(row, _OBJECT_WIDTHS) for row in view.objects]
    if view.more_objects:
        lines.append(f"... {view.more_objects} more")
    lines += ["", f"CLIENTS ({len(view.clients) + view.more_clients})"]
    lines.append(_line(CLIENT_COLUMNS, _CLIENT_WIDTHS))
    lines += [_line(row, _CLIENT_WIDTHS) for row in view.clients]
    if view.more_clients:
        lines.append(f"... {view.more_clients} more")
    return "\n".join(lines)


def render_rich(before: dict[str, Any], after: dict[str, Any], seconds: float) -> Any:
    """The top screen as a ``rich`` renderable (``pip install 'procshare[rich]'``)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    view = screen(before, after, seconds)

    def table(
        title: str, columns: tuple[str, ...], widths: tuple[int, ...], rows: Any, more: int
    ) -> Table:
        shown = len(rows) + more
        t = Table(title=f"{title} ({shown})", title_justify="left", expand=True)
        for column, width in zip(columns, widths, strict=True):
            t.add_column(column, justify="left" if width < 0 else "right", no_wrap=True)
        for row in rows:
            t.add_row(*row)
        if more:
            t.add_row(f"... {more} more", *[""] * (len(columns) - 1))
        return t

    return Group(
        Text(view.header, style="bold"),
        table("OBJECTS", OBJECT_COLUMNS, _OBJECT_WIDTHS, view.objects, view.more_objects),
        table("CLIENTS", CLIENT_COLUMNS, _CLIENT_WIDTHS, view.clients, view.more_clients),
    )
