"""One client TCP connection to the test server: framing, MTProto 2.0 sessions, dispatch.

Reads frames, decrypts them with the auth key they name, checks the server salt and msg_id,
announces new sessions, unpacks containers and gzip_packed, answers the MTProto service
calls (ping, ping_delay_disconnect, destroy_session, get_future_salts, rpc_drop_answer) and
runs every other request as its own task (Telethon pipelines requests, so a slow request
must not hold the others back): fault plan first, then the world, then the reply.

Outgoing messages are queued and flushed once per event-loop turn: several replies ready at
the same time leave in one ``msg_container`` (one encryption, one write).

Anything the client sends that is not valid MTProto closes this connection only and is
logged; exceptions in the server's own code (or a world handler) are answered with
``rpc_error 500 INTERNAL`` and collected in ``server.internal_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import struct
import time
import zlib
from typing import Any

from telethon.errors import TypeNotFoundError
from telethon.extensions import BinaryReader
from telethon.tl import functions, types
from telethon.tl.tlobject import TLObject, TLRequest

from telethon_guard import _tl
from telethon_guard.testing import transport
from telethon_guard.testing._types import (
    AuthState,
    CloseConnection,
    ConnectInfo,
    Delay,
    DropReply,
    LinkFault,
    ReplyError,
    RequestInfo,
    ResetConnection,
    RpcErrorReply,
    Stall,
    TransportError,
)
from telethon_guard.testing.context import ServerContext
from telethon_guard.testing.crypto import DecryptError, KeyMaterial
from telethon_guard.testing.handshake import Handshake, HandshakeError
from telethon_guard.testing.log import LogEntry, Outcome

_monotonic = time.monotonic
_unpack_from_qqqii = struct.Struct("<qqqii").unpack_from
_unpack_q = struct.Struct("<q").unpack_from
_unpack_Q = struct.Struct("<Q").unpack_from
_unpack_qii = struct.Struct("<qii").unpack_from
_pack_qq = struct.Struct("<qq").pack
_pack_qii = struct.Struct("<qii").pack
_pack_Iq = struct.Struct("<Iq").pack
_pack_Ii = struct.Struct("<Ii").pack
_pack_qqi = struct.Struct("<qqi").pack

CONTAINER_ID = 0x73F1F8DC
GZIP_ID = 0x3072CFA1
RPC_RESULT_ID = 0xF35C6D01
_BOOL_TRUE = struct.pack("<I", 0x997275B5)
_BOOL_FALSE = struct.pack("<I", 0xBC799737)
_VECTOR = struct.pack("<I", 0x1CB5C415)

MAX_CONTAINER_BYTES = 1024 * 1024
"""Largest reply container the server builds (Telethon's own limit is 1044456 bytes)."""
MAX_CONTAINER_MESSAGES = 256

MSG_TOO_OLD = 300
MSG_TOO_NEW = 30
"""msg_id time window, seconds (https://core.telegram.org/mtproto/description#message-identifier-msg-id)."""

# Messages the client may send that need no answer.
_IGNORED = frozenset(
    {
        types.MsgsAck.CONSTRUCTOR_ID,
        types.MsgsStateReq.CONSTRUCTOR_ID,
        types.MsgResendReq.CONSTRUCTOR_ID,
        types.MsgsStateInfo.CONSTRUCTOR_ID,
        types.MsgsAllInfo.CONSTRUCTOR_ID,
        types.MsgDetailedInfo.CONSTRUCTOR_ID,
        types.MsgNewDetailedInfo.CONSTRUCTOR_ID,
        types.HttpWait.CONSTRUCTOR_ID,
    }
)

_WRAPPERS = (
    functions.InvokeWithLayerRequest,
    functions.InitConnectionRequest,
    functions.InvokeWithoutUpdatesRequest,
    functions.InvokeAfterMsgRequest,
    functions.InvokeAfterMsgsRequest,
    functions.InvokeWithTakeoutRequest,
    functions.InvokeWithMessagesRangeRequest,
)


class ProtocolError(Exception):
    """The client broke MTProto; the connection is closed."""


def serialize_result(result: Any) -> bytes:
    """TL bytes of a world result: a TLObject, a bool, or a list of those (a Vector)."""
    if isinstance(result, TLObject):
        return bytes(result)
    if result is True:
        return _BOOL_TRUE
    if result is False:
        return _BOOL_FALSE
    if isinstance(result, list):
        parts = [_VECTOR, struct.pack("<i", len(result))]
        for item in result:
            if isinstance(item, int) and not isinstance(item, bool):
                parts.append(struct.pack("<q", item))
            else:
                parts.append(serialize_result(item))
        return b"".join(parts)
    if isinstance(result, bytes):  # already serialized
        return result
    raise TypeError(f"cannot serialize a world result of type {type(result).__name__}")


class Connection:
    """Serves one TCP connection until it closes; see the module docstring."""

    def __init__(
        self,
        ctx: ServerContext,
        conn_id: int,
        dc_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.ctx = ctx
        self.conn_id = conn_id
        self.dc_id = dc_id
        self.reader = reader
        self.writer = writer
        self.codec: transport.Codec | None = None
        self.framing: transport.Framing = "full"
        self.closed = False
        self.stalled = False
        self._stall_future: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._auth: AuthState | None = None
        self._km: KeyMaterial | None = None
        self._session_id = 0
        self._seq = 0
        self._out: list[tuple[int, int, bytes]] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = ctx.request_tasks  # cancelled at stop
        self._handshake: Handshake | None = None
        self._ping_disconnect: asyncio.TimerHandle | None = None
        self.close_reason: str | None = None
        self.opened_at = _monotonic()
        self._close_after = 0  # CloseConnection(after_packets=N) on connect: close at packet N
        self._close_abort = False
        self._packets = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def serve(self) -> None:
        ctx = self.ctx
        try:
            refusal = ctx.refusal(self.dc_id)
            if refusal is not None:
                await self._refuse(refusal)
                return
            action = None
            if ctx.faults is not None:
                peer = self.writer.get_extra_info("peername") or ("", 0)
                action = ctx.faults.on_connect(
                    ConnectInfo(_monotonic(), self.conn_id, self.dc_id, (peer[0], peer[1]))
                )
            if isinstance(action, TransportError):
                if action.refuse_seconds > 0:
                    ctx.start_refusing(self.dc_id, action)
                await self._refuse(action)
                return
            ctx.log_event("opened", self.conn_id, self.dc_id)
            ctx.conns[self.conn_id] = self
            if isinstance(action, ResetConnection):
                self.close("reset by fault plan on connect", abort=True)
                return
            if isinstance(action, CloseConnection):
                if action.after_packets <= 0:
                    self.close("closed by fault plan on connect", abort=action.abort)
                    return
                self._close_after, self._close_abort = action.after_packets, action.abort
            if isinstance(action, Stall):
                self._stall()
            elif isinstance(action, Delay):
                await asyncio.sleep(action.seconds)
            await self._read_loop()
        except asyncio.CancelledError:
            self.close("server stopped", abort=True)
            raise
        except Exception as e:  # a bug in the server itself
            ctx.internal_error(e)
            self.close(f"internal error: {e!r}", abort=True)
        finally:
            self.close(self.close_reason or "closed")
            ctx.conns.pop(self.conn_id, None)

    async def _refuse(self, action: TransportError) -> None:
        """Answer a connection on a refusing DC with the transport error at once, then close."""
        codec: transport.Codec | None = None
        if action.mode == "framed":
            with contextlib.suppress(Exception):
                codec = await asyncio.wait_for(transport.detect(self.reader), 1.0)
        self.codec = codec
        data = self._transport_error_bytes(action.code, action.mode)
        if codec is not None:
            data = codec.seal(data)
        with contextlib.suppress(Exception):
            self.writer.write(data)
        self.ctx.log_event(
            "refused", self.conn_id, self.dc_id, error_code=-action.code, detail=action.mode
        )
        self.closed = True
        self.close_reason = "refused"
        self._close_transport(abort=False)

    def _transport_error_bytes(self, code: int, mode: str) -> bytes:
        """``raw``: 4 bytes; ``framed``: a 4-byte packet, or on TcpFull the negative-length
        form Telegram uses for -429; ``packet``: always a regular 4-byte packet (-404)."""
        if mode == "raw" or self.codec is None:
            return struct.pack("<i", -code)
        if mode == "framed" and isinstance(self.codec, transport.FullCodec):
            return self.codec.negative_length(code)
        return self.codec.transport_error(code)

    def close(self, reason: str, *, abort: bool = False, error_code: int | None = None) -> None:
        """Close the connection (idempotent); ``abort`` resets it without flushing."""
        if self.closed:
            return
        if not abort:
            self._flush()
        self.closed = True
        self.close_reason = reason
        self._out.clear()
        if self._ping_disconnect is not None:
            self._ping_disconnect.cancel()
        if self._stall_future is not None and not self._stall_future.done():
            self._stall_future.set_result(None)
        self._close_transport(abort)
        self.ctx.log_event(
            "closed", self.conn_id, self.dc_id, error_code=error_code, detail=reason
        )

    def _close_transport(self, abort: bool) -> None:
        tr = self.writer.transport
        with contextlib.suppress(Exception):
            if abort:
                tr.abort()
            else:
                tr.close()

    def _stall(self) -> None:
        self.stalled = True
        self._out.clear()
        if self._stall_future is None:
            self._stall_future = self._loop.create_future()

    # ---- actions applied from outside (timed fault script, pushed updates) -------------------

    @property
    def auth(self) -> AuthState | None:
        """The auth key state this connection uses (``None`` before its first encrypted
        message)."""
        return self._auth

    def push(self, body: bytes) -> bool:
        """Send ``body`` (a serialized ``Updates`` object) as a server-initiated message.

        Returns ``False`` (nothing sent) when the connection cannot carry it: closed, stalled,
        or no MTProto session yet (no encrypted message received).
        """
        if self.closed or self.stalled or self._km is None or self.codec is None:
            return False
        if self._silenced():  # a fault plan's half-open connection: the update is lost
            return False
        self._enqueue(body, True, 1)
        return True

    def apply(self, action: object) -> None:
        """Apply a connection-level action now (timed fault scripts)."""
        if self.closed:
            return
        if isinstance(action, TransportError):
            self.send_transport_error(action.code, action.mode)
            self.close(f"transport error -{action.code}", error_code=-action.code)
        elif isinstance(action, ResetConnection):
            self.close("reset by fault plan", abort=True)
        elif isinstance(action, CloseConnection):
            self.close("closed by fault plan", abort=action.abort)
        elif isinstance(action, Stall):
            self._stall()

    def send_transport_error(self, code: int, mode: str) -> None:
        self._flush()
        data = self._transport_error_bytes(code, mode)
        if self.codec is not None:
            data = self.codec.seal(data)
        with contextlib.suppress(Exception):
            self.writer.write(data)

    # ---- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        ctx = self.ctx
        reader = self.reader
        try:
            if self.stalled:  # stalled on connect: never read a byte
                assert self._stall_future is not None
                await self._stall_future
                return
            self.codec = codec = await transport.detect(reader, ctx.max_packet_size)
            self.framing = codec.name
            while not self.closed:
                if self.stalled:
                    assert self._stall_future is not None
                    await self._stall_future
                    return
                packet = await codec.read(reader)
                if self.stalled:
                    continue
                if self._close_after or self._has_link_faults():
                    if not await self._link_faults_let_through(len(packet)):
                        continue
                self._on_packet(packet)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close("closed by client")
        except transport.FrameError as e:
            self.close(f"bad frame: {e}", abort=True)
        except (ProtocolError, DecryptError, HandshakeError, TypeNotFoundError) as e:
            self.close(f"protocol error: {e}", abort=True)
        except (struct.error, BufferError, ValueError, EOFError, zlib.error, OSError) as e:
            self.close(f"malformed message: {e!r}", abort=True)

    # ---- connection lifecycle faults (FaultPlan.link_fault / clock_offset) -------------------

    def _has_link_faults(self) -> bool:
        faults = self.ctx.faults
        return faults is not None and bool(getattr(faults, "has_link_faults", False))

    def link_fault(self) -> LinkFault | None:
        """The plan's silence / stall on this connection now, if any."""
        if not self._has_link_faults():
            return None
        auth = self._auth
        fault: LinkFault | None = self.ctx.faults.link_fault(
            _monotonic(), self.conn_id, self.dc_id, self.opened_at,
            None if auth is None else auth.user_id,
        )
        return fault

    async def _link_faults_let_through(self, size: int) -> bool:
        """Apply close-after-N-packets, silence and stall to one packet just read: False to
        discard it (the connection may be closed). A stall waits here (nothing more is read)
        until it ends."""
        if self._close_after:
            self._packets += 1
            if self._packets >= self._close_after:
                self.close(f"closed by fault plan after {self._packets} packet(s)",
                           abort=self._close_abort)
                return False
        while not self.closed:
            fault = self.link_fault()
            if fault is None:
                return True
            if fault.mode == "silence":
                self.ctx.log_event("silenced", self.conn_id, self.dc_id,
                                   detail=f"packet of {size} bytes discarded")
                return False
            wait = 0.05 if fault.until is None else min(0.05, fault.until - _monotonic())
            await asyncio.sleep(max(wait, 0.001))
        return False

    def _silenced(self) -> bool:
        """Whether the fault plan silences this connection now (nothing is sent)."""
        if not getattr(self.ctx.faults, "has_link_faults", False):
            return False
        fault = self.link_fault()
        return fault is not None and fault.mode == "silence"

    def _unanswered(self) -> bool:
        """Whether a reply produced now would never leave (closed, stalled or silenced)."""
        return self.closed or self.stalled or self._silenced()

    def clock_offset(self, judging_client: bool = False) -> float:
        """Seconds the plan's clock skew adds to this server's clock now (0.0 without skew).
        ``judging_client``: the offset used to check the client's msg_ids."""
        faults = self.ctx.faults
        if faults is None or not getattr(faults, "has_clock_skew", False):
            return 0.0
        offset: float = faults.clock_offset(_monotonic(), self.dc_id, judging_client)
        return offset

    def _new_msg_id(self, residue: int) -> int:
        """A server msg_id (``ServerContext.new_msg_id``) moved by the plan's clock skew."""
        mid = self.ctx.new_msg_id(residue)
        if not getattr(self.ctx.faults, "has_clock_skew", False):
            return mid
        offset = self.clock_offset()
        if offset:
            mid += int(offset * 4294967296.0) & ~3  # keeps the residue (low 2 bits)
        return mid

    def _on_packet(self, packet: bytes) -> None:
        if len(packet) < 8:
            raise ProtocolError(f"packet of {len(packet)} bytes")
        (key_id,) = _unpack_Q(packet)
        if key_id == 0:
            self._on_plain(packet)
            return
        km = self._km
        if km is None or km.key_id != key_id:
            entry = self.ctx.keys.get(key_id)
            if entry is None or entry[0].dc_id != self.dc_id:
                self.send_transport_error(404, "packet")
                self.close("unknown auth key", error_code=-404)
                return
            self._auth, self._km = entry
            km = entry[1]
        plain = km.decrypt(packet)
        salt, session_id, msg_id, seqno, length = _unpack_from_qqqii(plain)
        pad = len(plain) - 32 - length
        if length < 4 or length % 4 or not 12 <= pad <= 1024:
            raise ProtocolError(f"bad message length {length} (padding {pad})")
        body = plain[32 : 32 + length]
        self._session_id = session_id
        ctx = self.ctx

        # msg_id sanity (bad_msg_notification codes 16, 17, 18)
        code = 0
        if msg_id & 3:
            code = 18
        else:
            delta = (msg_id >> 32) - (time.time() + self.clock_offset(True))
            if delta < -MSG_TOO_OLD:
                code = 16
            elif delta > MSG_TOO_NEW:
                code = 17
        stats = ctx.stats
        if code:
            stats["bad_msg_notification"] += 1
            self._send(types.BadMsgNotification(msg_id, seqno, code), False)
            return
        if salt != ctx.salt:
            stats["bad_server_salt"] += 1
            self._send(types.BadServerSalt(msg_id, seqno, 48, ctx.salt), False)
            return
        assert self._auth is not None
        skey = (key_id, session_id)
        if skey not in ctx.sessions:
            ctx.sessions.add(skey)
            stats["new_session_created"] += 1
            unique_id = int.from_bytes(os.urandom(8), "little", signed=True)
            self._send(types.NewSessionCreated(msg_id, unique_id, ctx.salt), True, residue=3)
        acks: list[int] = []
        self._on_message(msg_id, seqno, body, acks, top=True)
        if acks:
            self._send(types.MsgsAck(acks), False)

    def _on_message(self, msg_id: int, seqno: int, body: bytes, acks: list[int], top: bool) -> None:
        if seqno & 1:
            acks.append(msg_id)
        (cid,) = struct.unpack_from("<I", body)
        if cid == CONTAINER_ID:
            if not top:
                raise ProtocolError("nested msg_container")
            self.ctx.stats["containers_received"] += 1
            (count,) = struct.unpack_from("<i", body, 4)
            pos = 8
            for _ in range(count):
                inner_id, inner_seq, inner_len = _unpack_qii(body, pos)
                pos += 16
                if inner_len < 4 or pos + inner_len > len(body):
                    raise ProtocolError("bad message length inside msg_container")
                self._on_message(inner_id, inner_seq, body[pos : pos + inner_len], acks, False)
                pos += inner_len
            return
        if cid == GZIP_ID:
            self.ctx.stats["gzip_packed_received"] += 1
            reader = BinaryReader(body[4:])
            body = gzip.decompress(reader.tgread_bytes())
            (cid,) = struct.unpack_from("<I", body)
        if cid in _IGNORED:
            return
        obj = BinaryReader(body).tgread_object()
        if not isinstance(obj, TLRequest):
            return  # a type the client sent for information only
        self._dispatch(msg_id, obj)

    def _on_plain(self, packet: bytes) -> None:
        if len(packet) < 24:
            raise ProtocolError("short unencrypted message")
        _, _msg_id, length = struct.unpack_from("<qqi", packet)
        if length < 4 or 20 + length > len(packet):
            raise ProtocolError(f"bad unencrypted length {length}")
        obj = BinaryReader(packet[20 : 20 + length]).tgread_object()
        if self._handshake is None:
            ctx = self.ctx
            self._handshake = Handshake(ctx.rsa_key, ctx.pq, self._new_key,
                                        lambda: time.time() + self.clock_offset())
        task = self._loop.create_task(self._run_plain(obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_plain(self, obj: TLObject) -> None:
        assert self._handshake is not None
        try:
            answer = await self._handshake.handle(obj)
        except HandshakeError as e:
            self.close(f"handshake error: {e}", abort=True)
            return
        except Exception as e:
            self.ctx.internal_error(e)
            self.close(f"internal error in handshake: {e!r}", abort=True)
            return
        if self._unanswered():  # closed, stalled, or silenced by the fault plan
            return
        data = bytes(answer)
        assert self.codec is not None
        self.writer.write(self.codec.seal(
            self.codec.encode(_pack_qqi(0, self._new_msg_id(1), len(data)) + data)
        ))

    def _new_key(self, auth_key: bytes) -> None:
        self.ctx.register_key(auth_key, self.dc_id)

    # ---- requests ----------------------------------------------------------------------------

    def _dispatch(self, msg_id: int, request: TLObject) -> None:
        """Decide what to do with one request; run it inline when nothing needs to wait."""
        ctx = self.ctx
        auth = self._auth
        assert auth is not None
        account = auth.user_id
        method = "?"
        random_id: int | None = None
        try:
            inner = request
            init = False
            no_updates = False
            while isinstance(inner, _WRAPPERS):
                if isinstance(inner, functions.InvokeWithLayerRequest):
                    auth.layer = inner.layer
                elif isinstance(inner, functions.InitConnectionRequest):
                    auth.api_id = inner.api_id
                    init = True
                elif isinstance(inner, functions.InvokeWithoutUpdatesRequest):
                    no_updates = True
                inner = inner.query
            method = _tl.method_name(inner)
            if method in _STARTS_UPDATES and not no_updates:
                auth.receives_updates = True
            random_id = _tl.random_id_of(inner)
            counts = ctx.call_counts
            ckey = (account, method)
            index = counts.get(ckey, 0) + 1
            counts[ckey] = index
            info = RequestInfo(
                now=_monotonic(),
                conn_id=self.conn_id,
                dc_id=self.dc_id,
                auth=auth,
                msg_id=msg_id,
                method=method,
                request=inner,
                framing=self.framing,
                peer=_tl.peer_key(inner),
                random_id=random_id,
                init_connection=init,
                call_index=index,
            )
            faults = ctx.faults
            actions = faults.on_request(info) if faults is not None else None
            if not actions and (ctx.sync_handle is not None or method in _SERVICE):
                self._execute_sync(info, account, False, False)
                return
        except Exception as e:
            self._internal(e, msg_id, method, account, random_id)
            return
        task = self._loop.create_task(self._run(info, account, actions or []))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _internal(
        self, e: Exception, msg_id: int, method: str, account: int | None, random_id: int | None
    ) -> None:
        self.ctx.internal_error(e)
        self._log(msg_id, method, account, random_id, "rpc_error", True, 500, "INTERNAL")
        self._send_error(msg_id, 500, "INTERNAL")

    async def _run(self, info: RequestInfo, account: int | None, actions: list[Any]) -> None:
        """Carry out the fault plan's actions for one request, then execute and reply."""
        msg_id, method, random_id = info.msg_id, info.method, info.random_id
        try:
            drop = False
            reset_after = False
            for action in actions:
                if isinstance(action, Delay):
                    await asyncio.sleep(action.seconds)
                elif isinstance(action, ReplyError):
                    self._log(msg_id, method, account, random_id, "rpc_error", False,
                              action.code, action.message)
                    self._send_error(msg_id, action.code, action.message)
                    return
                elif isinstance(action, DropReply):
                    drop = True
                elif isinstance(action, ResetConnection):
                    if action.after_execute:
                        reset_after = True
                    else:
                        self._log(msg_id, method, account, random_id, "reset", False)
                        self.close("reset by fault plan", abort=True)
                        return
                elif isinstance(action, CloseConnection):
                    self._log(msg_id, method, account, random_id, "reset", False)
                    self.close("closed by fault plan", abort=action.abort)
                    return
                elif isinstance(action, TransportError):
                    self._log(msg_id, method, account, random_id, "transport_error", False,
                              -action.code)
                    if action.refuse_seconds > 0:
                        self.ctx.start_refusing(self.dc_id, action)
                    self.send_transport_error(action.code, action.mode)
                    self.close(f"transport error -{action.code}")
                    return
                elif isinstance(action, Stall):
                    self._log(msg_id, method, account, random_id, "stalled", False)
                    self._stall()
                    return
            if self.ctx.sync_handle is not None or method in _SERVICE:
                self._execute_sync(info, account, drop, reset_after)
                return
            try:
                result = await self.ctx.world.handle(info)
            except RpcErrorReply as e:
                self._complete_error(info, account, e, drop, reset_after)
                return
            self._complete(info, account, result, drop, reset_after)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._internal(e, msg_id, method, account, random_id)

    def _execute_sync(
        self, info: RequestInfo, account: int | None, drop: bool, reset_after: bool
    ) -> None:
        service = _SERVICE.get(info.method)
        try:
            if service is not None:
                result = service(self, info.msg_id, info.request)
            else:
                result = self.ctx.sync_handle(info)  # type: ignore[misc]
        except RpcErrorReply as e:
            self._complete_error(info, account, e, drop, reset_after)
            return
        except Exception as e:
            self._internal(e, info.msg_id, info.method, account, info.random_id)
            return
        self._complete(info, account, result, drop, reset_after)

    def _complete_error(
        self, info: RequestInfo, account: int | None, e: RpcErrorReply, drop: bool,
        reset_after: bool,
    ) -> None:
        msg_id, method, random_id = info.msg_id, info.method, info.random_id
        # The world refused it: nothing took effect, so it does not count as executed.
        if reset_after:
            self._log(msg_id, method, account, random_id, "reset", False, e.code, e.message)
            self.close("reset by fault plan after execute", abort=True)
        elif drop or self._unanswered():
            self._log(msg_id, method, account, random_id, "dropped", False, e.code, e.message)
        else:
            self._log(msg_id, method, account, random_id, "rpc_error", False, e.code, e.message)
            self._send_error(msg_id, e.code, e.message)

    def _complete(
        self, info: RequestInfo, account: int | None, result: Any, drop: bool, reset_after: bool
    ) -> None:
        msg_id, method, random_id = info.msg_id, info.method, info.random_id
        if reset_after:
            self._log(msg_id, method, account, random_id, "reset", True)
            self.close("reset by fault plan after execute", abort=True)
            return
        if drop or self._unanswered():
            # DropReply, or the connection went away while the request ran: executed, unanswered
            self._log(msg_id, method, account, random_id, "dropped", True)
            return
        if isinstance(result, TLObject) and result.CONSTRUCTOR_ID in _TOP_LEVEL:
            self._send(result, True)
        else:
            try:
                body = serialize_result(result)
            except Exception as e:
                self._internal(e, msg_id, method, account, random_id)
                return
            self._send_raw(_pack_Iq(RPC_RESULT_ID, msg_id) + body)
        self._log(msg_id, method, account, random_id, "ok", True)

    def _log(
        self,
        msg_id: int,
        method: str,
        account: int | None,
        random_id: int | None,
        outcome: Outcome,
        executed: bool,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        self.ctx.log.entries.append(
            LogEntry(_monotonic(), "request", self.conn_id, self.dc_id, account, method, msg_id,
                     random_id, outcome, executed, code, message, None, self.framing)
        )

    # ---- service calls -----------------------------------------------------------------------

    def _ping(self, msg_id: int, req: Any) -> TLObject:
        return types.Pong(msg_id, req.ping_id)

    def _ping_delay(self, msg_id: int, req: Any) -> TLObject:
        if self._ping_disconnect is not None:
            self._ping_disconnect.cancel()
        delay = max(0, int(req.disconnect_delay))
        self._ping_disconnect = self._loop.call_later(
            delay + 0.0, self.close, "ping_delay_disconnect timeout"
        )
        return types.Pong(msg_id, req.ping_id)

    def _destroy_session(self, msg_id: int, req: Any) -> TLObject:
        assert self._auth is not None
        skey = (self._auth.auth_key_id, req.session_id)
        if skey in self.ctx.sessions:
            self.ctx.sessions.discard(skey)
            return types.DestroySessionOk(req.session_id)
        return types.DestroySessionNone(req.session_id)

    def _future_salts(self, msg_id: int, req: Any) -> TLObject:
        from datetime import datetime, timedelta, timezone

        now = datetime.now(timezone.utc).replace(microsecond=0)
        now += timedelta(seconds=round(self.clock_offset()))
        salts = [
            types.FutureSalt(now + timedelta(hours=i), now + timedelta(hours=i + 1),
                             self.ctx.salt)
            for i in range(max(1, min(64, int(req.num))))
        ]
        return types.FutureSalts(msg_id, int(now.timestamp()), salts)

    def _drop_answer(self, msg_id: int, req: Any) -> TLObject:
        return types.RpcAnswerUnknown()

    # ---- writing -----------------------------------------------------------------------------

    def _send_error(self, req_msg_id: int, code: int, message: str) -> None:
        self._send_raw(_pack_Iq(RPC_RESULT_ID, req_msg_id) + bytes(types.RpcError(code, message)))

    def _send(self, obj: TLObject, content_related: bool, residue: int = 1) -> None:
        self._enqueue(bytes(obj), content_related, residue)

    def _send_raw(self, body: bytes) -> None:
        self._enqueue(body, True, 1)

    def _enqueue(self, body: bytes, content_related: bool, residue: int) -> None:
        if self.closed or self.stalled:
            return
        if self._silenced():
            return
        if content_related:
            seq = self._seq * 2 + 1
            self._seq += 1
        else:
            seq = self._seq * 2
        self._out.append((self._new_msg_id(residue), seq, body))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.closed or self.stalled or self.codec is None or self._km is None:
            out.clear()
            return
        if self._has_link_faults():
            fault = self.link_fault()
            if fault is not None and fault.mode == "silence":
                out.clear()
                return
            if fault is not None:  # stalled for a while: deliver what is queued when it ends
                wait = 0.05 if fault.until is None else min(0.05, fault.until - _monotonic())
                self._flush_scheduled = True
                self._loop.call_later(max(wait, 0.001), self._flush)
                return
        self._out = []
        head = _pack_qq(self.ctx.salt, self._session_id)
        encode = self.codec.encode
        encrypt = self._km.encrypt
        chunks: list[bytes] = []
        i = 0
        n = len(out)
        while i < n:
            msg_id, seq, body = out[i]
            if n - i == 1 or len(body) > MAX_CONTAINER_BYTES // 2:
                plain = head + _pack_qii(msg_id, seq, len(body)) + body
                i += 1
            else:
                parts: list[bytes] = []
                size = 0
                j = i
                while j < n and j - i < MAX_CONTAINER_MESSAGES:
                    m_id, m_seq, m_body = out[j]
                    if size + len(m_body) > MAX_CONTAINER_BYTES and j > i:
                        break
                    parts.append(_pack_qii(m_id, m_seq, len(m_body)))
                    parts.append(m_body)
                    size += len(m_body) + 16
                    j += 1
                count = j - i
                if count == 1:
                    plain = head + _pack_qii(msg_id, seq, len(body)) + body
                else:
                    cbody = _pack_Ii(CONTAINER_ID, count) + b"".join(parts)
                    self.ctx.stats["containers_sent"] += 1
                    plain = (head + _pack_qii(self._new_msg_id(1), self._seq * 2,
                                              len(cbody)) + cbody)
                i = j
            chunks.append(encode(encrypt(plain)))
        with contextlib.suppress(Exception):
            self.writer.write(self.codec.seal(b"".join(chunks)))


# Calls after which Telegram sends the key updates (core.telegram.org/api/updates: a client
# starts receiving updates once it asked for the state or a difference).
_STARTS_UPDATES = frozenset({"updates.getState", "updates.getDifference"})

# Replies that go out as top-level messages, not inside rpc_result (Telethon's handlers).
_TOP_LEVEL = frozenset(
    {
        types.Pong.CONSTRUCTOR_ID,
        types.FutureSalts.CONSTRUCTOR_ID,
        types.DestroySessionOk.CONSTRUCTOR_ID,
        types.DestroySessionNone.CONSTRUCTOR_ID,
    }
)

_SERVICE: dict[str, Any] = {
    "ping": Connection._ping,
    "pingDelayDisconnect": Connection._ping_delay,
    "destroySession": Connection._destroy_session,
    "getFutureSalts": Connection._future_salts,
    "rpcDropAnswer": Connection._drop_answer,
}
