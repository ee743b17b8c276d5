"""Two matrix-nio clients with encryption enabled exchange a message and decrypt it."""

import asyncio
import uuid
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, LoginResponse, MegolmEvent, RoomMessageText, RoomSendResponse

from tests.client import Client
from tests.server import ServerProcess

PASSWORD = "an encrypted password"


async def encrypted_client(server: ServerProcess, store: Path) -> AsyncClient:
    registered = Client(server.url).register("e2e_" + uuid.uuid4().hex[:10], PASSWORD)
    store.mkdir()
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(server.url, registered.user_id, store_path=str(store), config=config)
    response = await client.login(PASSWORD, device_name="nio test")
    assert isinstance(response, LoginResponse), response
    if client.should_upload_keys:
        await client.keys_upload()
    return client


def test_encrypted_message_is_decrypted_by_the_other_user(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await encrypted_client(server, tmp_path / "alice")
        bob = await encrypted_client(server, tmp_path / "bob")
        try:
            created = await alice.room_create(
                invite=[bob.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
                ],
            )
            room_id = created.room_id
            await bob.sync(timeout=0)
            await bob.join(room_id)
            await alice.sync(timeout=0)
            await bob.sync(timeout=0)
            assert alice.rooms[room_id].encrypted

            sent = await alice.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": "only bob can read this"},
                ignore_unverified_devices=True,
            )
            assert isinstance(sent, RoomSendResponse), sent
            # On the wire the message is ciphertext.
            raw = (
                Client(server.url, bob.access_token)
                .get(f"/_matrix/client/v3/rooms/{room_id}/event/{sent.event_id}")
                .json()
            )
            assert raw["type"] == "m.room.encrypted" and "only bob" not in str(raw)

            received = []
            for _ in range(5):  # the room key (to-device) and the message may arrive in separate syncs
                response = await bob.sync(timeout=2000)
                timeline = response.rooms.join.get(room_id)
                received += [e for e in (timeline.timeline.events if timeline else [])]
                if any(isinstance(e, RoomMessageText) for e in received):
                    break
            texts = [e.body for e in received if isinstance(e, RoomMessageText)]
            undecrypted = [e for e in received if isinstance(e, MegolmEvent)]
            assert texts == ["only bob can read this"], (texts, undecrypted)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())
