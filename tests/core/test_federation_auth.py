"""X-Matrix request signatures and /key/v2 key documents, with the spec's published test key."""

import copy

import pytest
from signedjson.key import generate_signing_key, get_verify_key

from homeserver.core.federation_auth import (
    KeyDocumentError,
    XMatrixAuth,
    check_notary_signature,
    is_request_signature_valid,
    parse_server_keys,
    parse_x_matrix,
    server_keys_document,
    sign_request,
    split_server_name,
)
from homeserver.core.json_signing import key_id_of, sign_json, verify_key_base64

from .vectors import spec_server_name, spec_signing_key

ORIGIN = spec_server_name()  # "domain"
DEST = "dest.example.org"


def test_header_from_the_spec_parses() -> None:
    header = (
        'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",'
        'key="ed25519:key1",sig="ABCDEF..."'
    )
    assert parse_x_matrix(header) == XMatrixAuth(
        "origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", "ABCDEF..."
    )


@pytest.mark.parametrize(
    "header",
    [
        "X-Matrix origin=origin.example,key=ed25519:k,sig=c2ln",  # unquoted, colons unquoted (older servers)
        'x-matrix   ORIGIN="origin.example" , Key="ed25519:k",\tsig="c2ln"',  # case, spaces and tabs
        'X-Matrix sig="c2ln",key="ed25519:k",origin="origin.example",future="x y"',  # order; unknown ignored
        'X-Matrix origin="orig\\in.example",key="ed25519:k",sig="c2ln"',  # backslash escapes are undone
    ],
)
def test_header_variants_allowed_by_rfc9110_parse(header: str) -> None:
    auth = parse_x_matrix(header)
    assert (auth.origin, auth.destination, auth.key_id, auth.signature) == ("origin.example", None, "ed25519:k", "c2ln")


@pytest.mark.parametrize(
    "header",
    [
        'Bearer origin="a",key="ed25519:k",sig="s"',
        'X-Matrix key="ed25519:k",sig="s"',
        'X-Matrix origin="a.example",sig="s"',
        'X-Matrix origin="a.example",key="ed25519:k"',
        'X-Matrix origin="not a server",key="ed25519:k",sig="s"',
        'X-Matrix origin="a.example" key="ed25519:k",sig="s"',
        "X-Matrix",
    ],
)
def test_unusable_headers_are_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_x_matrix(header)


def test_signed_request_verifies_and_binds_every_field() -> None:
    key = spec_signing_key()
    content = {"room_id": "!a:domain", "n": 1}
    auth = parse_x_matrix(sign_request(key, ORIGIN, DEST, "PUT", "/_matrix/federation/v1/send/1?x=y", content))
    assert (auth.origin, auth.destination, auth.key_id) == (ORIGIN, DEST, "ed25519:1")
    verify_key = get_verify_key(key)
    assert is_request_signature_valid(auth, "PUT", "/_matrix/federation/v1/send/1?x=y", DEST, content, verify_key)
    for method, uri, dest, body in [
        ("POST", "/_matrix/federation/v1/send/1?x=y", DEST, content),
        ("PUT", "/_matrix/federation/v1/send/2?x=y", DEST, content),
        ("PUT", "/_matrix/federation/v1/send/1", DEST, content),
        ("PUT", "/_matrix/federation/v1/send/1?x=y", "other.example.org", content),
        ("PUT", "/_matrix/federation/v1/send/1?x=y", DEST, {**content, "n": 2}),
        ("PUT", "/_matrix/federation/v1/send/1?x=y", DEST, None),
    ]:
        assert not is_request_signature_valid(auth, method, uri, dest, body, verify_key)
    stranger = get_verify_key(generate_signing_key("1"))
    assert not is_request_signature_valid(auth, "PUT", "/_matrix/federation/v1/send/1?x=y", DEST, content, stranger)


def test_a_get_without_content_is_signed_without_a_content_field() -> None:
    key = spec_signing_key()
    auth = parse_x_matrix(sign_request(key, ORIGIN, DEST, "GET", "/_matrix/federation/v1/version"))
    assert is_request_signature_valid(auth, "GET", "/_matrix/federation/v1/version", DEST, None, get_verify_key(key))
    assert not is_request_signature_valid(auth, "GET", "/_matrix/federation/v1/version", DEST, {}, get_verify_key(key))


def _document(valid_until: int = 2_000_000_000_000):
    old_key = generate_signing_key("old")
    old = {key_id_of(old_key): (verify_key_base64(old_key), 1_500_000_000_000)}
    return server_keys_document(ORIGIN, spec_signing_key(), valid_until, old), old_key


def test_key_document_is_self_signed_and_lists_old_keys() -> None:
    document, old_key = _document()
    assert document["verify_keys"] == {"ed25519:1": {"key": verify_key_base64(spec_signing_key())}}
    assert document["old_verify_keys"]["ed25519:old"]["expired_ts"] == 1_500_000_000_000
    keys = parse_server_keys(document, ORIGIN)
    assert keys.valid_until_ts == 2_000_000_000_000
    assert keys.keys["ed25519:1"].valid_until_ts == 2_000_000_000_000
    assert keys.keys["ed25519:old"].valid_until_ts == 1_500_000_000_000  # an old key counts until it expired
    assert verify_key_base64(old_key) == document["old_verify_keys"]["ed25519:old"]["key"]


def test_key_document_for_another_server_is_refused() -> None:
    document, _ = _document()
    with pytest.raises(KeyDocumentError, match="not 'other.example'"):
        parse_server_keys(document, "other.example")


def test_key_document_changed_after_signing_is_refused() -> None:
    document, _ = _document()
    document["valid_until_ts"] += 1
    with pytest.raises(KeyDocumentError, match="self-signed"):
        parse_server_keys(document, ORIGIN)


def test_key_document_signed_only_by_a_key_it_does_not_publish_is_refused() -> None:
    """Someone who swaps in their own key must also sign with a published one, which they cannot."""
    document, _ = _document()
    intruder = generate_signing_key("1")
    forged = {k: v for k, v in document.items() if k != "signatures"}
    forged["verify_keys"] = {"ed25519:2": {"key": verify_key_base64(intruder)}}
    forged = sign_json(forged, ORIGIN, intruder)  # signs as ed25519:1, publishes ed25519:2
    with pytest.raises(KeyDocumentError):
        parse_server_keys(forged, ORIGIN)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("valid_until_ts"),
        lambda d: d.update(valid_until_ts="soon"),
        lambda d: d.update(verify_keys=[]),
        lambda d: d["verify_keys"]["ed25519:1"].pop("key"),
        lambda d: d["verify_keys"]["ed25519:1"].update(key="not base64!"),
        lambda d: d["old_verify_keys"]["ed25519:old"].pop("expired_ts"),
    ],
)
def test_malformed_key_documents_are_refused(change) -> None:
    document, _ = _document()
    change(document)
    with pytest.raises(KeyDocumentError):
        parse_server_keys(document, ORIGIN)


def test_notary_signature_is_checked_against_the_configured_key() -> None:
    document, _ = _document()
    notary_key = generate_signing_key("n")
    countersigned = sign_json(document, "notary.example", notary_key)
    trusted = {key_id_of(notary_key): get_verify_key(notary_key)}
    check_notary_signature(countersigned, "notary.example", trusted)
    with pytest.raises(KeyDocumentError):
        check_notary_signature(document, "notary.example", trusted)  # not countersigned at all
    impostor = generate_signing_key("n")
    with pytest.raises(KeyDocumentError):
        check_notary_signature(sign_json(document, "notary.example", impostor), "notary.example", trusted)
    tampered = copy.deepcopy(countersigned)
    tampered["verify_keys"]["ed25519:1"]["key"] = verify_key_base64(impostor)
    with pytest.raises(KeyDocumentError):
        check_notary_signature(tampered, "notary.example", trusted)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.org", ("example.org", None)),
        ("example.org:8448", ("example.org", 8448)),
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("[::1]", ("::1", None)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_server_names_split_into_host_and_port(name: str, expected: tuple) -> None:
    assert split_server_name(name) == expected


def test_invalid_server_name_does_not_split() -> None:
    with pytest.raises(ValueError):
        split_server_name("bad name")
