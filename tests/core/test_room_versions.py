import pytest

from homeserver.core.errors import MatrixError
from homeserver.core.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    MAX_ROOM_VERSION_LENGTH,
    EventIdFormat,
    StateResAlgorithm,
    get_room_version,
    is_reserved_room_version_identifier,
    is_valid_room_version_identifier,
)

from .vectors import load_vectors

SPEC = load_vectors("room-versions.json")
VERSIONS = {v["version"]: v for v in SPEC["versions"]}

# The spec's feature matrix, column by column, against the flag that implements each row.
FEATURE_FLAGS = {
    "Knocking": "knock_join_rule",
    "Restricted join rules": "restricted_join_rule",
    "knock_restricted join rule": "knock_restricted_join_rule",
    "Additional room creators": "privileged_room_creators",
}


def test_known_versions_are_exactly_the_specs():
    assert list(KNOWN_ROOM_VERSIONS) == [v["version"] for v in SPEC["versions"]]
    for identifier, version in KNOWN_ROOM_VERSIONS.items():
        assert version.identifier == identifier
        assert version.stable == (VERSIONS[identifier]["stability"] == "stable")


def test_default_is_the_specs():
    assert DEFAULT_ROOM_VERSION == SPEC["default_room_version"] == "12"
    assert DEFAULT_ROOM_VERSION in KNOWN_ROOM_VERSIONS


@pytest.mark.parametrize("feature", list(SPEC["feature_matrix"]))
def test_feature_matrix(feature):
    flag = FEATURE_FLAGS[feature]
    for identifier, supported in SPEC["feature_matrix"][feature].items():
        assert getattr(KNOWN_ROOM_VERSIONS[identifier], flag) is supported, (feature, identifier)


@pytest.mark.parametrize("identifier", list(VERSIONS))
def test_per_version_algorithms(identifier):
    spec, version = VERSIONS[identifier], KNOWN_ROOM_VERSIONS[identifier]
    assert version.enforce_key_validity is spec["signing_key_validity_enforced"]
    assert version.strict_canonical_json is (spec["canonical_json"] == "v6-canonical-json")
    expected_ids = {
        "v1-event-ids": EventIdFormat.V1,
        "inline": EventIdFormat.V3,
        "v4-event-ids": EventIdFormat.V4,
    }
    assert version.event_id_format is expected_ids[spec["event_id_format"]]
    if spec["state_resolution"] == "v2-state-res":
        assert version.state_res is StateResAlgorithm.V2
    elif identifier == "1":
        assert version.state_res is StateResAlgorithm.V1
    else:
        assert spec["state_resolution"] == "inline in content/rooms/v12.md"
        assert version.state_res is StateResAlgorithm.V2_1
    # v3-handling-redactions is where redactions leave the auth rules.
    assert version.redaction_checked_in_auth_rules is (spec["handling_redactions"] == "v1 (inline)")
    assert version.updated_redaction_rules is (spec["redaction_algorithm"] == "v11-redactions")


@pytest.mark.parametrize(
    ("flag", "first_version"),
    [
        ("special_case_aliases_auth", None),  # v1-v5 only, checked below
        ("limit_notifications_power_levels", 6),
        ("restricted_join_rule_fix", 9),
        ("enforce_int_power_levels", 10),
        ("implicit_room_creator", 11),
        ("redacts_in_content", 11),
        ("room_id_is_create_event_id", 12),
    ],
)
def test_flags_switch_on_at_their_version(flag, first_version):
    for n in range(1, 13):
        value = getattr(KNOWN_ROOM_VERSIONS[str(n)], flag)
        expected = n <= 5 if first_version is None else n >= first_version
        assert value is expected, (flag, n)


def test_v12_stops_putting_the_create_event_in_auth_events():
    assert [n for n in range(1, 13) if not KNOWN_ROOM_VERSIONS[str(n)].create_event_in_auth_events] == [12]


def test_event_format_consequences():
    for n in range(1, 13):
        version = KNOWN_ROOM_VERSIONS[str(n)]
        assert version.event_id_in_pdu is (n <= 2)
        assert version.event_refs_include_hashes is (n <= 2)
        assert version.max_depth == (2**53 - 1 if n >= 6 else 2**63 - 1)


def test_versions_are_immutable():
    with pytest.raises(AttributeError):
        KNOWN_ROOM_VERSIONS["12"].knock_join_rule = False


@pytest.mark.parametrize("identifier", ["1", "1.2", "1.2-beta", "com.example.version", "a" * 32, "12"])
def test_valid_room_version_identifiers(identifier):
    assert is_valid_room_version_identifier(identifier)


@pytest.mark.parametrize("identifier", ["", "a" * 33, "V12", "1 2", "org.example_v1", "é", "1\n", None, 12])
def test_invalid_room_version_identifiers(identifier):
    assert not is_valid_room_version_identifier(identifier)


def test_room_version_length_limit_is_the_specs():
    assert load_vectors("identifier-limits.json")["room_version_max_codepoints"] == MAX_ROOM_VERSION_LENGTH


@pytest.mark.parametrize(("identifier", "reserved"), [("1", True), ("1.2", True), ("1.2-beta", False), ("x", False)])
def test_reserved_identifiers(identifier, reserved):
    assert is_reserved_room_version_identifier(identifier) is reserved


def test_get_room_version():
    assert get_room_version("11") is KNOWN_ROOM_VERSIONS["11"]
    for unknown in ["13", "1.2", "org.example.v1", 12]:
        with pytest.raises(MatrixError) as e:
            get_room_version(unknown)
        assert (e.value.code, e.value.errcode) == (400, "M_UNSUPPORTED_ROOM_VERSION")
