"""``Token``: what identifies a shared object across processes (same shape as the stdlib's)."""

from __future__ import annotations

from typing import Any

__all__ = ["Token"]


class Token:
    """Identifies a shared object: its registered ``typeid``, its server's ``address``, its ``id``.

    Mirrors ``multiprocessing.managers.Token`` (same attributes and pickled state), except that
    ``id`` is an ``int`` chosen by the server rather than a hex string of a memory address.
    """

    __slots__ = ("address", "id", "typeid")

    def __init__(self, typeid: str, address: Any, id: int) -> None:  # noqa: A002
        self.typeid = typeid
        self.address = address
        self.id = id

    def __getstate__(self) -> tuple[str, Any, int]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, Any, int]) -> None:
        self.typeid, self.address, self.id = state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Token):
            return NotImplemented
        return (self.typeid, self.address, self.id) == (other.typeid, other.address, other.id)

    def __hash__(self) -> int:
        return hash((self.address, self.id))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(typeid={self.typeid!r}, address={self.address!r}, id={self.id!r})"
