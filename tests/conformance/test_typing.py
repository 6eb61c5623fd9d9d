"""The headline pattern type-checks under ``mypy --strict``, with the builtins' element types.

``with procshare.Manager() as m:`` gives a ``SyncManager``; ``m.dict({"a": 1})`` is a
``DictProxy[str, int]``, ``m.list([1])`` a ``ListProxy[int]`` one may iterate, a Value's
``value`` an ``int``: as the stdlib's stubs give for its manager.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("mypy")

PROGRAM = textwrap.dedent(
    """
    import procshare


    def main() -> None:
        with procshare.Manager() as m:
            reveal_type(m)
            d = m.dict({"a": 1})
            reveal_type(d)
            reveal_type(d["a"])
            reveal_type(m.dict(a=1.5))
            lst = m.list([1, 2])
            reveal_type(lst)
            for item in lst:
                reveal_type(item)
            reveal_type(m.Value("i", 3).value)
            reveal_type(m.set({"x"}))
            with m.Lock():
                pass
            q = m.Queue()
            q.put(1)
            m.Event().set()
            m.named("jobs").Queue()
    """
)

EXPECTED = [
    "procshare._manager.SyncManager",
    "procshare._client._proxies.DictProxy[str, int]",
    "int",
    "procshare._client._proxies.DictProxy[str, float]",
    "procshare._client._proxies.ListProxy[int]",
    "int",
    "int",
    "procshare._client._proxies.SetProxy[str]",
]


def _revealed_under_mypy_strict(program: pathlib.Path, text: str) -> list[str]:
    """The types mypy --strict reveals in ``text`` (failing the test on any error)."""
    program.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert not errors, out.stdout
    return [  # (older mypy spells builtins out: builtins.int)
        line.split('Revealed type is "', 1)[1].rstrip('"').replace("builtins.", "")
        for line in out.stdout.splitlines()
        if "Revealed type is" in line
    ]


def test_the_headline_pattern_passes_mypy_strict(tmp_path: pathlib.Path) -> None:
    assert _revealed_under_mypy_strict(tmp_path / "program.py", PROGRAM) == EXPECTED


ASYNC_PROGRAM = textwrap.dedent(
    """
    import procshare
    import procshare.aio


    async def main(m: procshare.SyncManager) -> None:
        async with await procshare.aio.connect(m.address) as client:
            d = await client.dict({"a": 1})
            reveal_type(d)
            reveal_type(await d.getitem("a"))
            reveal_type(await d.items())
            lst = await client.list([1.5])
            reveal_type(await lst.pop())
            reveal_type(await (await client.Value("i", 3)).get())
            lock = await client.Lock()
            reveal_type(await lock.acquire())
            async with lock:
                pass
            reveal_type(await (await client.Event()).wait(1))
            reveal_type(await (await client.Barrier(2)).wait())
            q = await client.Queue()
            await q.put(1)
            reveal_type(await (await client.set({"x"})).copy())
    """
)

ASYNC_EXPECTED = [
    "procshare._client._aproxies.AsyncDictProxy[str, int]",
    "int",
    "list[tuple[str, int]]",
    "float",
    "int",
    "bool",
    "bool",
    "int",
    "set[str]",
]


def test_the_asyncio_proxies_are_typed_under_mypy_strict(tmp_path: pathlib.Path) -> None:
    revealed = _revealed_under_mypy_strict(tmp_path / "aprogram.py", ASYNC_PROGRAM)
    assert revealed == ASYNC_EXPECTED
