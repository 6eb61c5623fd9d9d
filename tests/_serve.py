"""``procshare serve`` run as a user runs it: a subprocess, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator


class Served:
    """A running ``procshare serve``: the URL it printed, and (once stopped, if captured) what
    it wrote to stderr."""

    url = ""
    stderr = ""


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str], capture_stderr: bool = False) -> Iterator[Served]:
    """``procshare serve ARGS`` until the block ends: it must say where it serves first, and
    stop cleanly (status 0) on SIGTERM after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "procshare", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env=env,
    )
    served = Served()
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving at" in line, line
        served.url = line.split()[-1]
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
        served.stderr = err or ""
    assert process.returncode == 0, served.stderr
