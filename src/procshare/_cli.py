"""The ``procshare`` command line: serve, inspect, top, demo, bench.

``procshare serve`` runs a standalone server that unrelated programs reach by address and
authkey; ``procshare inspect`` prints what a server holds (objects, lock holders, waiters,
sessions), or with no address lists this user's running servers; ``procshare top`` shows the
same live, with rates; ``procshare demo`` runs the seed tutorial's scenarios; ``procshare
bench`` times each operation against ``multiprocessing.Manager`` in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from typing import Any

from . import __version__
from ._address import is_redis_url
from ._errors import ProcshareError

_AUTHKEY_ENV = "PROCSHARE_AUTHKEY"


def _authkey(args: argparse.Namespace, *, generate: bool) -> bytes:
    """The authkey: ``--authkey-file`` (its first line), ``--authkey``, ``$PROCSHARE_AUTHKEY``,
    or (for a server) a random one. A file or the environment keep it out of ``ps``."""
    value: str | None = args.authkey
    if args.authkey_file is not None:
        try:
            with open(args.authkey_file) as f:
                value = f.readline().strip()
        except OSError as exc:
            raise SystemExit(f"procshare: cannot read the authkey file: {exc}") from None
        if not value:
            raise SystemExit(f"procshare: the authkey file {args.authkey_file} is empty")
    if value is None:
        value = os.environ.get(_AUTHKEY_ENV)
    if value is None:
        if not generate:
            raise SystemExit(
                f"procshare: an authkey is needed (--authkey-file, ${_AUTHKEY_ENV} or --authkey)"
            )
        return secrets.token_hex(16).encode()
    return value.encode()


def _add_authkey_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--authkey-file", default=None, metavar="FILE", help="read the shared secret from FILE"
    )
    parser.add_argument(
        "--authkey",
        default=None,
        help=f"shared secret (visible to other users in ps: prefer the file or ${_AUTHKEY_ENV}; "
        f"default: {default})",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from ._address import describe, parse_command_line_address
    from ._discovery import url_of
    from ._manager import SyncManager

    key = _authkey(args, generate=True)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        address = None if args.address is None else parse_command_line_address(args.address)
        manager = SyncManager(
            address=address,
            authkey=key,
            serializer=args.serializer,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            release_delay=args.release_delay,
            max_connections=args.max_connections,
            max_memory=args.max_memory,
            posts=not args.no_posts,
        )
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"procshare: {exc}") from None
    try:
        server = manager.get_server()
    except OSError as exc:
        if args.debug:
            raise
        where = describe(address) if address is not None else "a private unix socket"
        reason = (exc.strerror or str(exc)).lower()
        print(f"procshare: cannot listen on {where}: {reason}", file=sys.stderr)
        return 1
    url = url_of(server.address, tls=args.tls_cert is not None)
    print(f"procshare {__version__} serving at {url}", flush=True)
    if args.authkey is None and args.authkey_file is None and _AUTHKEY_ENV not in os.environ:
        print(f"authkey: {key.decode()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve_forever()
    print("stopped", flush=True)
    return 0


def _target(args: argparse.Namespace) -> tuple[Any, bytes, str] | None:
    """Which server a command means: (address, authkey, serializer); ``None``: none named
    (list them). ``ADDRESS`` may be a URL, ``host:port``, or the pid of a server of this user
    (found through its connection file, which also gives its authkey)."""
    from ._address import parse_command_line_address
    from ._discovery import address_of, find_server

    text = args.address if args.address is not None else os.environ.get("PROCSHARE_URL")
    if not text:
        return None
    if text.isdigit():
        info = find_server(int(text))
        if info is None:
            raise SystemExit(f"procshare: no server of yours runs as pid {text}")
        found = address_of(info)
        _tls_for(str(info["address"]), found, args)
        return found, info["authkey"], str(info["serializer"])
    try:
        address = parse_command_line_address(text)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"procshare: {exc}") from None
    if address is None:
        raise SystemExit("procshare: an address is needed")
    if is_redis_url(address):
        return address, b"", args.serializer  # (Redis's own credentials are in the URL)
    _tls_for(text, address, args)
    return address, _authkey(args, generate=False), args.serializer


def _tls_for(url: str, address: Any, args: argparse.Namespace) -> None:
    """A ``tls://`` server: check its certificate against ``--tls-ca`` (or
    ``$PROCSHARE_TLS_CA``, else the system's CAs)."""
    if not url.startswith("tls://"):
        return
    from ._client._channel import use_tls
    from ._connect import default_tls_context

    use_tls(address, default_tls_context(args.tls_ca))


def _open(target: tuple[Any, bytes, str]) -> Any:
    """A connection to the server a command means (``_target``)."""
    from ._client._channel import Channel

    address, authkey, serializer = target
    if is_redis_url(address):
        from ._redis._channel import RedisChannel

        return _WithoutItself(RedisChannel(address, authkey, serializer))
    return Channel(address, authkey, serializer=serializer)


class _WithoutItself:
    """A Redis namespace's channel whose ``stats()`` leave out the session of the command
    looking (it is a process of the namespace too, while it looks)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def control(self, command: str, *args: Any) -> Any:
        answer = self._channel.control(command, *args)
        if command == "stats":
            me = self._channel.session
            answer["sessions"] = [s for s in answer["sessions"] if s.get("id") != me]
        return answer

    def close(self) -> None:
        self._channel.close()


def _list_servers() -> int:
    from ._discovery import running_servers

    servers = running_servers()
    if not servers:
        print("no procshare server of yours is running (that wrote a connection file)")
        return 0
    now = time.time()
    print(f"{'pid':>8}  {'up':>8}  {'serializer':10s}  address")
    for info in servers:
        up = _duration(now - float(info.get("started", now)))
        print(f"{info['pid']:>8}  {up:>8}  {info['serializer']:10s}  {info['address']}")
    print("(procshare inspect PID, or procshare top PID, to look inside one)")
    return 0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _cmd_inspect(args: argparse.Namespace) -> int:
    target = _target(args)
    if target is None:
        return _list_servers()
    channel = _open(target)
    try:
        stats = channel.control("stats")
    finally:
        channel.close()
    if args.json:
        print(json.dumps(stats, indent=2, default=repr))
        return 0
    print(_format_stats(stats))
    return 0


def _cmd_top(args: argparse.Namespace) -> int:
    from ._top import render

    target = _target(args)
    if target is None:
        return _list_servers()
    channel = _open(target)  # (one for the whole run: a refresh is one round trip)
    live = None
    try:
        before = channel.control("stats")
        started = time.monotonic()
        if not args.once and sys.stdout.isatty():
            try:
                from rich.live import Live
            except ImportError:  # (plain text then: pip install 'procshare[rich]' for tables)
                pass
            else:
                live = Live(auto_refresh=False, screen=False)
                live.start()
        while True:
            time.sleep(args.interval)
            after = channel.control("stats")
            now = time.monotonic()
            if live is not None:
                from ._top import render_rich

                live.update(render_rich(before, after, now - started), refresh=True)
            else:
                text = render(before, after, now - started)
                if args.once:
                    print(text)
                    return 0
                print("\x1b[H\x1b[2J" + text, flush=True)  # (clear the screen, as top does)
            before, started = after, now
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()
        if live is not None:
            live.stop()


def _format_stats(stats: dict[str, Any]) -> str:
    lines = []
    server = stats.get("server")
    if server:
        rss = server.get("rss")
        memory = f", {rss / 2**20:.1f} MiB resident" if rss else ""
        lines.append(
            f"procshare {server['version']} at {server['address']}, pid {server['pid']}, "
            f"up {_duration(server['uptime'])}{memory}"
        )
    elif stats.get("backend") == "redis":
        lines.append(f"procshare on {stats['url']}")
    lines.append(
        f"{len(stats['objects'])} objects, {len(stats['sessions'])} sessions"
        + (f", counters {stats['counters']}" if stats["counters"] else "")
    )
    lines.append("objects:")
    for obj in sorted(stats["objects"], key=lambda o: o["id"]):
        detail = ""
        state = obj.get("state")
        if state is not None:
            holder = state.get("holder")
            if holder:
                detail += f" held by pid {holder['pid']} ({holder['name']})"
            waiters = state.get("waiters") or []
            if waiters:
                detail += f", {len(waiters)} waiting: pids {[w['pid'] for w in waiters]}"
            detail = detail or " " + ", ".join(
                f"{k}={v}" for k, v in state.items() if not isinstance(v, (list, dict))
            )
        elif "len" in obj:
            detail = f" len={obj['len']}"
        lines.append(
            f"  #{obj['id']:<5} {obj['typeid']:<16} refs={obj['refs']:<3} v{obj['version']}{detail}"
            + (f"  name={obj['name']!r}" if obj.get("name") else "")
        )
    lines.append("sessions:")
    for s in stats["sessions"]:
        lines.append(
            f"  {s['id']:<5} pid {s['pid']} {s['name']!r}: "
            + ("" if s["calls"] is None else f"{s['calls']} calls, ")
            + f"{s['refs']} refs, holds {s['holds']}, waiting {s['waiting']}"
        )
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.url:
        if not is_redis_url(args.url):
            raise SystemExit("procshare: --url takes a redis:// or rediss:// URL")
        print(f"procshare demo: the seed tutorial's scenarios, with the objects in {args.url}")
    else:
        print("procshare demo: the seed tutorial's scenarios, on procshare's embedded server")
    timings = run_demo(url=args.url or None)
    print("\nsummary (wall time of each scenario):")
    for title, stdlib, ours in timings:
        print(f"  {title:52s} stdlib {stdlib * 1e3:7.1f} ms   procshare {ours * 1e3:7.1f} ms")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.url:
        return _cmd_bench_redis(args)
    from ._bench import CASES, header, plot, run_bench, side_by_side, to_json

    names = args.only or None
    unknown = [n for n in names or [] if n not in CASES]
    if unknown:
        raise SystemExit(f"procshare: unknown case(s) {unknown}; choose from {list(CASES)}")
    if args.plot and names is not None and not any(CASES[n].clients for n in names):
        raise SystemExit("procshare: --plot needs the 'dict sets, N clients' cases")
    scale = 0.1 if args.quick else args.scale
    rounds = 3 if args.quick else args.rounds
    loads = args.load or [0]
    if any(k < 0 for k in loads):
        raise SystemExit("procshare: --load takes a number of processes (0 or more)")
    results = []
    for k in loads:
        if not args.json:
            busy = "an idle machine" if k == 0 else f"{k} CPU-bound processes running"
            print(
                f"procshare {__version__} vs multiprocessing.Manager, same run, "
                f"median of {rounds} alternating rounds, {busy}"
            )
            print(header())
        results += run_bench(
            names,
            rounds=rounds,
            scale=scale,
            memory=not args.no_memory and k == loads[0],
            load=k,
            progress=None if args.json else print,
        )
    if args.json:
        print(to_json(results))
    elif len(loads) > 1:
        print("\nside by side: time ratios (below 1 is better) and throughput (x stdlib):")
        print(side_by_side(results))
    if args.plot:
        try:
            plot(results, args.plot)
        except ImportError as exc:
            raise SystemExit(f"procshare: {exc}") from None
        if not args.json:
            print(f"throughput chart written to {args.plot}")
    return 0


def _cmd_bench_redis(args: argparse.Namespace) -> int:
    import json

    from ._bench_redis import run_redis_bench

    if not is_redis_url(args.url):
        raise SystemExit("procshare: --url takes a redis:// or rediss:// URL")
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SystemExit(
            "procshare: --url needs redis-py: pip install 'procshare[redis]'"
        ) from None
    rounds = 3 if args.quick else args.rounds
    n = max(20, int((50 if args.quick else 500) * args.scale))
    if not args.json:
        print(
            f"procshare {__version__} on Redis vs redis-py doing the same work, same run, "
            f"median of {rounds} alternating rounds of {n} operations"
        )
    rows = run_redis_bench(
        args.url, rounds=rounds, n=n, progress=(lambda _: None) if args.json else print
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="procshare",
        description="Share Python objects between processes: a faster, safer drop-in for "
        "multiprocessing.Manager.",
    )
    parser.add_argument("--version", action="version", version=f"procshare {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (before COMMAND)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a standalone server for unrelated programs")
    serve.add_argument(
        "--address",
        default=None,
        help="unix:///path, tcp://host:port, host:port (TCP) or a socket path with a / "
        "(default: a private unix socket)",
    )
    _add_authkey_options(serve, f"${_AUTHKEY_ENV}, else a random one, printed")
    serve.add_argument(
        "--serializer",
        default="pickle",
        choices=("pickle", "msgpack"),
        help="what clients send: pickle (any object; clients can run code in the server) or "
        "msgpack (plain data only, nothing is unpickled; needs procshare[msgpack])",
    )
    serve.add_argument("--tls-cert", default=None, metavar="PEM", help="TLS certificate (chain)")
    serve.add_argument("--tls-key", default=None, metavar="PEM", help="its private key")
    serve.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="require client certificates from this CA"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="connections served at once; more are refused (default: no limit)",
    )
    serve.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="what the server logs to stderr (default WARNING)",
    )
    serve.add_argument(
        "--release-delay",
        type=float,
        default=5.0,
        help="seconds an unreferenced object is kept (default 5)",
    )
    serve.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="refuse changes past this much data, e.g. 512MiB or 2GB (default: no limit)",
    )
    serve.add_argument(
        "--no-posts",
        action="store_true",
        help="every call waits for its answer (default: local clients post the writes that "
        "cannot fail)",
    )
    serve.set_defaults(func=_cmd_serve)

    inspect = sub.add_parser("inspect", help="show a server's objects, holders and waiters")
    inspect.add_argument(
        "address",
        nargs="?",
        default=None,
        help="URL, host:port, or the pid of a server of yours (default: $PROCSHARE_URL; "
        "none: list your running servers)",
    )
    _add_authkey_options(inspect, f"${_AUTHKEY_ENV}")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="the CA of a tls:// server's certificate"
    )
    inspect.add_argument(
        "--serializer", default="pickle", help="the server's serializer (default pickle)"
    )
    inspect.set_defaults(func=_cmd_inspect)

    demo = sub.add_parser("demo", help="run the seed tutorial's scenarios on procshare")
    demo.add_argument(
        "--url",
        metavar="REDIS_URL",
        help="keep procshare's objects in this Redis (needs procshare[redis])",
    )
    demo.set_defaults(func=_cmd_demo)

    top = sub.add_parser("top", help="a live view of a server: objects, clients, locks, ops/s")
    top.add_argument(
        "address", nargs="?", default=None, help="URL, host:port or pid (default: $PROCSHARE_URL)"
    )
    _add_authkey_options(top, f"${_AUTHKEY_ENV}; not needed with a pid")
    top.add_argument("--serializer", default="pickle", help="the server's serializer")
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument(
        "--tls-ca", default=None, metavar="PEM", help="the CA of a tls:// server's certificate"
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.set_defaults(func=_cmd_top)

    bench = sub.add_parser("bench", help="time operations against multiprocessing.Manager")
    bench.add_argument("--quick", action="store_true", help="few, short rounds (a smoke test)")
    bench.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    bench.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    bench.add_argument("--only", action="append", metavar="CASE", help="run only this case")
    bench.add_argument("--json", action="store_true", help="print JSON for machines")
    bench.add_argument(
        "--load",
        type=int,
        action="append",
        metavar="K",
        help="run K CPU-bound processes during the rounds (repeat for a table side by side: "
        "--load 0 --load 2)",
    )
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        help="chart throughput against clients (needs: pip install 'procshare[plot]')",
    )
    bench.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the server-memory measurement (a million items)",
    )
    bench.add_argument(
        "--url",
        metavar="REDIS_URL",
        help="bench procshare on the Redis at this URL against raw redis-py (needs "
        "procshare[redis])",
    )
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``procshare`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (OSError, ProcshareError) as exc:
        if args.debug:
            raise
        # One line, as command-line tools say it; the traceback is for --debug.
        print(f"procshare: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
