"""Pushers over HTTP: /pushers/set and GET /pushers, and the notifications the server then posts to a real
push gateway (tests/push_gateway.py, a Twisted web server in a subprocess). The retry policy's long waits
(giving up after a day) are tested at the end with one pusher in-process, on a memory clock."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from twisted.internet.testing import MemoryReactorClock

from homeserver.app import HomeServer
from homeserver.core.requester import Requester
from homeserver.handlers.pushers import NotificationBuilder, RetryPolicy
from homeserver.handlers.pushers.gateway import GatewayAnswer, GatewayUnavailable
from homeserver.handlers.pushers.http_pusher import HttpPusher
from homeserver.handlers.room_creation import CreateRoomRequest
from homeserver.storage.pushers import PusherStore
from tests.client import (
    Client,
    RoomClient,
    assert_error,
    new_room_user,
    ok,
    pusher_body,
    pushers,
    quote,
    set_pusher,
)
from tests.inline import inline_server, resolve
from tests.integration.servers import extra_server
from tests.push_gateway import PushGateway


@pytest.fixture(scope="module")
def gateway() -> Iterator[PushGateway]:
    process = PushGateway().start()
    try:
        yield process
    finally:
        process.stop()


def add_pusher(client: Client, gateway: PushGateway, **fields: Any) -> str:
    """Set an HTTP pusher sending to the test gateway; returns its pushkey."""
    body = pusher_body(gateway.url, **fields)
    ok(set_pusher(client, body))
    return body["pushkey"]


def shared_room(alice: RoomClient, bob: RoomClient, **create: Any) -> str:
    room = alice.create_room(invite=[bob.user_id], **create)
    bob.join(room)
    return room


def send(client: RoomClient, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/{event_type}/{uuid.uuid4().hex}"
    return ok(client.put(path, content))["event_id"]


def set_display_name(client: RoomClient, name: str) -> None:
    ok(client.put(f"/_matrix/client/v3/profile/{quote(client.user_id or '')}/displayname", {"displayname": name}))


# -- /pushers/set and GET /pushers --------------------------------------------------------------------


def test_a_pusher_set_is_listed_with_its_fields(alice: RoomClient, gateway: PushGateway) -> None:
    body = pusher_body(gateway.url, profile_tag="xyz", data={"url": gateway.url, "format": "event_id_only"})
    assert ok(set_pusher(alice, body)) == {}
    expected = {key: value for key, value in body.items() if key != "append"}
    assert pushers(alice) == [expected]


def test_setting_the_same_app_id_and_pushkey_again_updates_the_pusher(
    alice: RoomClient, gateway: PushGateway
) -> None:
    pushkey = add_pusher(alice, gateway)
    add_pusher(alice, gateway, pushkey=pushkey, device_display_name="New phone", lang="de")
    (pusher,) = pushers(alice)
    assert (pusher["pushkey"], pusher["device_display_name"], pusher["lang"]) == (pushkey, "New phone", "de")
    assert "profile_tag" not in pusher


def test_a_user_may_have_several_pushers(alice: RoomClient, gateway: PushGateway) -> None:
    keys = {add_pusher(alice, gateway), add_pusher(alice, gateway), add_pusher(alice, gateway, app_id="org.other")}
    assert {p["pushkey"] for p in pushers(alice)} == keys


def test_kind_null_deletes_the_pusher(alice: RoomClient, gateway: PushGateway) -> None:
    kept, deleted = add_pusher(alice, gateway), add_pusher(alice, gateway)
    ok(set_pusher(alice, {"kind": None, "app_id": "org.example.app", "pushkey": deleted}))
    assert [p["pushkey"] for p in pushers(alice)] == [kept]
    # Deleting what is not there is not an error.
    ok(set_pusher(alice, {"kind": None, "app_id": "org.example.app", "pushkey": "never-set"}))


def test_without_append_the_pushkey_leaves_other_users(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    pushkey = add_pusher(alice, gateway)
    add_pusher(bob, gateway, pushkey=pushkey)  # append defaults to false
    assert pushers(alice) == []
    assert [p["pushkey"] for p in pushers(bob)] == [pushkey]


def test_with_append_other_users_keep_the_pushkey(alice: RoomClient, bob: RoomClient, gateway: PushGateway) -> None:
    pushkey = add_pusher(alice, gateway)
    add_pusher(bob, gateway, pushkey=pushkey, append=True)
    assert [p["pushkey"] for p in pushers(alice)] == [pushkey]
    assert [p["pushkey"] for p in pushers(bob)] == [pushkey]


def test_logging_out_removes_the_pushers_of_that_session(server: Any, alice: RoomClient, gateway: PushGateway) -> None:
    kept = add_pusher(alice, gateway)
    phone = RoomClient(server.url)
    ok(phone.login(alice.user_id or ""))
    add_pusher(phone, gateway)
    assert len(pushers(alice)) == 2
    ok(phone.post("/_matrix/client/v3/logout", {}))
    assert [p["pushkey"] for p in pushers(alice)] == [kept]


def test_logging_out_everywhere_removes_every_pusher(
    server: Any, alice: RoomClient, gateway: PushGateway
) -> None:
    phone = RoomClient(server.url)
    ok(phone.login(alice.user_id or ""))
    add_pusher(alice, gateway)
    add_pusher(phone, gateway)
    ok(phone.post("/_matrix/client/v3/logout/all", {}))
    ok(alice.login(alice.user_id or ""))
    assert pushers(alice) == []


def test_pushers_need_an_access_token(anon: Client, gateway: PushGateway) -> None:
    assert_error(anon.get("/_matrix/client/v3/pushers"), 401, "M_MISSING_TOKEN")
    assert_error(set_pusher(anon, pusher_body(gateway.url)), 401, "M_MISSING_TOKEN")


URL = "https://push.example.org/_matrix/push/v1/notify"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        pytest.param({k: v for k, v in pusher_body(URL).items() if k != "kind"}, "M_MISSING_PARAM", id="no-kind"),
        pytest.param({k: v for k, v in pusher_body(URL).items() if k != "app_id"}, "M_MISSING_PARAM", id="no-app-id"),
        pytest.param({"kind": None, "app_id": "org.example.app"}, "M_MISSING_PARAM", id="delete-without-pushkey"),
        pytest.param({k: v for k, v in pusher_body(URL).items() if k != "lang"}, "M_MISSING_PARAM", id="no-lang"),
        pytest.param({k: v for k, v in pusher_body(URL).items() if k != "data"}, "M_MISSING_PARAM", id="no-data"),
        pytest.param(
            {k: v for k, v in pusher_body(URL).items() if k != "app_display_name"}, "M_MISSING_PARAM", id="no-app-name"
        ),
        pytest.param(pusher_body(URL, data={"format": "event_id_only"}), "M_MISSING_PARAM", id="no-url"),
        pytest.param(pusher_body(URL, kind="email"), "M_INVALID_PARAM", id="email-kind"),
        pytest.param(pusher_body(URL, kind="carrier-pigeon"), "M_INVALID_PARAM", id="unknown-kind"),
        pytest.param(pusher_body(URL, kind=5), "M_INVALID_PARAM", id="kind-not-a-string"),
        pytest.param(pusher_body(URL, app_id="a" * 65), "M_INVALID_PARAM", id="app-id-too-long"),
        pytest.param(pusher_body(URL, pushkey="é" * 257), "M_INVALID_PARAM", id="pushkey-over-512-bytes"),
        pytest.param(pusher_body(URL, pushkey=""), "M_INVALID_PARAM", id="empty-pushkey"),
        pytest.param(pusher_body(URL, data="https://x"), "M_INVALID_PARAM", id="data-not-an-object"),
        pytest.param(pusher_body(URL, lang=None), "M_INVALID_PARAM", id="lang-null"),
        pytest.param(pusher_body(URL, append="yes"), "M_INVALID_PARAM", id="append-not-a-boolean"),
        pytest.param(
            pusher_body(URL, data={"url": "https://push.example.org/notify"}), "M_INVALID_PARAM", id="wrong-path"
        ),
        pytest.param(
            pusher_body(URL, data={"url": "ftp://push.example.org/_matrix/push/v1/notify"}),
            "M_INVALID_PARAM",
            id="not-http",
        ),
        pytest.param(pusher_body(URL, data={"url": "/_matrix/push/v1/notify"}), "M_INVALID_PARAM", id="relative-url"),
        pytest.param(
            pusher_body(URL, data={"url": "https://push.example.org:99999/_matrix/push/v1/notify"}),
            "M_INVALID_PARAM",
            id="bad-port",
        ),
        pytest.param(pusher_body(URL, data={"url": ["x"]}), "M_INVALID_PARAM", id="url-not-a-string"),
        pytest.param(pusher_body(URL, data={"url": URL, "format": "full"}), "M_INVALID_PARAM", id="unknown-format"),
    ],
)
def test_invalid_pusher_settings_are_refused(alice: RoomClient, body: dict[str, Any], errcode: str) -> None:
    assert_error(set_pusher(alice, body), 400, errcode)
    assert pushers(alice) == []


def test_the_longest_app_id_and_pushkey_are_accepted(alice: RoomClient) -> None:
    body = pusher_body(URL, app_id="a" * 64, pushkey="é" * 256)  # 64 characters, 512 bytes
    ok(set_pusher(alice, body))
    assert [(p["app_id"], p["pushkey"]) for p in pushers(alice)] == [(body["app_id"], body["pushkey"])]


# -- notifications at the gateway ---------------------------------------------------------------------


def test_a_message_reaches_the_gateway_with_the_spec_payload(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    set_display_name(bob, "Major Tom")
    alias_name = "mc_" + uuid.uuid4().hex[:8]
    room = shared_room(alice, bob, name="Mission Control", room_alias_name=alias_name)
    pushkey = add_pusher(alice, gateway, data={"url": gateway.url, "custom": {"k": 1}})
    before = time.time()
    first = send(bob, room, {"msgtype": "m.text", "body": "I'm floating in a most peculiar way."})
    second = bob.send_text(room, "and the stars look very different today")
    one, two = gateway.wait_for(pushkey, 2)
    assert one == {
        "event_id": first,
        "room_id": room,
        "type": "m.room.message",
        "sender": bob.user_id,
        "sender_display_name": "Major Tom",
        "room_name": "Mission Control",
        "room_alias": f"#{alias_name}:localhost",
        "prio": "high",  # the one-to-one rule plays a sound
        "content": {"msgtype": "m.text", "body": "I'm floating in a most peculiar way."},
        "counts": {"unread": 1},
        "devices": [
            {
                "app_id": "org.example.app",
                "pushkey": pushkey,
                "pushkey_ts": one["devices"][0]["pushkey_ts"],
                "data": {"custom": {"k": 1}},  # everything but the url
                "tweaks": {"sound": "default"},
            }
        ],
    }
    assert abs(one["devices"][0]["pushkey_ts"] - before) < 60  # seconds
    assert (two["event_id"], two["counts"]) == (second, {"unread": 2})


def test_a_read_receipt_lowers_the_unread_count_sent(alice: RoomClient, bob: RoomClient, gateway: PushGateway) -> None:
    room = shared_room(alice, bob)
    pushkey = add_pusher(alice, gateway)
    first = bob.send_text(room, "one")
    gateway.wait_for(pushkey, 1)
    ok(alice.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(first)}", {}))
    bob.send_text(room, "two")
    assert gateway.wait_for(pushkey, 2)[1]["counts"] == {"unread": 1}


def test_a_group_message_is_low_priority_and_a_mention_high(
    alice: RoomClient, bob: RoomClient, carol: RoomClient, gateway: PushGateway
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    carol.join(room)  # three members: the group message rule, which sets no tweak
    pushkey = add_pusher(alice, gateway)
    bob.send_text(room, "hello all")
    send(bob, room, {"msgtype": "m.text", "body": "alice!", "m.mentions": {"user_ids": [alice.user_id]}})
    plain, mention = gateway.wait_for(pushkey, 2)
    assert (plain["prio"], plain["devices"][0]["tweaks"]) == ("low", {})
    assert (mention["prio"], mention["devices"][0]["tweaks"]) == ("high", {"sound": "default", "highlight": True})


def test_an_invite_tells_the_invitee_they_are_the_target(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    pushkey = add_pusher(alice, gateway)
    room = bob.create_room()
    bob.invite(room, alice.user_id or "")
    (notification,) = gateway.wait_for(pushkey, 1)
    assert notification["type"] == "m.room.member"
    assert notification["user_is_target"] is True
    assert notification["content"]["membership"] == "invite"


def test_event_id_only_sends_no_event_content(alice: RoomClient, bob: RoomClient, gateway: PushGateway) -> None:
    room = shared_room(alice, bob, name="Secret plans")
    pushkey = add_pusher(alice, gateway, data={"url": gateway.url, "format": "event_id_only"})
    event_id = bob.send_text(room, "the content stays on the server")
    (notification,) = gateway.wait_for(pushkey, 1)
    assert notification == {
        "event_id": event_id,
        "room_id": room,
        "prio": "high",
        "counts": {"unread": 1},
        "devices": [
            {
                "app_id": "org.example.app",
                "pushkey": pushkey,
                "pushkey_ts": notification["devices"][0]["pushkey_ts"],
                "data": {"format": "event_id_only"},
                "tweaks": {"sound": "default"},
            }
        ],
    }


def test_no_push_for_own_events_or_silent_ones(
    alice: RoomClient, bob: RoomClient, carol: RoomClient, gateway: PushGateway
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    pushkey = add_pusher(alice, gateway)
    alice.send_text(room, "my own message")
    carol.join(room)  # a membership change: dont_notify
    send(bob, room, {"msgtype": "m.notice", "body": "a bot's notice"})  # suppressed notices
    sentinel = bob.send_text(room, "this one notifies")
    delivered = gateway.wait_for(pushkey, 1)
    assert [n["event_id"] for n in delivered] == [sentinel]


def test_a_new_pusher_is_not_sent_older_notifications(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    room = shared_room(alice, bob)
    bob.send_text(room, "before the pusher")
    pushkey = add_pusher(alice, gateway)
    after = bob.send_text(room, "after the pusher")
    assert gateway.wait_for(pushkey, 1)[0]["event_id"] == after


def test_a_failing_gateway_gets_every_notification_in_order_after_retries(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    room = shared_room(alice, bob)
    pushkey = add_pusher(alice, gateway)
    gateway.fail(pushkey, 2)
    first = bob.send_text(room, "first")
    second = bob.send_text(room, "second")
    gateway.wait_for(pushkey, 2)
    attempts = [(a["status"], a["body"]["notification"]["event_id"]) for a in gateway.attempts(pushkey)]
    assert attempts == [(500, first), (500, first), (200, first), (200, second)]


def test_a_refused_notification_is_dropped_and_the_next_one_sent(
    alice: RoomClient, bob: RoomClient, gateway: PushGateway
) -> None:
    room = shared_room(alice, bob)
    pushkey = add_pusher(alice, gateway)
    gateway.fail(pushkey, 1, status=400)  # the same request would fail again: no retry
    bob.send_text(room, "refused")
    second = bob.send_text(room, "accepted")
    assert [n["event_id"] for n in gateway.wait_for(pushkey, 1)] == [second]
    assert [a["status"] for a in gateway.attempts(pushkey)] == [400, 200]


def test_a_rejected_pushkey_removes_its_pusher(alice: RoomClient, bob: RoomClient, gateway: PushGateway) -> None:
    room = shared_room(alice, bob)
    rejected, kept = add_pusher(alice, gateway), add_pusher(alice, gateway)
    gateway.reject(rejected)
    bob.send_text(room, "first")
    gateway.wait_for(rejected, 1)  # answered with {"rejected": [rejected]}
    deadline = time.monotonic() + 10
    while len(pushers(alice)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p["pushkey"] for p in pushers(alice)] == [kept]
    later = bob.send_text(room, "second")
    assert gateway.wait_for(kept, 2)[1]["event_id"] == later
    time.sleep(0.3)  # the removed pusher would have been woken by the same event
    assert len(gateway.attempts(rejected)) == 1


def test_pushers_resume_after_a_restart(backend: str, tmp_path: Path, gateway: PushGateway) -> None:
    """A notification the gateway failed before the server stopped is sent once it is back: pushers are
    loaded at start and resume from their stored position."""
    with extra_server(backend, tmp_path) as server:
        alice, bob = new_room_user(server.url), new_room_user(server.url)
        room = shared_room(alice, bob)
        pushkey = add_pusher(alice, gateway)
        gateway.fail(pushkey, 1000)
        event_id = bob.send_text(room, "while the gateway is down")
        deadline = time.monotonic() + 10
        while not gateway.attempts(pushkey) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        gateway.fail(pushkey, 0)
        server.start()
        assert [n["event_id"] for n in gateway.wait_for(pushkey, 1)] == [event_id]


def test_a_gateway_in_a_blocked_range_is_never_contacted(backend: str, tmp_path: Path, gateway: PushGateway) -> None:
    """With the default ip_range_blacklist (no exception for loopback) a pusher aimed at 127.0.0.1 is
    accepted but sends nothing there, and the server says why in its log."""
    with extra_server(backend, tmp_path, {"ip_range_whitelist": []}) as server:
        alice, bob = new_room_user(server.url), new_room_user(server.url)
        room = shared_room(alice, bob)
        pushkey = add_pusher(alice, gateway)
        bob.send_text(room, "for the internal network")
        deadline = time.monotonic() + 10
        while "in a blocked range" not in server.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "its address 127.0.0.1 is in a blocked range" in server.log_path.read_text()
        assert gateway.attempts(pushkey) == []


# -- retries, driven in-process on a memory clock ----------------------------------------------------
# One pusher runs in the test's process with transactions inline and the reactor's clock in the test's
# hands, so a day of backoff takes no time; its requests go to the real test gateway.

ALICE, BOB = Requester("@alice:localhost", "PHONE"), Requester("@bob:localhost", "LAPTOP")
RETRY = RetryPolicy(initial_s=1.0, max_s=4.0, give_up_after_s=10.0)


class BlockingGateway:
    """GatewayClient's `post` over `requests`: without a running reactor the pusher's posts must finish
    inline."""

    async def post(self, url: str, body: dict[str, Any]) -> GatewayAnswer:
        try:
            response = requests.post(url, json=body, timeout=5)
        except requests.RequestException as e:
            raise GatewayUnavailable(str(e)) from None
        return GatewayAnswer(response.status_code, response.json())


@pytest.fixture
def hs(database_section: dict[str, Any], tmp_path: Path) -> Iterator[HomeServer]:
    server = inline_server(database_section, tmp_path)
    for who in (ALICE, BOB):
        resolve(server.accounts.create_user(who.user_id, None))
        resolve(server.login.create_login(who.user_id, who.device_id, None, None))
    yield server
    server.db.close()


def inline_pusher(hs: HomeServer, gateway: PushGateway, clock: MemoryReactorClock, gone: list) -> HttpPusher:
    pushkey = "pk_" + uuid.uuid4().hex
    fields = {k: v for k, v in pusher_body(gateway.url, pushkey).items() if k != "append"}
    resolve(hs.pushers.set(ALICE, **fields, profile_tag=None, append=False))
    store = PusherStore(hs.db)
    (record,) = resolve(store.pushers_of_user(ALICE.user_id))
    notifications = NotificationBuilder(hs.events, hs.rooms, store)
    return HttpPusher(record, store, notifications, BlockingGateway(), clock, RETRY, gone.append)  # type: ignore[arg-type]


def inline_room(hs: HomeServer) -> str:
    room_id, _ = resolve(hs.room_creation.create_room(BOB, CreateRoomRequest(preset="public_chat")))
    resolve(hs.membership.join(ALICE, room_id))
    return room_id


def bob_says(hs: HomeServer, room_id: str, text: str) -> str:
    content = {"msgtype": "m.text", "body": text}
    return resolve(hs.messages.send(BOB, room_id, "m.room.message", content, uuid.uuid4().hex))


def test_a_notification_failing_longer_than_the_give_up_time_is_dropped(hs: HomeServer, gateway: PushGateway) -> None:
    clock, gone = MemoryReactorClock(), []
    pusher = inline_pusher(hs, gateway, clock, gone)
    room = inline_room(hs)
    gateway.fail(pusher.key.pushkey, 5)
    stale, fresh = bob_says(hs, room, "stale"), bob_says(hs, room, "fresh")
    pusher.wake()  # fails at once, then after 1, 2, 4 and 4 more seconds: 11 s, past the 10 s allowed
    clock.pump([0.5] * 30)
    attempts = [(a["status"], a["body"]["notification"]["event_id"]) for a in gateway.attempts(pusher.key.pushkey)]
    assert attempts == [(500, stale)] * 5 + [(200, fresh)]
    (record,) = resolve(PusherStore(hs.db).pushers_of_user(ALICE.user_id))
    assert record.failing_since is None and not gone


def test_a_pusher_whose_device_logs_out_stops_retrying(hs: HomeServer, gateway: PushGateway) -> None:
    clock, gone = MemoryReactorClock(), []
    pusher = inline_pusher(hs, gateway, clock, gone)
    gateway.fail(pusher.key.pushkey, 1000)
    bob_says(hs, inline_room(hs), "hello?")
    pusher.wake()
    clock.advance(RETRY.initial_s)
    assert len(gateway.attempts(pusher.key.pushkey)) == 2
    resolve(hs.login.logout(ALICE))
    clock.advance(RETRY.max_s)
    clock.advance(RETRY.max_s)
    assert len(gateway.attempts(pusher.key.pushkey)) == 2
    assert gone == [pusher] and pusher.stopped
