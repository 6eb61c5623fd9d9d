"""What the server logs: start and stop with its address, and each death with what it freed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import logging, multiprocessing, os, signal, time
    import procshare
    procshare.log_to_stderr(logging.INFO)
    FORK = multiprocessing.get_context("fork")

    def holder(lock, ready):
        lock.acquire()
        ready.set()
        time.sleep(60)

    if __name__ == "__main__":
        with procshare.Manager(ctx=FORK) as m:
            lock, ready = m.Lock(), FORK.Event()
            p = FORK.Process(target=holder, args=(lock, ready))
            p.start()
            ready.wait(30)
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            assert lock.acquire(timeout=30)
            print("victim", p.pid, flush=True)
    """
)


def test_a_death_is_logged_with_what_it_freed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    victim = int(out.stdout.split()[1])
    lines = out.stderr.splitlines()
    assert any("serving at unix://" in line for line in lines), out.stderr
    death = [line for line in lines if f"client pid {victim} " in line]
    assert len(death) == 1, out.stderr
    assert death[0].startswith("[WARNING/") and "is gone" in death[0]
    assert "released what it held: Lock" in death[0]
    assert any("stopped serving at" in line for line in lines), out.stderr
    # The owner's own connection, closed with the server, is not reported as a death.
    assert sum("is gone" in line for line in lines) == 1, out.stderr


def test_nothing_is_logged_unless_asked() -> None:
    quiet = PROGRAM.replace("procshare.log_to_stderr(logging.INFO)", "")
    out = subprocess.run([sys.executable, "-c", quiet], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


REFUSED = textwrap.dedent(
    """
    import logging, multiprocessing
    import procshare
    procshare.log_to_stderr(logging.DEBUG)
    if __name__ == "__main__":
        with procshare.Manager(ctx=multiprocessing.get_context("fork")) as m:
            m.dict()
            wrong = procshare.managers.SyncManager(address=m.address, authkey=b"wrong")
            try:
                wrong.connect()
            except procshare.AuthenticationError:
                print("refused", flush=True)
    """
)


def test_connections_and_refusals_are_logged() -> None:
    out = subprocess.run(
        [sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stderr
    assert "[DEBUG/SyncManager-1] client pid " in out.stderr, out.stderr
    assert "connected from this machine" in out.stderr
    assert "[WARNING/SyncManager-1] refused a connection from this machine:" in out.stderr
