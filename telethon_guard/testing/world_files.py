"""The downloadable file and uploaded parts of the test world.

The file's bytes are a deterministic pseudo-random stream (``random.Random`` seeded per
64 KiB block from the world seed), so any range can be produced without holding the file;
files up to 32 MiB are kept in memory after first use. Uploaded parts are remembered only by
size and SHA-256, never by content, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass

from ._types import RpcErrorReply

BLOCK = 64 * 1024
_CACHE_WHOLE_MAX = 32 * 1024 * 1024
_MAX_TRACKED_FILES = 4096

# Telegram's upload rules (core.telegram.org/api/files): parts of at most 512 KiB, at most
# 4000 parts per file; downloads in 4 KiB-aligned requests of at most 1 MiB that divide 1 MiB
# and never cross a 1 MiB boundary (precise=False), or 1 KiB-aligned with precise=True.
PART_MAX = 512 * 1024
PARTS_MAX = 4000
DOWNLOAD_LIMIT_MAX = 1024 * 1024


@dataclass(frozen=True)
class UploadedPart:
    """One stored upload part: its size in bytes and the SHA-256 hex digest of its bytes."""

    size: int
    sha256: str


class FileStore:
    """Bytes of the world's file and bookkeeping of uploads (shared by all DCs)."""

    def __init__(self, seed: int, size: int) -> None:
        self._seed = seed
        self.size = size
        self._whole: bytes | None = None
        self._uploads: OrderedDict[int, dict[int, UploadedPart]] = OrderedDict()
        self._total_parts: dict[int, int] = {}

    # ---- download -------------------------------------------------------------------------

    def _block(self, index: int) -> bytes:
        return random.Random((self._seed << 32) ^ (index + 1)).randbytes(BLOCK)

    def read(self, offset: int, limit: int) -> bytes:
        """Bytes ``[offset, offset + limit)`` of the file, short or empty past its end."""
        end = min(self.size, offset + limit)
        if offset >= end:
            return b""
        if self._whole is not None:
            return self._whole[offset:end]
        if self.size <= _CACHE_WHOLE_MAX:
            self._whole = self._generate(0, self.size)
            return self._whole[offset:end]
        return self._generate(offset, end)

    def _generate(self, start: int, end: int) -> bytes:
        first, last = start // BLOCK, (end - 1) // BLOCK
        data = b"".join(self._block(i) for i in range(first, last + 1))
        base = first * BLOCK
        return data[start - base : end - base]

    def whole(self) -> bytes:
        return self.read(0, self.size)

    @staticmethod
    def check_download_window(offset: int, limit: int, precise: bool) -> None:
        """Raise ``400 OFFSET_INVALID`` / ``LIMIT_INVALID`` like ``upload.getFile`` does."""
        align = 1024 if precise else 4096
        if offset < 0 or offset % align:
            raise RpcErrorReply(400, "OFFSET_INVALID")
        if limit <= 0 or limit % align or limit > DOWNLOAD_LIMIT_MAX:
            raise RpcErrorReply(400, "LIMIT_INVALID")
        if not precise and DOWNLOAD_LIMIT_MAX % limit:
            raise RpcErrorReply(400, "LIMIT_INVALID")
        if offset // DOWNLOAD_LIMIT_MAX != (offset + limit - 1) // DOWNLOAD_LIMIT_MAX:
            raise RpcErrorReply(400, "LIMIT_INVALID")

    # ---- upload ---------------------------------------------------------------------------

    def save_part(
        self, file_id: int, part: int, data: bytes, total_parts: int | None = None
    ) -> None:
        """Record one part (``upload.saveFilePart`` / ``saveBigFilePart``) or raise 400."""
        if not data:
            raise RpcErrorReply(400, "FILE_PART_EMPTY")
        if len(data) > PART_MAX:
            raise RpcErrorReply(400, "FILE_PART_TOO_BIG")
        if total_parts is not None and not 1 <= total_parts <= PARTS_MAX:
            raise RpcErrorReply(400, "FILE_PARTS_INVALID")
        if not 0 <= part < (total_parts if total_parts is not None else PARTS_MAX):
            raise RpcErrorReply(400, "FILE_PART_INVALID")
        parts = self._uploads.get(file_id)
        if parts is None:
            parts = self._uploads[file_id] = {}
            if len(self._uploads) > _MAX_TRACKED_FILES:
                old, _ = self._uploads.popitem(last=False)
                self._total_parts.pop(old, None)
        else:
            self._uploads.move_to_end(file_id)
        parts[part] = UploadedPart(len(data), hashlib.sha256(data).hexdigest())
        if total_parts is not None:
            self._total_parts[file_id] = total_parts

    def parts(self, file_id: int) -> dict[int, UploadedPart]:
        """Copy of the parts stored for ``file_id`` (part index -> :class:`UploadedPart`)."""
        return dict(self._uploads.get(file_id, {}))

    def uploaded_size(self, file_id: int, parts: int) -> int:
        """Total size of parts ``0..parts-1``; ``400 FILE_PARTS_INVALID`` if one is missing."""
        stored = self._uploads.get(file_id)
        if stored is None or parts <= 0 or any(i not in stored for i in range(parts)):
            raise RpcErrorReply(400, "FILE_PARTS_INVALID")
        return sum(stored[i].size for i in range(parts))
