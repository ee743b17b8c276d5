import copy

import pytest

from homeserver.core.errors import MatrixError
from homeserver.core.event_hashing import compute_event_id
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

V1, V10, V11, V12 = (KNOWN_ROOM_VERSIONS[v] for v in ("1", "10", "11", "12"))


def pdu(version="10", **fields):
    """A well-formed PDU of the room version (hashes and signatures are not checked here)."""
    room_version = KNOWN_ROOM_VERSIONS[version]
    event = {
        "type": "m.room.member",
        "state_key": "@bob:b.example",
        "sender": "@bob:b.example",
        "room_id": "!r:a.example",
        "content": {"membership": "join", "displayname": "Bob", "avatar": {"sizes": [1, 2]}},
        "depth": 4,
        "origin_server_ts": 1234,
        "prev_events": ["$p"],
        "auth_events": ["$a1", "$a2"],
        "hashes": {"sha256": "h"},
        "signatures": {"b.example": {"ed25519:1": "s"}},
        "unsigned": {"age_ts": 1},
    }
    if room_version.event_refs_include_hashes:
        event["prev_events"] = [["$p:a.example", {"sha256": "x"}]]
        event["auth_events"] = [["$a1:a.example", {}], ["$a2:a.example", {}]]
    if room_version.event_id_in_pdu:
        event["event_id"] = "$e:b.example"
    event.update(fields)
    return event


def test_fields_of_a_v10_event():
    event = Event.from_pdu(V10, pdu())
    assert event.event_id == compute_event_id(V10, pdu())
    assert event.room_id == "!r:a.example"
    assert (event.type, event.state_key, event.sender) == (
        "m.room.member",
        "@bob:b.example",
        "@bob:b.example",
    )
    assert event.is_state() and event.membership == "join"
    assert (event.depth, event.origin_server_ts) == (4, 1234)
    assert event.prev_event_ids == ("$p",) and event.auth_event_ids == ("$a1", "$a2")
    assert event.hashes == {"sha256": "h"} and event.signatures == {"b.example": {"ed25519:1": "s"}}
    assert event.unsigned == {"age_ts": 1}
    assert event.redacts is None
    assert event.room_version is V10


def test_v1_event_id_and_reference_pairs():
    event = Event.from_pdu(V1, pdu("1"))
    assert event.event_id == "$e:b.example"
    assert event.prev_event_ids == ("$p:a.example",)
    assert event.auth_event_ids == ("$a1:a.example", "$a2:a.example")


def test_non_state_event_has_no_state_key():
    event = Event.from_pdu(V10, {k: v for k, v in pdu(type="m.room.message").items() if k != "state_key"})
    assert event.state_key is None and not event.is_state() and event.membership is None


def test_empty_state_key_is_still_state():
    event = Event.from_pdu(V10, pdu(type="m.room.name", state_key="", content={"name": "x"}))
    assert event.is_state() and event.state_key == ""


@pytest.mark.parametrize(
    ("version", "fields", "redacts"),
    [
        ("10", {"redacts": "$old"}, "$old"),
        ("10", {"content": {"redacts": "$ignored"}}, None),
        ("11", {"content": {"redacts": "$old"}}, "$old"),
        ("11", {"redacts": "$ignored"}, None),
        ("12", {"content": {"redacts": "$old"}}, "$old"),
    ],
)
def test_redacts_is_read_where_the_version_keeps_it(version, fields, redacts):
    base = {k: v for k, v in pdu(version, type="m.room.redaction", content={}).items() if k != "state_key"}
    event = Event.from_pdu(KNOWN_ROOM_VERSIONS[version], {**base, **fields})
    assert event.redacts == redacts


def test_redacts_only_means_something_on_redactions():
    assert Event.from_pdu(V10, pdu(redacts="$x")).redacts is None


def test_v12_create_event_room_id():
    create_pdu = pdu("12", type="m.room.create", state_key="", content={"room_version": "12"}, prev_events=[])
    del create_pdu["room_id"]
    create = Event.from_pdu(V12, create_pdu)
    assert create.room_id == "!" + create.event_id[1:]
    assert "room_id" not in create.get_pdu_json()
    with pytest.raises(MatrixError):
        Event.from_pdu(V12, {**create_pdu, "room_id": create.room_id})
    # Before v12 a create event without a room id is malformed.
    with pytest.raises(MatrixError):
        Event.from_pdu(V11, create_pdu)


# --- validation ----------------------------------------------------------------------------


def _without(key, version="10"):
    event = pdu(version)
    del event[key]
    return event


@pytest.mark.parametrize(
    ("version", "event"),
    [
        ("10", "not an object"),
        ("10", _without("type")),
        ("10", _without("sender")),
        ("10", _without("content")),
        ("10", _without("depth")),
        ("10", _without("origin_server_ts")),
        ("10", _without("hashes")),
        ("10", _without("signatures")),
        ("10", _without("prev_events")),
        ("10", _without("auth_events")),
        ("10", _without("room_id")),
        ("1", _without("event_id", "1")),
        ("10", pdu(sender="bob")),
        ("10", pdu(room_id="r:a.example")),
        ("10", pdu(content=[])),
        ("10", pdu(origin_server_ts=True)),
        ("10", pdu(origin_server_ts="1234")),
        ("10", pdu(depth=-1)),
        ("10", pdu(depth=2**53)),
        ("10", pdu(hashes={"sha256": 1})),
        ("10", pdu(signatures={"b.example": "s"})),
        ("10", pdu(signatures={"b.example": {"ed25519:1": 5}})),
        ("10", pdu(state_key=None)),
        ("10", pdu(unsigned=[])),
        ("10", pdu(redacts=5)),
        ("10", pdu(prev_events=[f"$p{i}" for i in range(21)])),
        ("10", pdu(auth_events=[f"$a{i}" for i in range(11)])),
        ("10", pdu(prev_events=[["$p", {}]])),
        ("10", pdu(prev_events=["p"])),
        ("1", pdu("1", prev_events=["$p:a.example"])),
        ("1", pdu("1", auth_events=[["$a:a.example"]])),
        ("1", pdu("1", event_id="e:b.example")),
        ("10", pdu(content={"n": 1.5})),
        ("10", pdu(content={"n": 2**53})),
    ],
)
def test_malformed_pdus_are_refused(version, event):
    with pytest.raises(MatrixError) as e:
        Event.from_pdu(KNOWN_ROOM_VERSIONS[version], event)
    assert (e.value.code, e.value.errcode) == (400, "M_BAD_JSON")


@pytest.mark.parametrize("fields", [{"depth": 2**53}, {"content": {"n": 1.5, "big": 2**60}}])
def test_versions_before_6_tolerate_non_canonical_numbers(fields):
    Event.from_pdu(KNOWN_ROOM_VERSIONS["5"], pdu("5", **fields))


def test_limits_are_refused_as_too_large():
    with pytest.raises(MatrixError) as e:
        Event.from_pdu(V10, pdu(type="x" * 256))
    assert (e.value.code, e.value.errcode) == (413, "M_TOO_LARGE")


def test_from_stored_trusts_its_input():
    event = Event.from_stored(V10, pdu(), "$stored")
    assert event.event_id == "$stored"


# --- immutability and serialisation ----------------------------------------------------------


def test_events_cannot_be_changed():
    source = pdu()
    event = Event.from_pdu(V10, source)
    with pytest.raises(AttributeError):
        event.event_id = "$other"
    with pytest.raises(AttributeError):
        del event.event_id
    with pytest.raises(TypeError):
        event.content["membership"] = "leave"
    with pytest.raises(TypeError):
        event.content["avatar"]["sizes"] = []
    assert event.content["avatar"]["sizes"] == (1, 2)
    source["content"]["membership"] = "leave"  # the source dict is not shared either
    assert event.membership == "join"


def test_get_pdu_json_is_the_federation_format_and_a_fresh_copy():
    source = pdu()
    event = Event.from_pdu(V10, source)
    out = event.get_pdu_json()
    assert out == source and "event_id" not in out
    assert isinstance(out["content"]["avatar"]["sizes"], list)
    out["content"]["avatar"]["sizes"].append(3)
    assert event.get_pdu_json() == source


def test_to_client_dict():
    event = Event.from_pdu(V10, pdu())
    assert event.to_client_dict() == {
        "content": {"membership": "join", "displayname": "Bob", "avatar": {"sizes": [1, 2]}},
        "event_id": event.event_id,
        "origin_server_ts": 1234,
        "room_id": "!r:a.example",
        "sender": "@bob:b.example",
        "state_key": "@bob:b.example",
        "type": "m.room.member",
    }  # the PDU's own `unsigned` (age_ts) is not passed on
    without_room = event.to_client_dict(include_room_id=False, unsigned={"age": 5})
    assert "room_id" not in without_room and without_room["unsigned"] == {"age": 5}
    message = Event.from_pdu(V10, {k: v for k, v in pdu(type="m.room.message").items() if k != "state_key"})
    assert "state_key" not in message.to_client_dict()


@pytest.mark.parametrize("version", ["1", "3", "10", "11", "12"])
def test_pruned_event_keeps_its_id(version):
    room_version = KNOWN_ROOM_VERSIONS[version]
    event = Event.from_pdu(room_version, pdu(version))
    pruned = event.pruned()
    assert pruned.event_id == event.event_id
    assert pruned.content == {"membership": "join"}
    assert "unsigned" not in pruned.get_pdu_json()
    if not room_version.event_id_in_pdu:
        assert compute_event_id(room_version, pruned.get_pdu_json()) == event.event_id
    assert event.content["displayname"] == "Bob"


def test_repr_names_the_event():
    event = Event.from_pdu(V10, pdu())
    assert event.event_id in repr(event) and "m.room.member" in repr(event)


def test_input_pdu_is_not_modified():
    source = pdu()
    before = copy.deepcopy(source)
    Event.from_pdu(V10, source).pruned()
    assert source == before
