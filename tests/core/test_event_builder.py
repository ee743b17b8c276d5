import re

import pytest

from homeserver.core.errors import MatrixError
from homeserver.core.event_builder import build_event, random_room_id
from homeserver.core.event_hashing import compute_event_id, has_valid_content_hash
from homeserver.core.event_signing import verify_event_signatures
from homeserver.core.json_signing import ServerVerifyKey, key_id_of, verify_key_base64, verify_key_from_base64
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS

from .vectors import spec_signing_key

SERVER = "example.org"
KEY = spec_signing_key()
_VERIFY = ServerVerifyKey(verify_key_from_base64(key_id_of(KEY), verify_key_base64(KEY)), 2**62)
ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS)
ID_FORMATS = {
    "v1": re.compile(r"\$[A-Za-z0-9]{18}:example\.org"),
    "v3": re.compile(r"\$[A-Za-z0-9+/]{43}"),
    "v4": re.compile(r"\$[A-Za-z0-9_-]{43}"),
}


def keyring(server, key_id):
    return _VERIFY if (server, key_id) == (SERVER, key_id_of(KEY)) else None


def build(version, **fields):
    args = {
        "event_type": "m.room.message",
        "sender": "@alice:example.org",
        "content": {"msgtype": "m.text", "body": "hello"},
        "room_id": "!room:example.org",
        "prev_event_ids": ["$prev1", "$prev2"],
        "auth_event_ids": ["$auth1"],
        "depth": 7,
        "origin_server_ts": 1_700_000_000_000,
    }
    args.update(fields)
    return build_event(KNOWN_ROOM_VERSIONS[version], SERVER, KEY, **args)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_built_event_is_hashed_signed_and_verifiable(version):
    event = build(version)
    room_version = KNOWN_ROOM_VERSIONS[version]
    pdu = event.get_pdu_json()
    assert has_valid_content_hash(pdu)
    assert set(pdu["signatures"]) == {SERVER}
    verify_event_signatures(room_version, pdu, keyring)
    assert (event.type, event.sender, event.room_id, event.depth) == (
        "m.room.message",
        "@alice:example.org",
        "!room:example.org",
        7,
    )
    assert event.content == {"msgtype": "m.text", "body": "hello"}
    assert event.prev_event_ids == ("$prev1", "$prev2")
    assert event.auth_event_ids == ("$auth1",)
    assert event.origin_server_ts == 1_700_000_000_000
    assert event.state_key is None and not event.is_state()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_event_id_format_per_version(version):
    room_version = KNOWN_ROOM_VERSIONS[version]
    event = build(version)
    assert ID_FORMATS[room_version.event_id_format.value].fullmatch(event.event_id)
    pdu = event.get_pdu_json()
    if room_version.event_id_in_pdu:
        assert pdu["event_id"] == event.event_id
        assert pdu["prev_events"] == [["$prev1", {}], ["$prev2", {}]]
        assert build(version).event_id != event.event_id  # ids are random, not derived
    else:
        assert "event_id" not in pdu  # the federation format carries no id from v3
        assert event.event_id == compute_event_id(room_version, pdu)
        assert pdu["prev_events"] == ["$prev1", "$prev2"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_state_events(version):
    event = build(version, event_type="m.room.topic", state_key="", content={"topic": "t"})
    assert event.is_state() and event.state_key == ""
    assert event.get_pdu_json()["state_key"] == ""


def test_v12_create_event_defines_the_room_id():
    create = build(
        "12",
        event_type="m.room.create",
        state_key="",
        room_id=None,
        content={"room_version": "12", "additional_creators": ["@bob:example.org"]},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
    )
    assert create.room_id == "!" + create.event_id[1:]
    assert re.fullmatch(r"![A-Za-z0-9_-]{43}", create.room_id)
    assert "room_id" not in create.get_pdu_json()
    assert create.to_client_dict()["room_id"] == create.room_id
    verify_event_signatures(KNOWN_ROOM_VERSIONS["12"], create.get_pdu_json(), keyring)

    member = build(
        "12",
        event_type="m.room.member",
        state_key="@alice:example.org",
        content={"membership": "join"},
        room_id=create.room_id,
        prev_event_ids=[create.event_id],
        auth_event_ids=[],  # v12: the create event is implied by the room id
        depth=2,
    )
    assert member.room_id == create.room_id and member.get_pdu_json()["room_id"] == create.room_id


def test_v12_create_event_must_not_be_given_a_room_id():
    with pytest.raises(MatrixError):
        build("12", event_type="m.room.create", state_key="", content={}, prev_event_ids=[], auth_event_ids=[])


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_room_id_is_required_otherwise(version):
    with pytest.raises(MatrixError):
        build(version, room_id=None)


@pytest.mark.parametrize("version", ["1", "11"])
def test_pre_v12_create_event_keeps_its_room_id(version):
    room_id = random_room_id(SERVER)
    assert re.fullmatch(r"![A-Za-z0-9]{18}:example\.org", room_id)
    create = build(version, event_type="m.room.create", state_key="", room_id=room_id, content={}, prev_event_ids=[])
    assert create.room_id == room_id == create.get_pdu_json()["room_id"]


@pytest.mark.parametrize(("version", "in_content"), [("1", False), ("10", False), ("11", True), ("12", True)])
def test_redacts_goes_where_the_version_keeps_it(version, in_content):
    content = {"reason": "spam"}
    event = build(version, event_type="m.room.redaction", content=content, redacts="$bad")
    pdu = event.get_pdu_json()
    assert event.redacts == "$bad"
    assert ("redacts" in pdu["content"], "redacts" in pdu) == (in_content, not in_content)
    assert content == {"reason": "spam"}  # the caller's content is not changed
    client = event.to_client_dict()
    assert client["redacts"] == client["content"]["redacts"] == "$bad"  # both places, for old and new clients


def test_v11_redacts_in_content_must_agree():
    with pytest.raises(MatrixError):
        build("11", event_type="m.room.redaction", content={"redacts": "$a"}, redacts="$b")


@pytest.mark.parametrize(("version", "limit"), [("5", 2**63 - 1), ("6", 2**53 - 1), ("12", 2**53 - 1)])
def test_depth_is_clamped_to_the_versions_limit(version, limit):
    assert build(version, depth=2**70).depth == limit
    assert build(version, depth=limit - 1).depth == limit - 1


@pytest.mark.parametrize("version", ["1", "12"])
def test_oversized_event_is_refused(version):
    with pytest.raises(MatrixError) as e:
        build(version, content={"body": "x" * 65536})
    assert (e.value.code, e.value.errcode) == (413, "M_TOO_LARGE")


@pytest.mark.parametrize(("version", "allowed"), [("5", True), ("6", False), ("10", False)])
def test_floats_in_content_depend_on_the_version(version, allowed):
    if allowed:
        assert build(version, content={"n": 1.5}).content["n"] == 1.5
    else:
        with pytest.raises(MatrixError) as e:
            build(version, content={"n": 1.5})
        assert e.value.errcode == "M_BAD_JSON"


def test_too_many_prev_events_are_refused():
    build("12", prev_event_ids=[f"$p{i}" for i in range(20)])
    with pytest.raises(MatrixError):
        build("12", prev_event_ids=[f"$p{i}" for i in range(21)])
