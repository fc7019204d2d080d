"""Fault actions carried out by the server: outcomes in the log, MTProto notifications."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from telethon import errors
from telethon.tl import functions, types
from telethon.tl.core import RpcResult
from test_server_raw import RawClient

from telethon_guard.testing import (
    Delay,
    DropReply,
    FaultPlan,
    ReplyError,
    ResetConnection,
    Stall,
    TelegramTestServer,
    World,
)
from telethon_guard.testing._types import ConnectInfo, RequestInfo, TransportError
from telethon_guard.testing.faults import At, OnCalls, Rule, StallOn

T = 10.0


async def _raw(server: TelegramTestServer) -> RawClient:
    server.session()
    raw = await RawClient.open(server.dc(1))
    raw.use_key(server.auth_states()[-1].auth_key, server.salt)
    return raw


async def _objects_until(raw: RawClient, want: type, timeout: float = T) -> list[Any]:
    seen: list[Any] = []

    async def until() -> None:
        while not any(isinstance(o, want) for o in seen):
            seen.extend(await raw.read_objects())

    await asyncio.wait_for(until(), timeout)
    return seen


async def test_drop_reply_executes_silently() -> None:
    plan = FaultPlan(OnCalls("messages.sendMessage", 1, DropReply()))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        raw = await _raw(server)
        await raw.request(functions.messages.SendMessageRequest(
            types.InputPeerSelf(), "dropped", random_id=1))
        await raw.request(functions.PingRequest(5))
        objs = await _objects_until(raw, types.Pong)
        assert not any(isinstance(o, RpcResult) for o in objs)  # no reply to the send
        (entry,) = server.log.requests("messages.sendMessage")
        assert (entry.outcome, entry.executed, entry.random_id) == ("dropped", True, 1)
        assert [m.text for m in server.world.sent_messages()] == ["dropped"]


async def test_reset_before_and_after_execute() -> None:
    plan = FaultPlan(
        OnCalls("messages.sendMessage", 1, ResetConnection()),
        OnCalls("messages.sendMessage", 2, ResetConnection(after_execute=True)),
    )
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        server.session()
        key = server.auth_states()[-1].auth_key  # one account: call_index counts per account
        for rid in (1, 2):
            raw = await RawClient.open(server.dc(1))
            raw.use_key(key, server.salt)
            await raw.request(functions.messages.SendMessageRequest(
                types.InputPeerSelf(), f"m{rid}", random_id=rid))
            await raw.read_until_eof()
        outcomes = [(e.random_id, e.outcome, e.executed)
                    for e in server.log.requests("messages.sendMessage")]
        assert outcomes == [(1, "reset", False), (2, "reset", True)]
        assert [m.text for m in server.world.sent_messages()] == ["m2"]


async def test_stall_keeps_socket_open_and_silent() -> None:
    plan = FaultPlan(StallOn("help.getNearestDc", 1))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        raw = await _raw(server)
        await raw.request(functions.help.GetNearestDcRequest())
        await _objects_until(raw, types.NewSessionCreated)
        await raw.request(functions.PingRequest(1))
        assert await raw.silent_for(0.3)  # no pong, no close
        assert server.log.count("help.getNearestDc", outcome="stalled") == 1
        async with server.client() as client:  # other connections are fine
            assert await asyncio.wait_for(client.get_me(), T) is not None


async def test_timed_reset_and_stall_hit_live_connections() -> None:
    plan = FaultPlan(At(0.2, ResetConnection(), dc=1), At(0.2, Stall(), dc=2))
    async with TelegramTestServer(dcs=2, faults=plan) as server:
        a = await RawClient.open(server.dc(1))
        b = await RawClient.open(server.dc(2))
        assert await a.read_until_eof(timeout=5) == b""  # reset at 0.2 s
        assert await b.silent_for(0.2)  # stalled, still open
        assert server.internal_errors == []


async def test_bad_msg_id_gets_bad_msg_notification() -> None:
    async with TelegramTestServer(dcs=1) as server:
        raw = await _raw(server)
        assert raw.state is not None
        body = bytes(functions.PingRequest(9))
        bad_id = raw.state._get_new_msg_id() + 1  # not divisible by 4
        await raw.send_payload(raw.state.encrypt_message_data(
            struct.pack("<qii", bad_id, 1, len(body)) + body))
        objs = await _objects_until(raw, types.BadMsgNotification)
        note = next(o for o in objs if isinstance(o, types.BadMsgNotification))
        assert (note.bad_msg_id, note.error_code) == (bad_id, 18)
        future_id = (raw.state._get_new_msg_id() + (120 << 32)) & ~3  # 2 minutes ahead
        await raw.send_payload(raw.state.encrypt_message_data(
            struct.pack("<qii", future_id, 3, len(body)) + body))
        objs = await _objects_until(raw, types.BadMsgNotification)
        note = next(o for o in objs if isinstance(o, types.BadMsgNotification))
        assert note.error_code == 17
        assert server.stats["bad_msg_notification"] == 2


async def test_wrong_salt_gets_bad_server_salt() -> None:
    async with TelegramTestServer(dcs=1) as server:
        raw = await _raw(server)
        assert raw.state is not None
        raw.state.salt = 0
        await raw.request(functions.PingRequest(3))
        objs = await _objects_until(raw, types.BadServerSalt)
        salt = next(o for o in objs if isinstance(o, types.BadServerSalt))
        assert salt.new_server_salt == server.salt and salt.error_code == 48
        assert server.log.count() == 0  # nothing was executed


class _AsyncWorld(World):
    async def handle(self, info: RequestInfo) -> Any:
        await asyncio.sleep(0.001)
        return self.handle_sync(info)


async def test_async_world_handle_is_awaited() -> None:
    async with TelegramTestServer(dcs=1, world=_AsyncWorld()) as server:
        assert server._sync_handle is None
        async with server.client() as client:
            results = await asyncio.wait_for(asyncio.gather(
                client.get_me(), client(functions.help.GetNearestDcRequest())), T)
        assert results[0] is not None and results[1].this_dc == 1
        assert server.internal_errors == []


async def test_request_outliving_its_connection_is_logged_dropped() -> None:
    plan = FaultPlan(OnCalls("messages.sendMessage", None, Delay(0.3)))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        raw = await _raw(server)
        await raw.request(functions.messages.SendMessageRequest(
            types.InputPeerSelf(), "late", random_id=9))
        await asyncio.sleep(0.05)
        raw.close()
        await asyncio.sleep(0.5)
        (entry,) = server.log.requests("messages.sendMessage")
        assert (entry.outcome, entry.executed) == ("dropped", True)
        assert [m.text for m in server.world.sent_messages()] == ["late"]


async def test_fault_plan_is_mutable_at_runtime() -> None:
    async with TelegramTestServer(dcs=1) as server:
        async with server.client(flood_sleep_threshold=0) as client:
            assert (await asyncio.wait_for(
                client(functions.help.GetNearestDcRequest()), T)).this_dc == 1
            server.faults.add(OnCalls("help.getNearestDc", None, ReplyError(420, "FLOOD_WAIT_30")))
            with pytest.raises(errors.FloodWaitError) as info:
                await asyncio.wait_for(client(functions.help.GetNearestDcRequest()), T)
            assert info.value.seconds == 30
            server.faults.clear()
        async with server.client() as other:  # (the first client's own flood memo would refuse)
            assert (await asyncio.wait_for(
                other(functions.help.GetNearestDcRequest()), T)).this_dc == 1
        assert server.log.count("help.getNearestDc", outcome="rpc_error") == 1


class _OnConnect(Rule):
    def __init__(self, *actions: Any) -> None:
        super().__init__()
        self.actions = list(actions)

    def on_connect(self, info: ConnectInfo) -> Any:
        return self.actions.pop(0) if self.actions else None


async def test_connect_time_actions() -> None:
    plan = FaultPlan(_OnConnect(Stall(), ResetConnection(), TransportError(429, "raw")))
    async with TelegramTestServer(dcs=1, faults=plan) as server:
        stalled = await _raw(server)
        await stalled.request(functions.PingRequest(1))
        assert await stalled.silent_for(0.3)
        reset = await RawClient.open(server.dc(1))
        assert await reset.read_until_eof() == b""
        refused = await RawClient.open(server.dc(1))
        assert await refused.read_until_eof() == struct.pack("<i", -429)
        async with server.client() as client:  # the fourth connection is served
            assert await asyncio.wait_for(client.get_me(), T) is not None
        assert server.log.connections_refused() == 1
        assert server.log.connections_opened() == 3
