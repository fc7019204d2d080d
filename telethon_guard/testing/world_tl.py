"""TL results Telethon has no class for: ``Bool`` and ``Vector<T>`` return values.

Some methods return a bare ``Bool`` (``upload.saveFilePart``) or a ``Vector<User>``
(``users.getUsers``). :meth:`World.handle` must return a ``TLObject`` the server can turn into
bytes with ``bytes(obj)``, so these two small wrappers serialize like Telegram does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

from telethon.tl.tlobject import TLObject

BOOL_TRUE = 0x997275B5
BOOL_FALSE = 0xBC799737
VECTOR = 0x1CB5C415


class TLBool(TLObject):
    """A bare ``Bool`` result (``boolTrue`` / ``boolFalse``)."""

    CONSTRUCTOR_ID = BOOL_TRUE
    SUBCLASS_OF_ID = 0xF5B399AC

    def __init__(self, value: bool) -> None:
        self.value = bool(value)

    def _bytes(self) -> bytes:
        return struct.pack("<I", BOOL_TRUE if self.value else BOOL_FALSE)

    def to_dict(self) -> dict[str, Any]:
        return {"_": "Bool", "value": self.value}

    def __bool__(self) -> bool:
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TLBool):
            return self.value == other.value
        if isinstance(other, bool):
            return self.value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)


class TLVector(TLObject):
    """A boxed ``Vector<T>`` result of TL objects; behaves like a read-only list."""

    CONSTRUCTOR_ID = VECTOR
    SUBCLASS_OF_ID = VECTOR

    def __init__(self, items: Sequence[TLObject]) -> None:
        self.items = list(items)

    def _bytes(self) -> bytes:
        return b"".join(
            [struct.pack("<Ii", VECTOR, len(self.items))] + [bytes(x) for x in self.items]
        )

    def to_dict(self) -> dict[str, Any]:
        return {"_": "Vector", "items": [x.to_dict() for x in self.items]}

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[TLObject]:
        return iter(self.items)

    def __getitem__(self, index: int) -> TLObject:
        return self.items[index]
