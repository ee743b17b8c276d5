"""Moderation across servers against a real Synapse: topic and power-level changes made on either side,
kicks and bans of a remote user both ways (a banned user cannot rejoin), and a remote user given power
using it. Each check looks at both servers: their /rooms/{id}/state and their users' /sync."""

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.client import RoomClient, new_room_user, ok, quote
from tests.federation_servers import FederatingServer
from tests.integration.test_federation_membership import eventually, join_via, sees_membership, sync
from tests.synapse import SynapseProcess

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

# A full sync that also lists rooms the user has left (kicked or banned), and a timeline long enough for the checks.
_FULL_SYNC_FILTER = json.dumps({"room": {"include_leave": True, "timeline": {"limit": 50}}})


def state_content(user: RoomClient, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
    answer = user.room_get(room_id, f"state/{event_type}/{quote(state_key)}")
    return answer.json() if answer.status_code == 200 else None


def synced_state(user: RoomClient, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
    """The content of a state event as the user's full /sync shows it (latest in the timeline, else in state)."""
    answer = ok(user.get("/_matrix/client/v3/sync", params={"timeout": 0, "filter": _FULL_SYNC_FILTER}))
    found = None
    for section in ("join", "leave"):
        room = answer.get("rooms", {}).get(section, {}).get(room_id)
        if room is None:
            continue
        for event in room["state"]["events"] + room["timeline"]["events"]:
            if event["type"] == event_type and event.get("state_key") == state_key:
                found = event["content"]
    return found


def seen_everywhere(
    users: list[RoomClient], room_id: str, event_type: str, check: Callable[[dict[str, Any]], bool], state_key: str = ""
) -> Callable[[], bool]:
    """True once every user's server shows a matching state event, in /state and in /sync."""

    def probe() -> bool:
        for user in users:
            for content in (
                state_content(user, room_id, event_type, state_key),
                synced_state(user, room_id, event_type, state_key),
            ):
                if content is None or not check(content):
                    return False
        return True

    return probe


def member_in_sync(user: RoomClient, room_id: str, wanted: str) -> Callable[[], bool]:
    """True once the user's own /sync shows their membership in the room as `wanted` (leave or ban)."""
    return lambda: (synced_state(user, room_id, "m.room.member", user.user_id) or {}).get("membership") == wanted


def grant_power(admin: RoomClient, room_id: str, user_id: str, level: int) -> None:
    levels = ok(admin.room_get(room_id, "state/m.room.power_levels/"))
    levels.setdefault("users", {})[user_id] = level
    admin.send_state(room_id, "m.room.power_levels", levels)


def has_power(user: RoomClient, room_id: str, user_id: str, level: int) -> Callable[[], bool]:
    """True once the user's server holds power levels giving `user_id` that level."""
    return lambda: (state_content(user, room_id, "m.room.power_levels") or {}).get("users", {}).get(user_id) == level


def moderate(admin: RoomClient, room_id: str, action: str, user_id: str) -> None:
    ok(admin.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/{action}", {"user_id": user_id, "reason": "test"}))


def ours_with_sam(fed_server: FederatingServer, synapse: SynapseProcess) -> tuple[RoomClient, RoomClient, str]:
    """Our user's public room with a Synapse user joined."""
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="public_chat")
    sam = synapse.register()
    join_via(sam, room_id, fed_server.server_name)
    eventually(sees_membership(alice, room_id, sam.user_id, "join"), "the Synapse user's join at our server")
    return alice, sam, room_id


def synapse_with_alice(fed_server: FederatingServer, synapse: SynapseProcess) -> tuple[RoomClient, RoomClient, str]:
    """A Synapse user's public room with our user joined."""
    sam = synapse.register()
    room_id = sam.create_room(preset="public_chat")
    alice = new_room_user(fed_server.url)
    join_via(alice, room_id, synapse.server_name)
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our user's join at Synapse")
    return alice, sam, room_id


# -- topic and power levels ---------------------------------------------------------------------------


def test_topic_changes_from_either_side_reach_both(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = ours_with_sam(fed_server, synapse)
    alice.send_state(room_id, "m.room.topic", {"topic": "set here"})
    eventually(
        seen_everywhere([alice, sam], room_id, "m.room.topic", lambda c: c.get("topic") == "set here"),
        "our topic on both servers",
    )
    grant_power(alice, room_id, sam.user_id, 50)
    eventually(has_power(sam, room_id, sam.user_id, 50), "the new power levels at Synapse")
    sam.send_state(room_id, "m.room.topic", {"topic": "set at Synapse"})
    eventually(
        seen_everywhere([alice, sam], room_id, "m.room.topic", lambda c: c.get("topic") == "set at Synapse"),
        "Synapse's topic on both servers",
    )


def test_power_level_changes_from_either_side_reach_both(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = synapse_with_alice(fed_server, synapse)
    grant_power(sam, room_id, alice.user_id, 100)
    eventually(
        seen_everywhere(
            [alice, sam], room_id, "m.room.power_levels", lambda c: c.get("users", {}).get(alice.user_id) == 100
        ),
        "Synapse's power levels on both servers",
    )
    # Our user, now an admin there, changes the levels from our side.
    levels = ok(alice.room_get(room_id, "state/m.room.power_levels/"))
    levels["events"] = {**levels.get("events", {}), "m.room.topic": 75}
    alice.send_state(room_id, "m.room.power_levels", levels)
    eventually(
        seen_everywhere(
            [alice, sam], room_id, "m.room.power_levels", lambda c: c.get("events", {}).get("m.room.topic") == 75
        ),
        "our power levels on both servers",
    )


def test_remote_user_given_power_can_change_the_topic(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = ours_with_sam(fed_server, synapse)
    refused = sam.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.topic/", {"topic": "too early"})
    assert refused.status_code == 403, refused.text
    grant_power(alice, room_id, sam.user_id, 50)
    eventually(has_power(sam, room_id, sam.user_id, 50), "the new power levels at Synapse")
    sam.send_state(room_id, "m.room.topic", {"topic": "by the new moderator"})
    eventually(
        seen_everywhere([alice, sam], room_id, "m.room.topic", lambda c: c.get("topic") == "by the new moderator"),
        "the remote moderator's topic on both servers",
    )


def test_our_user_given_power_in_a_synapse_room_can_change_the_topic(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alice, sam, room_id = synapse_with_alice(fed_server, synapse)
    refused = alice.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.topic/", {"topic": "too early"})
    assert refused.status_code == 403, refused.text
    grant_power(sam, room_id, alice.user_id, 50)
    eventually(has_power(alice, room_id, alice.user_id, 50), "the new power levels at our server")
    alice.send_state(room_id, "m.room.topic", {"topic": "by our moderator"})
    eventually(
        seen_everywhere([alice, sam], room_id, "m.room.topic", lambda c: c.get("topic") == "by our moderator"),
        "our moderator's topic on both servers",
    )


# -- kicks and bans -------------------------------------------------------------------------------------


def test_we_kick_a_synapse_user(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = ours_with_sam(fed_server, synapse)
    moderate(alice, room_id, "kick", sam.user_id)
    eventually(member_in_sync(sam, room_id, "leave"), "the kick in the Synapse user's sync")
    assert (state_content(alice, room_id, "m.room.member", sam.user_id) or {}).get("membership") == "leave"
    # A kick is not a ban: the user may come back.
    assert join_via(sam, room_id, fed_server.server_name) == room_id
    eventually(sees_membership(alice, room_id, sam.user_id, "join"), "the rejoin at our server")


def test_synapse_kicks_our_user(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = synapse_with_alice(fed_server, synapse)
    moderate(sam, room_id, "kick", alice.user_id)
    eventually(member_in_sync(alice, room_id, "leave"), "the kick in our user's sync")
    assert room_id not in sync(alice)["rooms"]["join"]
    assert join_via(alice, room_id, synapse.server_name) == room_id
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "the rejoin at Synapse")


def test_we_ban_a_synapse_user_who_cannot_rejoin(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = ours_with_sam(fed_server, synapse)
    moderate(alice, room_id, "ban", sam.user_id)
    eventually(member_in_sync(sam, room_id, "ban"), "the ban in the Synapse user's sync")
    assert (state_content(alice, room_id, "m.room.member", sam.user_id) or {}).get("membership") == "ban"
    answer = sam.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}, params={"server_name": fed_server.server_name})
    assert answer.status_code == 403, answer.text
    assert (state_content(alice, room_id, "m.room.member", sam.user_id) or {}).get("membership") == "ban"


def test_synapse_bans_our_user_who_cannot_rejoin(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam, room_id = synapse_with_alice(fed_server, synapse)
    moderate(sam, room_id, "ban", alice.user_id)
    eventually(member_in_sync(alice, room_id, "ban"), "the ban in our user's sync")
    answer = alice.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}, params={"server_name": synapse.server_name})
    assert answer.status_code == 403, answer.text
    assert answer.json()["errcode"] == "M_FORBIDDEN"
    assert (state_content(sam, room_id, "m.room.member", alice.user_id) or {}).get("membership") == "ban"
