"""The client's side of lent locks (the rules are in ``.._loans``).

A channel on the server's machine keeps a :class:`LoanBook`: the locks lent to it, each with
its slot in the page it maps read-write. A lock proxy asks the book first; the book takes or
frees the lock in the slot, or says to ask the server, or hands back what the server must
learn before anything else happens to that lock (a ``GiveBack``: the loan was recalled, or
is being given back).
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Any, Final, Literal

from .._loans import (
    COUNT,
    HEADER_WORDS,
    HOLDER,
    NUMBER,
    PAGE_BYTES,
    RECALL,
    SLOT_WORDS,
    fence,
    lending_here,
    magic_for,
)
from .._pages import map_page

__all__ = ["ASK", "GiveBack", "LoanBook"]

#: What :meth:`LoanBook.acquire` and :meth:`LoanBook.release` return when the server decides.
ASK: Final = None
#: ``(loan number, holder, count, released)``: give the loan back (``#loan``), holding the lock
#: ``count`` times under ``holder`` (0: not at all), releasing it once more if ``released``.
GiveBack = tuple[int, int, int, bool]


class LoanBook:
    """The locks lent to one channel: ``obj_id -> (first word of its slot, loan number,
    reentrant)``. Every write to a slot is made under ``_guard`` while its loan is in the
    book (``.._loans``): so a loan taken out of the book is never written again, by any
    thread."""

    __slots__ = ("_guard", "_loans", "_map", "_vouched", "_words")

    def __init__(self, mapped: mmap.mmap, vouched: Callable[[], bool]) -> None:
        self._map = mapped
        self._words = memoryview(mapped).cast("Q")
        self._loans: dict[int, tuple[int, int, bool]] = {}
        self._guard = threading.Lock()
        #: whether the connection is up with nothing to read: a dead server's page stays
        #: mapped, and a lock taken after it died must fail as a round trip would
        self._vouched = vouched

    @classmethod
    def open(cls, info: dict[str, Any], vouched: Callable[[], bool]) -> LoanBook | None:
        """Map the page a server's handshake ``info`` offers, or ``None`` (no loans here)."""
        path, instance = info.get("loans"), info.get("instance")
        if type(path) is not str or type(instance) is not str:
            return None
        if not lending_here():
            return None
        try:
            magic = magic_for(instance)
        except ValueError:
            return None
        mapped = map_page(path, PAGE_BYTES, magic, writable=True)
        return None if mapped is None else cls(mapped, vouched)

    def add(self, obj_id: int, slot: int, number: int, reentrant: bool) -> None:
        """Lock ``obj_id`` was lent (held by the caller already: the server wrote it so)."""
        if type(slot) is int and type(number) is int and slot >= 0:
            with self._guard:
                self._loans[obj_id] = (HEADER_WORDS + slot * SLOT_WORDS, number, reentrant)

    def lent(self, obj_id: int) -> bool:
        return obj_id in self._loans

    def holds(self, obj_id: int, me: int) -> bool:
        """Whether lock ``obj_id`` is lent here and held by owner ``me`` (a thread)."""
        loan = self._loans.get(obj_id)
        return loan is not None and self._held(loan, me)

    def held_by(self, me: int) -> list[int]:
        """The locks lent here that owner ``me`` holds."""
        return [obj_id for obj_id, loan in self._loans.items() if self._held(loan, me)]

    def _held(self, loan: tuple[int, int, bool], me: int) -> bool:
        """Whether ``loan`` is still out (its slot's number is its own: a loan the server
        ended, its lock disposed of, stays in the book until a take finds it out, ``_kept``,
        and its slot may be another lock's loan by then) and held by owner ``me``."""
        base, number, _ = loan
        words = self._words
        return words[base + NUMBER] == number and words[base + HOLDER] == me

    def acquire(self, obj_id: int, me: int, blocking: bool) -> bool | GiveBack | None:
        """Take lock ``obj_id`` for owner ``me`` here: ``True``; ``False``: not free and
        ``blocking`` is false; ``ASK``: ask the server (not lent, or the caller must wait);
        a ``GiveBack``: give the loan back first, then ask."""
        loan = self._loans.get(obj_id)
        if loan is None:
            return ASK
        base, number, reentrant = loan
        words = self._words
        with self._guard:
            kept = self._kept(obj_id, loan, False)
            if kept is not True:
                return kept
            holder = words[base + HOLDER]
            if holder == 0:
                try:
                    words[base + HOLDER] = me
                    words[base + COUNT] = 1
                    fence()
                    recalled = words[base + RECALL]
                except BaseException:
                    # (a KeyboardInterrupt between the two: not taken, as a lock's acquire
                    # that raises; a recall meanwhile is given back at the next call)
                    words[base + HOLDER] = 0
                    words[base + COUNT] = 0
                    raise
                if not recalled:
                    return True
                # Recalled while taking it: back out, and let the server decide.
                words[base + HOLDER] = 0
                words[base + COUNT] = 0
                return self._give_back(obj_id, base, number, False)
            if reentrant and holder == me:
                words[base + COUNT] += 1  # (the server reads it at a recall, not before)
                return True
        return ASK if blocking else False

    def release(self, obj_id: int, me: int) -> Literal[True] | GiveBack | None:
        """Free lock ``obj_id`` for owner ``me`` here: ``True``; ``ASK``: ask the server (not
        lent, or a release the server must refuse); a ``GiveBack``: give the loan back, with
        the release if it says so."""
        loan = self._loans.get(obj_id)
        if loan is None:
            return ASK
        base, number, reentrant = loan
        words = self._words
        with self._guard:
            kept = self._kept(obj_id, loan, True)
            if kept is not True:
                return kept
            holder = words[base + HOLDER]
            if holder == 0 or (reentrant and holder != me):
                return ASK  # (not held, or not by this thread: the server raises)
            if reentrant and words[base + COUNT] > 1:
                words[base + COUNT] -= 1
                return True
            words[base + HOLDER] = 0
            words[base + COUNT] = 0
            fence()
            if not words[base + RECALL]:
                return True
            # Recalled meanwhile: released here; the server may have seen it held.
            return self._give_back(obj_id, base, number, False)

    def _kept(
        self, obj_id: int, loan: tuple[int, int, bool], releasing: bool
    ) -> Literal[True] | GiveBack | None:
        """Under the guard (the caller holds it): ``True`` if ``loan``, read before, is still
        this process's to use; ``ASK`` if it left the book (given back by another thread, or
        ended by the server: the lock was disposed of); a ``GiveBack`` (with the caller's
        release if ``releasing``) if it was recalled, or the connection has something to
        read (perhaps its end): the server decides from now on, told what this process
        knows."""
        if self._loans.get(obj_id) is not loan:
            return ASK
        base, number, _ = loan
        if self._words[base + NUMBER] != number:
            del self._loans[obj_id]
            return ASK
        if self._words[base + RECALL] or not self._vouched():
            return self._give_back(obj_id, base, number, releasing)
        return True

    def _give_back(self, obj_id: int, base: int, number: int, released: bool) -> GiveBack:
        """Take the loan out of the book (under the guard): what to tell the server."""
        del self._loans[obj_id]
        words = self._words
        return (number, words[base + HOLDER], words[base + COUNT], released)

    def close(self) -> None:
        """Forget every loan (the channel closed: the server ended them); the page stays
        mapped until the book is collected (a thread may be looking at it)."""
        with self._guard:
            self._loans.clear()
