"""Outgoing federation queues over a real database (both engines), with a recording transport and a fake clock."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import defer
from twisted.internet.task import Clock

from homeserver.core.requester import Requester
from homeserver.handlers.federation.sender import MAX_PDUS, FederationSender, RetryPolicy
from homeserver.handlers.room_creation import CreateRoomRequest
from homeserver.metrics import federation_series
from homeserver.storage.federation_outbox import FederationOutboxStore
from tests.inline import inline_server, resolve

OWNER = Requester("@owner:localhost", "DEV")
REMOTE = "remote.example"
REMOTE_USER = f"@rem:{REMOTE}"
RETRY = RetryPolicy(min_interval_ms=5_000, max_interval_ms=60_000)


@dataclass
class Sent:
    destination: str
    txn_id: str
    pdus: list[dict]
    edus: list[dict]
    transport_ok: bool = True

    @property
    def bodies(self) -> list[str]:
        return [p["content"]["body"] for p in self.pdus if p["type"] == "m.room.message"]


class FakeTransport:
    """Records every transaction; `mode` makes it answer 200 ("ok"), fail ("fail") or wait ("hold")."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.mode = "ok"
        self.held: list[defer.Deferred] = []
        self.answer: dict[str, Any] = {"pdus": {}}

    async def send_transaction(
        self, destination: str, txn_id: str, origin_server_ts: int, pdus: list[dict], edus: list[dict]
    ) -> dict:
        self.sent.append(Sent(destination, txn_id, pdus, edus, self.mode != "fail"))
        if self.mode == "fail":
            raise ConnectionRefusedError("down")
        if self.mode == "hold":
            held: defer.Deferred = defer.Deferred()
            self.held.append(held)
            return await held
        return self.answer

    def bodies(self) -> list[str]:
        return [body for sent in self.sent for body in sent.bodies]


class World:
    """A server (inline transactions) with a public room that a remote user has joined."""

    def __init__(self, database_section: dict[str, Any], tmp_path: Path) -> None:
        self.hs = inline_server(database_section, tmp_path)
        self.room_id, _ = resolve(self.hs.room_creation.create_room(OWNER, CreateRoomRequest(preset="public_chat")))
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.transport = FakeTransport()
        self.sender = self.new_sender(self.transport, self.clock)
        self.join(REMOTE_USER)

    def new_sender(self, transport: FakeTransport, clock: Clock) -> FederationSender:
        sender = FederationSender(
            clock,
            "localhost",
            FederationOutboxStore(self.hs.db),
            self.hs.events,
            self.hs.state,
            self.hs.rooms,
            transport,
            RETRY,
        )
        self.hs.room_sender.federation = sender.events_persisted
        return sender

    def restart(self) -> tuple[FederationSender, FakeTransport, Clock]:
        """A new sender over the same database, as after a restart, with its clock at the old one's time."""
        self.sender._stopping = True  # the old process is gone
        transport, clock = FakeTransport(), Clock()
        clock.advance(self.clock.seconds())
        sender = self.new_sender(transport, clock)
        resolve(sender.start())
        return sender, transport, clock

    def join(self, user_id: str) -> None:
        resolve(self.hs.room_sender.send(self.room_id, user_id, "m.room.member", {"membership": "join"}, user_id))

    def say(self, *bodies: str) -> None:
        for body in bodies:
            content = {"msgtype": "m.text", "body": body}
            resolve(self.hs.messages.send(OWNER, self.room_id, "m.room.message", content, f"t-{body}"))

    def destination(self, sender: FederationSender | None = None) -> dict[str, Any]:
        return (sender or self.sender).status()["destinations"][REMOTE]

    def stored_edus(self) -> int:
        return resolve(
            self.hs.db.run("t", lambda txn: txn.execute("SELECT count(*) FROM federation_outbox_edus").fetchone())
        )[0]


@pytest.fixture
def world(database_section: dict[str, Any], tmp_path: Path) -> Any:
    w = World(database_section, tmp_path)
    yield w
    w.hs.db.close()


def test_events_reach_a_remote_members_server_in_order(world: World) -> None:
    world.say("a", "b")
    assert world.transport.bodies() == ["a", "b"]
    assert {s.destination for s in world.transport.sent} == {REMOTE}
    assert len({s.txn_id for s in world.transport.sent}) == len(world.transport.sent)


def test_catch_up_sends_everything_missed_in_order_in_capped_transactions(world: World) -> None:
    world.transport.mode = "fail"
    world.say("m0")
    assert len(world.transport.sent) == 1
    world.say(*(f"m{i}" for i in range(1, 120)))
    assert len(world.transport.sent) == 1  # backing off: nothing tried meanwhile
    world.transport.mode = "ok"
    world.clock.advance(RETRY.min_interval_ms / 1000)
    caught_up = world.transport.sent[1:]
    assert [len(s.pdus) for s in caught_up] == [MAX_PDUS, MAX_PDUS, 20]
    assert [b for s in caught_up for b in s.bodies] == [f"m{i}" for i in range(120)]
    assert world.destination()["failure_count"] == 0 and world.destination()["backoff_ms"] == 0


def test_one_transaction_in_flight_per_destination(world: World) -> None:
    world.transport.mode = "hold"
    world.say("first")
    world.say("second", "third")
    assert len(world.transport.sent) == 1 and world.destination()["in_flight"]
    world.transport.held.pop().callback({"pdus": {}})  # the next one goes out at once, with both new events
    assert [s.bodies for s in world.transport.sent] == [["first"], ["second", "third"]]
    world.transport.held.pop().callback({})
    assert not world.destination()["in_flight"]


def test_backoff_doubles_up_to_the_cap_and_nothing_is_lost(world: World) -> None:
    world.transport.mode = "fail"
    world.say("lost?")
    intervals = [world.destination()["retry_interval_ms"]]
    for _ in range(5):
        world.clock.advance(intervals[-1] / 1000)
        intervals.append(world.destination()["retry_interval_ms"])
    assert intervals == [5_000, 10_000, 20_000, 40_000, 60_000, 60_000]
    assert len(world.transport.sent) == 6
    world.clock.advance(30)  # still backing off: no attempt before the interval is over
    assert len(world.transport.sent) == 6
    world.transport.mode = "ok"
    world.clock.advance(30)
    assert world.transport.sent[-1].bodies == ["lost?"]
    assert world.destination()["retry_interval_ms"] == 0


def test_a_per_pdu_error_does_not_block_the_queue(world: World) -> None:
    world.transport.answer = {"pdus": {"$whatever": {"error": "You are not allowed to send that"}}}
    world.say("refused")
    world.say("next")
    assert world.transport.bodies() == ["refused", "next"]
    assert [s.bodies for s in world.transport.sent] == [["refused"], ["next"]]


def test_a_restart_keeps_the_position_and_the_backoff(world: World) -> None:
    world.say("sent before")
    world.transport.mode = "fail"
    world.say("missed 1")
    world.clock.advance(5)
    assert world.destination()["retry_interval_ms"] == 10_000
    world.say("missed 2")

    sender, transport, clock = world.restart()
    assert transport.sent == []  # the stored backoff holds: a dead server is not hammered on start
    assert world.destination(sender)["failure_count"] == 2
    clock.advance(10)
    assert transport.bodies() == ["missed 1", "missed 2"]  # what was acknowledged is not sent again


def test_to_device_edus_survive_a_restart_until_acknowledged(world: World) -> None:
    world.transport.mode = "fail"
    content = {"sender": OWNER.user_id, "type": "m.room_key", "message_id": "m1", "messages": {REMOTE_USER: {}}}
    resolve(world.sender.send_durable_edus([(REMOTE, "m.direct_to_device", content)]))
    assert world.transport.sent[-1].edus == [{"edu_type": "m.direct_to_device", "content": content}]
    assert world.stored_edus() == 1

    sender, transport, clock = world.restart()
    assert world.destination(sender)["pending_edus"] == 1
    clock.advance(10)
    assert transport.sent[-1].edus == [{"edu_type": "m.direct_to_device", "content": content}]
    assert world.stored_edus() == 0

    _, transport, _ = world.restart()
    assert transport.sent == []


def test_typing_edus_are_not_stored(world: World) -> None:
    world.transport.mode = "fail"
    world.sender.typing_changed(world.room_id, OWNER.user_id, True)
    typing = {"edu_type": "m.typing", "content": {"room_id": world.room_id, "user_id": OWNER.user_id, "typing": True}}
    assert world.transport.sent[-1].edus == [typing]
    assert world.stored_edus() == 0
    world.sender.typing_changed(world.room_id, OWNER.user_id, False)  # replaces the unsent one
    world.transport.mode = "ok"
    world.clock.advance(5)
    assert world.transport.sent[-1].edus == [{**typing, "content": {**typing["content"], "typing": False}}]

    world.transport.mode = "fail"
    world.sender.typing_changed(world.room_id, OWNER.user_id, True)
    _, transport, clock = world.restart()
    clock.advance(5)
    assert transport.sent == []  # gone with the process


def test_an_invite_goes_to_the_invitees_server_and_leavers_stop_receiving(world: World) -> None:
    invitee = "@guest:other.example"
    resolve(world.hs.room_sender.send(world.room_id, OWNER.user_id, "m.room.member", {"membership": "invite"}, invitee))
    to_other = [s for s in world.transport.sent if s.destination == "other.example"]
    assert [p["state_key"] for s in to_other for p in s.pdus] == [invitee]
    world.say("after the invite")  # other.example has no one joined: only remote.example gets it
    assert [s.destination for s in world.transport.sent if s.bodies] == [REMOTE]

    leave = {"membership": "leave"}
    resolve(world.hs.room_sender.send(world.room_id, REMOTE_USER, "m.room.member", leave, REMOTE_USER))
    world.say("after the leave")
    assert world.transport.bodies() == ["after the invite"]


def test_our_own_server_is_never_a_destination(world: World) -> None:
    world.join("@friend:localhost")
    world.say("hello")
    world.sender.send_edu("localhost", "m.typing", {})
    resolve(world.sender.send_durable_edus([("localhost", "m.direct_to_device", {})]))
    resolve(world.sender.start())
    assert {s.destination for s in world.transport.sent} == {REMOTE}
    assert "localhost" not in world.sender.status()["destinations"]
    assert world.stored_edus() == 0


def test_stopping_lets_the_transaction_in_flight_finish_and_starts_no_other(world: World) -> None:
    world.transport.mode = "hold"
    world.say("in flight")
    world.say("queued")
    stopped = defer.ensureDeferred(world.sender.stop(timeout_s=5))
    assert not stopped.called
    world.transport.held.pop().callback({})
    assert stopped.called and len(world.transport.sent) == 1

    _, transport, _ = world.restart()  # what was not sent is sent by the next process
    assert transport.bodies() == ["queued"]


def test_a_room_the_remote_server_joins_later_is_sent_too(world: World) -> None:
    world.say("room one")
    second, _ = resolve(world.hs.room_creation.create_room(OWNER, CreateRoomRequest(preset="public_chat")))
    content = {"msgtype": "m.text", "body": "before"}
    resolve(world.hs.messages.send(OWNER, second, "m.room.message", content, "t-before"))
    join = {"membership": "join"}
    resolve(world.hs.room_sender.send(second, REMOTE_USER, "m.room.member", join, REMOTE_USER))
    content = {"msgtype": "m.text", "body": "room two"}
    resolve(world.hs.messages.send(OWNER, second, "m.room.message", content, "t-two"))
    assert world.transport.bodies() == ["room one", "room two"]


def test_to_device_messages_to_remote_users_go_out_once_per_transaction_id(world: World) -> None:
    world.hs.to_device.federation = world.sender.durable_edus_stored
    messages = {REMOTE_USER: {"DEVICE": {"ciphertext": "x"}}, "@other:third.example": {"*": {"ciphertext": "y"}}}
    world.transport.mode = "fail"
    resolve(world.hs.to_device.send(OWNER, "m.room.encrypted", messages, "txn1"))
    resolve(world.hs.to_device.send(OWNER, "m.room.encrypted", messages, "txn1"))  # a client's retry
    assert world.stored_edus() == 2  # one per server, not one per attempt
    world.transport.mode = "ok"
    world.clock.advance(5)
    by_server = {s.destination: s.edus for s in world.transport.sent if s.edus and s.transport_ok}
    (edu,) = by_server[REMOTE]
    assert edu["edu_type"] == "m.direct_to_device"
    assert edu["content"]["messages"] == {REMOTE_USER: {"DEVICE": {"ciphertext": "x"}}}
    assert edu["content"]["sender"] == OWNER.user_id and edu["content"]["type"] == "m.room.encrypted"
    assert by_server["third.example"][0]["content"]["messages"] == {"@other:third.example": {"*": {"ciphertext": "y"}}}
    assert world.stored_edus() == 0


def test_the_queue_figures_show_a_destination_backing_off(world: World) -> None:
    world.transport.mode = "fail"
    world.say("x")
    registry = CollectorRegistry()

    class Figures:
        def collect(self) -> Any:
            return federation_series(world.sender.status())

    registry.register(Figures())
    text = generate_latest(registry).decode()
    assert 'homeserver_federation_failures{destination="remote.example"} 1.0' in text
    assert 'homeserver_federation_backoff_seconds{destination="remote.example"} 5.0' in text
    assert "homeserver_federation_transactions_failed_total 1.0" in text
    assert "homeserver_federation_destinations_backing_off 1.0" in text
