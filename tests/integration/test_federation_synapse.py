"""Interop with a real Synapse on loopback: server keys and notaries, signed requests both ways, remote
profile and alias queries. Our server runs on both backends; one Synapse serves the module."""

import time
import uuid
from pathlib import Path
from typing import Any

import requests
from signedjson.key import decode_verify_key_bytes, generate_signing_key
from signedjson.sign import sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

from tests.client import Client, assert_error, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server
from tests.synapse import SynapseProcess

PROFILE = "/_matrix/client/v3/profile"
DIRECTORY = "/_matrix/client/v3/directory/room"


def key_document(server_url: str, cert: str) -> dict[str, Any]:
    response = requests.get(server_url + "/_matrix/key/v2/server", verify=cert, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def assert_signed_by(document: dict[str, Any], server_name: str, keys: dict[str, Any]) -> None:
    """`document` carries a valid signature of `server_name` by one of its `keys` (a verify_keys map)."""
    signatures = document.get("signatures", {}).get(server_name, {})
    assert set(signatures) & set(keys), f"no signature of {server_name} with {set(keys)}: {document}"
    for key_id in set(signatures) & set(keys):
        verify_key = decode_verify_key_bytes(key_id, decode_base64(keys[key_id]["key"]))
        verify_signed_json(document, server_name, verify_key)


def entry_for(server_keys: list[dict[str, Any]], server_name: str) -> dict[str, Any]:
    entries = [entry for entry in server_keys if entry["server_name"] == server_name]
    assert entries, f"no keys for {server_name} in {server_keys}"
    return entries[0]


def set_displayname(user: Client, name: str) -> None:
    ok(user.put(f"{PROFILE}/{quote(user.user_id)}/displayname", {"displayname": name}))


def localpart() -> str:
    return "fed_" + uuid.uuid4().hex[:10]


# -- server keys and notaries ---------------------------------------------------------------------------


def test_our_keys_are_self_signed_over_tls(fed_server: FederatingServer) -> None:
    ours = key_document(fed_server.federation_url, str(fed_server.cert_path))
    assert ours["server_name"] == fed_server.server_name
    assert_signed_by(ours, fed_server.server_name, ours["verify_keys"])


def test_synapse_notary_fetches_and_countersigns_our_keys(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    ours = key_document(fed_server.federation_url, str(fed_server.cert_path))
    synapses = key_document(synapse.federation_url, str(synapse.cert_path))
    # Synapse's notary answers a query without key ids from its cache only; naming the key makes it fetch.
    wanted = {key_id: {"minimum_valid_until_ts": int(time.time() * 1000)} for key_id in ours["verify_keys"]}
    body = {"server_keys": {fed_server.server_name: wanted}}
    response = requests.post(
        synapse.federation_url + "/_matrix/key/v2/query", json=body, verify=str(synapse.cert_path), timeout=60
    )
    assert response.status_code == 200, response.text
    entry = entry_for(response.json()["server_keys"], fed_server.server_name)
    assert entry["verify_keys"] == ours["verify_keys"]
    assert_signed_by(entry, fed_server.server_name, ours["verify_keys"])
    assert_signed_by(entry, synapse.server_name, synapses["verify_keys"])


def test_our_notary_fetches_and_countersigns_synapse_keys(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    ours = key_document(fed_server.federation_url, str(fed_server.cert_path))
    synapses = key_document(synapse.federation_url, str(synapse.cert_path))
    path = f"/_matrix/key/v2/query/{quote(synapse.server_name)}"
    response = requests.get(fed_server.federation_url + path, verify=str(fed_server.cert_path), timeout=60)
    assert response.status_code == 200, response.text
    entry = entry_for(response.json()["server_keys"], synapse.server_name)
    assert entry["verify_keys"] == synapses["verify_keys"]
    assert_signed_by(entry, synapse.server_name, synapses["verify_keys"])
    assert_signed_by(entry, fed_server.server_name, ours["verify_keys"])


def test_our_notary_answers_the_batch_query_for_synapse(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    synapses = key_document(synapse.federation_url, str(synapse.cert_path))
    # The shape Synapse itself sends to a notary: named keys, each with the validity it needs.
    wanted = {key_id: {"minimum_valid_until_ts": int(time.time() * 1000)} for key_id in synapses["verify_keys"]}
    body = {"server_keys": {synapse.server_name: wanted}}
    response = requests.post(
        fed_server.federation_url + "/_matrix/key/v2/query", json=body, verify=str(fed_server.cert_path), timeout=60
    )
    assert response.status_code == 200, response.text
    entry = entry_for(response.json()["server_keys"], synapse.server_name)
    assert entry["verify_keys"] == synapses["verify_keys"]
    assert_signed_by(entry, synapse.server_name, synapses["verify_keys"])


def notary_cache(synapse: SynapseProcess, server_name: str) -> list[dict[str, Any]]:
    """What Synapse's notary holds for `server_name`: asked without key ids, it answers from its cache only."""
    body = {"server_keys": {server_name: {}}}
    response = requests.post(
        synapse.federation_url + "/_matrix/key/v2/query", json=body, verify=str(synapse.cert_path), timeout=60
    )
    assert response.status_code == 200, response.text
    return [entry for entry in response.json()["server_keys"] if entry["server_name"] == server_name]


def test_synapse_as_our_trusted_key_server(backend: str, synapse: SynapseProcess, tmp_path: Path) -> None:
    """A (trusting Synapse as its notary) checks a request from B with B's keys as Synapse vouches for them.
    Both are new, so Synapse can only hold B's keys because A asked it for them."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trusting = {"trusted_key_servers": [{"server_name": synapse.server_name}]}
    with federating_server(backend, tmp_path / "a", trusting) as a, federating_server(backend, tmp_path / "b") as b:
        alice = new_room_user(a.url, localpart())
        set_displayname(alice, "Alice of A")
        reader = new_room_user(b.url, localpart())
        assert ok(reader.get(f"{PROFILE}/{quote(alice.user_id)}"))["displayname"] == "Alice of A"
    assert notary_cache(synapse, b.server_name), f"Synapse was never asked for the keys of {b.server_name}"


# -- signed requests: Synapse asks us -------------------------------------------------------------------


def test_synapse_user_reads_our_users_profile(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url, localpart())
    set_displayname(alice, "Alice of ours")
    reader = synapse.register()
    assert ok(reader.get(f"{PROFILE}/{quote(alice.user_id)}"))["displayname"] == "Alice of ours"
    assert ok(reader.get(f"{PROFILE}/{quote(alice.user_id)}/displayname")) == {"displayname": "Alice of ours"}


def test_synapse_user_gets_not_found_for_our_unknown_user(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    reader = synapse.register()
    nobody = f"@{localpart()}:{fed_server.server_name}"
    assert_error(reader.get(f"{PROFILE}/{quote(nobody)}"), 404, "M_NOT_FOUND")


def test_synapse_user_resolves_our_alias(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url, localpart())
    name = localpart()
    room_id = alice.create_room(room_alias_name=name)
    alias = f"#{name}:{fed_server.server_name}"
    answer = ok(synapse.register().get(f"{DIRECTORY}/{quote(alias)}"))
    assert answer["room_id"] == room_id
    assert fed_server.server_name in answer["servers"]


def test_synapse_user_gets_not_found_for_our_unknown_alias(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alias = f"#{localpart()}:{fed_server.server_name}"
    assert_error(synapse.register().get(f"{DIRECTORY}/{quote(alias)}"), 404, "M_NOT_FOUND")


# -- signed requests: we ask Synapse --------------------------------------------------------------------


def test_our_user_reads_synapse_users_profile(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    set_displayname(sam, "Sam of Synapse")
    alice = new_room_user(fed_server.url, localpart())
    assert ok(alice.get(f"{PROFILE}/{quote(sam.user_id)}"))["displayname"] == "Sam of Synapse"
    assert ok(alice.get(f"{PROFILE}/{quote(sam.user_id)}/displayname")) == {"displayname": "Sam of Synapse"}


def test_our_user_gets_not_found_for_synapse_unknown_user(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alice = new_room_user(fed_server.url, localpart())
    nobody = f"@{localpart()}:{synapse.server_name}"
    assert_error(alice.get(f"{PROFILE}/{quote(nobody)}"), 404, "M_NOT_FOUND")


def test_our_user_resolves_synapse_alias(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    name = localpart()
    room_id = sam.create_room(room_alias_name=name)
    alias = f"#{name}:{synapse.server_name}"
    answer = ok(new_room_user(fed_server.url, localpart()).get(f"{DIRECTORY}/{quote(alias)}"))
    assert answer["room_id"] == room_id
    assert synapse.server_name in answer["servers"]


def test_our_user_gets_not_found_for_synapse_unknown_alias(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alias = f"#{localpart()}:{synapse.server_name}"
    alice = new_room_user(fed_server.url, localpart())
    assert_error(alice.get(f"{DIRECTORY}/{quote(alias)}"), 404, "M_NOT_FOUND")


# -- what we refuse --------------------------------------------------------------------------------------


def forged_get(base_url: str, cert: str, origin: str, destination: str, key_id: str, path: str) -> requests.Response:
    """A GET that claims to come from `origin` with its key `key_id`, signed by a key `origin` never had."""
    forger = generate_signing_key(key_id.split(":", 1)[1])
    request = {"method": "GET", "uri": path, "origin": origin, "destination": destination}
    sig = sign_json(request, origin, forger)["signatures"][origin][key_id]
    header = f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'
    return requests.get(base_url + path, headers={"Authorization": header}, verify=cert, timeout=60)


def test_we_refuse_a_request_forged_in_synapses_name(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url, localpart())
    (key_id,) = key_document(synapse.federation_url, str(synapse.cert_path))["verify_keys"]
    path = f"/_matrix/federation/v1/query/profile?user_id={quote(alice.user_id)}"
    response = forged_get(
        fed_server.federation_url, str(fed_server.cert_path), synapse.server_name, fed_server.server_name, key_id, path
    )
    assert_error(response, 401, "M_UNAUTHORIZED")


def test_synapse_refuses_a_request_forged_in_our_name(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    """The mirror image: Synapse fetched our real key, so the same forgery fails there too."""
    sam = synapse.register()
    (key_id,) = key_document(fed_server.federation_url, str(fed_server.cert_path))["verify_keys"]
    path = f"/_matrix/federation/v1/query/profile?user_id={quote(sam.user_id)}"
    response = forged_get(
        synapse.federation_url, str(synapse.cert_path), fed_server.server_name, synapse.server_name, key_id, path
    )
    assert_error(response, 401, "M_UNAUTHORIZED")


# -- restarts --------------------------------------------------------------------------------------------


def test_profiles_flow_both_ways_after_synapse_restarts(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    alice = new_room_user(fed_server.url, localpart())
    ok(alice.get(f"{PROFILE}/{quote(sam.user_id)}"))  # each side now holds the other's keys and connections
    synapse.restart()
    # New users on both sides: we cache remote profiles for a while, so an old one would prove nothing.
    sid = synapse.register()
    set_displayname(sid, "Sid after restart")
    bob = new_room_user(fed_server.url, localpart())
    set_displayname(bob, "Bob after restart")
    assert ok(alice.get(f"{PROFILE}/{quote(sid.user_id)}"))["displayname"] == "Sid after restart"
    assert ok(sam.get(f"{PROFILE}/{quote(bob.user_id)}"))["displayname"] == "Bob after restart"  # sam's login kept
