"""Two matrix-nio clients share a room: create, invite, join, talk, moderate, scroll back through 60+ messages."""

import asyncio
import uuid

from nio import (
    AsyncClient,
    JoinResponse,
    RoomBanResponse,
    RoomCreateResponse,
    RoomGetStateResponse,
    RoomInviteResponse,
    RoomKickResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomRedactResponse,
    RoomSendError,
    RoomSendResponse,
)

from tests.server import ServerProcess

MESSAGES = 64


async def registered(server: ServerProcess) -> AsyncClient:
    client = AsyncClient(server.url, "nio_" + uuid.uuid4().hex[:10])
    response = await client.register(client.user, "a nio password")
    assert response.user_id, response
    return client


async def send(client: AsyncClient, room_id: str, text: str) -> str:
    response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
    assert isinstance(response, RoomSendResponse), response
    return response.event_id


async def scroll_back(client: AsyncClient, room_id: str, page: int) -> list:
    """Every event of the room, newest first, through /messages pages of `page` events."""
    events, token = [], None
    while True:
        response = await client.room_messages(room_id, start=token, limit=page)
        assert isinstance(response, RoomMessagesResponse), response
        events += response.chunk
        if not response.end or not response.chunk:
            return events
        token = response.end


def test_two_nio_users_talk_moderate_and_paginate(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice, bob, eve = await registered(server), await registered(server), await registered(server)
        try:
            created = await alice.room_create(name="nio room", invite=[bob.user_id])
            assert isinstance(created, RoomCreateResponse), created
            room_id = created.room_id
            assert isinstance(await bob.join(room_id), JoinResponse)

            sent = []
            for n in range(MESSAGES):
                sender = alice if n % 2 == 0 else bob
                sent.append((sender.user_id, f"message {n}", await send(sender, room_id, f"message {n}")))

            # Both see exactly the sent messages, in order, whatever the page size.
            for client, page in ((alice, 7), (bob, 25)):
                timeline = [e for e in await scroll_back(client, room_id, page) if isinstance(e, RoomMessageText)]
                assert [(e.sender, e.body, e.event_id) for e in reversed(timeline)] == sent

            # Moderation: alice redacts one of bob's messages, invites and kicks eve, bans bob.
            redacted = sent[1][2]
            assert isinstance(await alice.room_redact(room_id, redacted, "spam"), RoomRedactResponse)
            assert isinstance(await alice.room_invite(room_id, eve.user_id), RoomInviteResponse)
            assert isinstance(await eve.join(room_id), JoinResponse)
            assert isinstance(await alice.room_kick(room_id, eve.user_id, "bye"), RoomKickResponse)
            assert isinstance(await alice.room_ban(room_id, bob.user_id, "enough"), RoomBanResponse)
            refused = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "still here?"})
            assert isinstance(refused, RoomSendError) and refused.status_code == "M_FORBIDDEN"

            state = await alice.room_get_state(room_id)
            assert isinstance(state, RoomGetStateResponse), state
            members = {e["state_key"]: e["content"]["membership"] for e in state.events if e["type"] == "m.room.member"}
            assert members == {alice.user_id: "join", bob.user_id: "ban", eve.user_id: "leave"}

            newest_first = await scroll_back(alice, room_id, 50)
            bodies = [e.body for e in newest_first if isinstance(e, RoomMessageText)]
            assert "message 1" not in bodies and len(bodies) == MESSAGES - 1
        finally:
            for client in (alice, bob, eve):
                await client.close()

    asyncio.run(scenario())
