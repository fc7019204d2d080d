"""File transfer handlers: ``upload.getFile`` over the world's file (``FILE_MIGRATE_X`` off its
DC, Telegram's offset/limit rules) and ``upload.saveFilePart`` / ``saveBigFilePart``."""

from __future__ import annotations

from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject

from ._types import RequestInfo, RpcErrorReply
from .world_core import Handler, WorldCore
from .world_files import FileStore
from .world_tl import TLBool


class TransferHandlers:
    """``upload.*`` handlers (parts are recorded by size and hash, not content)."""

    def __init__(self, world: WorldCore) -> None:
        self.w = world

    def table(self) -> dict[type, Handler]:
        f = functions.upload
        return {
            f.GetFileRequest: self._upload_get_file,
            f.SaveFilePartRequest: self._upload_save_file_part,
            f.SaveBigFilePartRequest: self._upload_save_big_file_part,
        }

    def _upload_get_file(self, info: RequestInfo) -> TLObject:
        req: functions.upload.GetFileRequest = info.request
        self.w.me(info)
        loc = req.location
        doc = self.w.document
        if not isinstance(loc, types.InputDocumentFileLocation) or loc.thumb_size:
            raise RpcErrorReply(400, "LOCATION_INVALID")
        if loc.id != doc.id or loc.access_hash != doc.access_hash:
            raise RpcErrorReply(400, "FILE_ID_INVALID")
        if bytes(loc.file_reference) != doc.file_reference:
            raise RpcErrorReply(400, "FILE_REFERENCE_EXPIRED")
        if info.dc_id != self.w.config.file_dc:
            raise RpcErrorReply(303, f"FILE_MIGRATE_{self.w.config.file_dc}")
        FileStore.check_download_window(req.offset, req.limit, bool(req.precise))
        return types.upload.File(
            type=types.storage.FileUnknown(),
            mtime=self.w.config.history_start,
            bytes=self.w.files.read(req.offset, req.limit),
        )

    def _upload_save_file_part(self, info: RequestInfo) -> TLObject:
        req: functions.upload.SaveFilePartRequest = info.request
        self.w.me(info)
        self.w.files.save_part(req.file_id, req.file_part, bytes(req.bytes))
        return TLBool(True)

    def _upload_save_big_file_part(self, info: RequestInfo) -> TLObject:
        req: functions.upload.SaveBigFilePartRequest = info.request
        self.w.me(info)
        self.w.files.save_part(req.file_id, req.file_part, bytes(req.bytes),
                             total_parts=req.file_total_parts)
        return TLBool(True)

