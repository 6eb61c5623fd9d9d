"""Shared fixtures: managers per start method, child-process helpers."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import procshare

START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS, scope="module")
def ctx(request: pytest.FixtureRequest) -> Any:
    """A multiprocessing context for each start method whose behaviour differs."""
    return multiprocessing.get_context(request.param)


@pytest.fixture(scope="module")
def manager(ctx: Any) -> Iterator[procshare.SyncManager]:
    """A procshare manager whose server (and children) use ``ctx``'s start method."""
    with procshare.Manager(ctx=ctx, release_delay=0.5) as m:
        yield m


@pytest.fixture(scope="module")
def stdlib_manager(ctx: Any) -> Iterator[Any]:
    """The standard library's manager, with ``ctx``: the oracle where it defines behaviour."""
    with ctx.Manager() as m:
        yield m


@pytest.fixture
def run(ctx: Any) -> Callable[..., None]:
    """Run ``target(*args)`` in a child process of ``ctx`` and check it exited cleanly."""

    def run_child(target: Callable[..., Any], *args: Any, timeout: float = 60) -> None:
        p = ctx.Process(target=target, args=args)
        p.start()
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"{target.__name__} did not finish in {timeout} s")
        assert p.exitcode == 0, f"{target.__name__} exited with {p.exitcode}"

    return run_child


def pytest_configure(config: pytest.Config) -> None:
    # Children started by the tests must find the tests package.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
