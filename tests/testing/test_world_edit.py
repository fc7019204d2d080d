"""``messages.editMessage`` in the test world, through real Telethon (issue 15's edit floods
need edits the server answers like Telegram)."""

from __future__ import annotations

import asyncio

import pytest
from telethon import errors as tl_errors
from telethon.tl import functions, types

from telethon_guard.testing.server import TelegramTestServer

T = 30.0  # bound for every wait, seconds


@pytest.mark.parametrize("chat", ["chat_a", "group", "alice"])
async def test_edit_own_message_then_not_modified_then_invalid_ids(chat: str) -> None:
    async with TelegramTestServer() as server:
        client = server.client()
        async with client:
            if chat == "group":
                peer = types.InputPeerChat(server.world.group_id("group"))
            else:
                peer = await asyncio.wait_for(client.get_input_entity(chat), T)
            sent = await asyncio.wait_for(client.send_message(peer, "v1"), T)

            def edit(msg_id: int, text: str) -> object:
                return client(functions.messages.EditMessageRequest(
                    peer=peer, id=msg_id, message=text))

            await asyncio.wait_for(edit(sent.id, "v2"), T)
            # Telethon's own edit_message returns the edited Message (from updateEdit*Message).
            edited = await asyncio.wait_for(client.edit_message(peer, sent.id, "v3"), T)
            assert isinstance(edited, types.Message)
            assert (edited.id, edited.message) == (sent.id, "v3")
            assert edited.edit_date is not None and edited.out
            # the edit is stored: read back from the server, and in its ground truth
            [again] = await asyncio.wait_for(client.get_messages(peer, ids=[sent.id]), T)
            assert again.message == "v3"
            assert [m.text for m in server.world.sent_messages()
                    if m.message_id == sent.id] == ["v3"]
            with pytest.raises(tl_errors.MessageNotModifiedError):
                await asyncio.wait_for(edit(sent.id, "v3"), T)  # same text as now
            await asyncio.wait_for(edit(sent.id, "v2"), T)
            with pytest.raises(tl_errors.MessageNotModifiedError):
                await asyncio.wait_for(edit(sent.id, "v2"), T)  # same text as now
            await asyncio.wait_for(edit(sent.id, "v1"), T)  # back to the first text: a change
            with pytest.raises(tl_errors.MessageIdInvalidError):
                await asyncio.wait_for(edit(sent.id + 1000, "x"), T)
        assert server.log.count("messages.editMessage", outcome="ok") == 4
        assert server.log.count("messages.editMessage", outcome="rpc_error") == 3
        assert server.internal_errors == []


async def test_edit_of_a_message_someone_else_sent_is_invalid() -> None:
    async with TelegramTestServer() as server:
        client = server.client()
        async with client:
            news = await asyncio.wait_for(client.get_input_entity("chat_a"), T)
            with pytest.raises(tl_errors.MessageIdInvalidError):  # a generated message
                await asyncio.wait_for(client(functions.messages.EditMessageRequest(
                    peer=news, id=1, message="mine now")), T)
