"""End-to-end encryption keys: upload, query and claim; cross-signing keys and signatures; device lists.

Users of other servers are asked for through `federation` (handlers/federation/e2e.py), which also
tells other servers of our users' changes; without it they are answered in `failures` (per server),
never with an error. Whenever a user's device list changes, the user and everyone sharing a room with
them are woken, so their syncs report it in `device_lists.changed`.
"""

from collections.abc import Iterable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.core.json_signing import is_signature_valid, verify_key_from_base64
from homeserver.core.requester import Requester
from homeserver.core.sync_token import SyncToken
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.ui_auth import UiAuth
from homeserver.storage.accounts import AccountStore
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.e2e_keys import E2eKeyStore, KeyList, OneTimeKeyConflict, Signature
from homeserver.storage.rooms import RoomStore

CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")


def sync_token_positions(token: str) -> tuple[int, int]:
    """The (events, device lists) positions of a sync token
    `s{events}_{receipts}_{account_data}_{to_device}_{device_lists}_{typing}`: its 1st and 5th fields.
    400 M_INVALID_PARAM for anything else."""
    parsed = SyncToken.parse(token)
    return parsed.events, parsed.device_lists


def _remote_failure() -> dict[str, Any]:
    return {"status": 503, "message": "Federation is not available on this server: remote keys cannot be fetched"}


def _timeout_s(timeout_ms: int | None) -> float | None:
    return max(timeout_ms, 0) / 1000 if timeout_ms is not None else None


def _failure(error: MatrixError) -> dict[str, str]:
    return {"errcode": error.errcode, "error": error.msg}


def _stripped(key: dict) -> dict:
    return {k: v for k, v in key.items() if k not in ("signatures", "unsigned")}


def _verifies(signed: dict, user_id: str, key_id: str, public_key: str) -> bool:
    """Whether `signed` carries a valid signature by `user_id` with the ed25519 key `key_id`."""
    try:
        return is_signature_valid(signed, user_id, verify_key_from_base64(key_id, public_key))
    except Exception:  # a malformed key or signature is as good as none
        return False


class E2eKeysHandler:
    def __init__(
        self,
        server_name: str,
        store: E2eKeyStore,
        device_lists: DeviceListStore,
        rooms: RoomStore,
        accounts: AccountStore,
        ui_auth: UiAuth,
        notifier: Notifier | None = None,
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._device_lists = device_lists
        self._rooms = rooms
        self._accounts = accounts
        self._ui_auth = ui_auth
        self.notifier = notifier
        self.federation: Any = None  # set by the app: FederatedE2e, for other servers' users and ours' changes

    def _is_local(self, user_id: str) -> bool:
        return parse_user_id(user_id)[1] == self._server_name

    # -- a device's own keys ---------------------------------------------------------------------

    async def upload_keys(
        self, requester: Requester, device_keys: dict | None, one_time_keys: KeyList, fallback_keys: KeyList
    ) -> dict[str, int]:
        """Store the device's identity, one-time and fallback keys; returns the one-time key counts."""
        if device_keys is not None and (
            device_keys["user_id"] != requester.user_id or device_keys["device_id"] != requester.device_id
        ):
            raise MatrixError(403, "M_FORBIDDEN", "device_keys must be the keys of the device uploading them")
        try:
            counts, changed = await self._store.upload(
                requester.user_id, requester.device_id, device_keys, one_time_keys, fallback_keys
            )
        except OneTimeKeyConflict as e:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"One-time key {e.key_name} already exists with other contents"
            ) from None
        if changed:
            await self._notify_device_list_change([requester.user_id])
            self._federate_devices(requester.user_id, [requester.device_id])
        return counts

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """algorithm -> unclaimed one-time keys of the device, e.g. {"signed_curve25519": 50}."""
        return await self._store.one_time_key_counts(user_id, device_id)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return await self._store.unused_fallback_key_types(user_id, device_id)

    # -- other users' keys -----------------------------------------------------------------------

    async def query_keys(
        self, requester: Requester, wanted: dict[str, list[str]], timeout_ms: int | None = None
    ) -> dict[str, Any]:
        local = {user_id: devices for user_id, devices in wanted.items() if self._is_local(user_id)}
        remote = {user_id: devices for user_id, devices in wanted.items() if user_id not in local}
        found = await self._store.query(local, requester.user_id)
        answer = {
            "device_keys": found.device_keys,
            "master_keys": found.master_keys,
            "self_signing_keys": found.self_signing_keys,
            "user_signing_keys": found.user_signing_keys,
            "failures": {},
        }
        if remote and self.federation is None:
            answer["failures"] = {parse_user_id(u)[1]: _remote_failure() for u in remote}
        elif remote:
            theirs = await self.federation.query(remote, _timeout_s(timeout_ms))
            answer["device_keys"].update(theirs.device_keys)
            answer["master_keys"].update(theirs.master_keys)
            answer["self_signing_keys"].update(theirs.self_signing_keys)
            answer["failures"] = theirs.failures
        return answer

    async def claim_keys(self, wanted: dict[str, dict[str, str]], timeout_ms: int | None = None) -> dict[str, Any]:
        local = [
            (user_id, device_id, algorithm)
            for user_id, devices in wanted.items()
            if self._is_local(user_id)
            for device_id, algorithm in devices.items()
        ]
        remote = {user_id: devices for user_id, devices in wanted.items() if not self._is_local(user_id)}
        claimed = await self._store.claim(local) if local else {}
        failures: dict[str, Any] = {}
        if remote and self.federation is None:
            failures = {parse_user_id(u)[1]: _remote_failure() for u in remote}
        elif remote:
            theirs, failures = await self.federation.claim(remote, _timeout_s(timeout_ms))
            claimed.update(theirs)
        return {"one_time_keys": claimed, "failures": failures}

    # -- other servers asking about our users -----------------------------------------------------

    async def federation_query_keys(self, wanted: dict[str, list[str]]) -> dict[str, Any]:
        """POST /user/keys/query: our users' device, master and self-signing keys (users of other servers
        are left out), with only the owners' own signatures."""
        found = await self._store.query({u: d for u, d in wanted.items() if self._is_local(u)}, "")
        return {
            "device_keys": found.device_keys,
            "master_keys": found.master_keys,
            "self_signing_keys": found.self_signing_keys,
        }

    async def federation_claim_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        """POST /user/keys/claim: one-time (else fallback) keys of our users' devices."""
        local = [
            (user_id, device_id, algorithm)
            for user_id, devices in wanted.items()
            if self._is_local(user_id)
            for device_id, algorithm in devices.items()
        ]
        return {"one_time_keys": await self._store.claim(local) if local else {}}

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        """GET /user/devices/{userId}: all devices of one of our users, at their device list position."""
        if not self._is_local(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "The user is not on this server")
        position, devices = await self._store.device_list(user_id, None)
        answer: dict[str, Any] = {"user_id": user_id, "stream_id": position, "devices": []}
        for device in devices:
            entry: dict[str, Any] = {"device_id": device.device_id}
            if device.display_name is not None:
                entry["device_display_name"] = device.display_name
            if device.keys is not None:
                entry["keys"] = device.keys
            answer["devices"].append(entry)
        cross_signing = await self._store.query({user_id: []}, "")
        if user_id in cross_signing.master_keys:
            answer["master_key"] = cross_signing.master_keys[user_id]
        if user_id in cross_signing.self_signing_keys:
            answer["self_signing_key"] = cross_signing.self_signing_keys[user_id]
        return answer

    async def key_changes(self, requester: Requester, from_token: str, to_token: str) -> dict[str, list[str]]:
        from_events, from_lists = sync_token_positions(from_token)
        to_events, to_lists = sync_token_positions(to_token)
        changed, left = await self.device_list_changes(requester.user_id, from_events, from_lists, to_events, to_lists)
        return {"changed": sorted(changed), "left": sorted(left)}

    async def device_list_changes(
        self, user_id: str, from_events: int, from_lists: int, to_events: int, to_lists: int
    ) -> tuple[set[str], set[str]]:
        """(changed, left) for `user_id` between two sync positions: users sharing a room with them whose
        device list changed or who newly share a room with them (themself included), and users who
        shared a room with them in between and share none now."""
        rooms = self._rooms
        sharing = await rooms.users_sharing_rooms(user_id) | {user_id}
        changed = await self._device_lists.changed_users(from_lists, to_lists) & sharing
        own_changes = await rooms.membership_changes(user_id, from_events, to_events)
        joined = await rooms.rooms_for_user(user_id)
        rooms_left = {room_id for room_id, m, _, _ in own_changes if m in ("leave", "ban") and room_id not in joined}
        rooms_joined = {room_id for room_id, m, _, _ in own_changes if m == "join" and room_id in joined}
        moved = await rooms.members_changed_in_rooms(joined + sorted(rooms_left), from_events, to_events)
        changed |= {member for member, membership in moved.items() if membership == "join"} & sharing
        left = {member for member, membership in moved.items() if membership != "join"} - sharing
        # Joining a room shares it with everyone there; leaving one may end sharing with them all.
        for room_id in rooms_joined | rooms_left:
            members = set(await rooms.member_event_ids(room_id))
            if room_id in rooms_joined:
                changed |= members & sharing
            else:
                left |= members - sharing
        return changed, left

    # -- cross-signing -------------------------------------------------------------------------

    async def upload_cross_signing_keys(self, requester: Requester, keys: dict[str, dict], auth: Any) -> None:
        """Store the user's master, self-signing and user-signing keys (`keys` by type). The first upload
        needs no password, as in Synapse and the spec; replacing keys does. Uploading the keys the server
        already has is a no-op, so a retried request passes without the password."""
        user_id = requester.user_id
        existing = await self._store.cross_signing_keys(user_id)
        if not keys and "master" not in existing:
            raise MatrixError(400, "M_MISSING_PARAM", "No master key available")
        if not keys or ("master" in keys and all(existing.get(t) == k for t, k in keys.items())):
            return
        public_keys = {
            key_type: self._check_cross_signing_key(user_id, key_type, key) for key_type, key in keys.items()
        }
        if "master" in keys:
            master_public = public_keys["master"]
        elif "master" in existing:
            master_public = self._check_cross_signing_key(user_id, "master", existing["master"])
        else:
            raise MatrixError(400, "M_MISSING_PARAM", "No master key available to verify the signatures with")
        for key_type in ("self_signing", "user_signing"):
            if key_type in keys and not _verifies(keys[key_type], user_id, f"ed25519:{master_public}", master_public):
                raise MatrixError(400, "M_INVALID_SIGNATURE", f"The {key_type} key is not signed by the master key")
        for public_key in public_keys.values():
            if await self._accounts.get_device(user_id, public_key) is not None:
                raise MatrixError(403, "M_FORBIDDEN", "Key ID in use: a device has this id")
        if "master" in existing:
            await self._ui_auth.require_password(user_id, auth)
        await self._store.set_cross_signing_keys(user_id, {t: (public_keys[t], keys[t]) for t in keys})
        await self._notify_device_list_change([user_id])
        if self.federation is not None and keys.keys() & {"master", "self_signing"}:
            self.federation.local_signing_keys_changed(user_id)

    @staticmethod
    def _check_cross_signing_key(user_id: str, key_type: str, key: dict) -> str:
        """The key's unpadded base64 ed25519 public key; 400 M_INVALID_PARAM if it is not a key of this
        type for this user."""
        if key.get("user_id") != user_id:
            raise MatrixError(400, "M_INVALID_PARAM", f"The {key_type} key must have user_id {user_id}")
        if key_type not in key.get("usage", []):
            raise MatrixError(400, "M_INVALID_PARAM", f"The {key_type} key's usage must include {key_type}")
        ((key_id, public_key),) = key["keys"].items()
        try:
            ok = key_id == f"ed25519:{public_key}" and verify_key_from_base64(key_id, public_key) is not None
        except Exception:
            ok = False
        if not ok:
            raise MatrixError(400, "M_INVALID_PARAM", f"The {key_type} key must be one ed25519:<public key> entry")
        return public_key

    async def upload_signatures(
        self, requester: Requester, signed: dict[str, dict[str, dict]]
    ) -> dict[str, dict[str, dict[str, str]]]:
        """Store the valid signatures among `signed` (user -> key id -> signed object); returns failures
        (user -> key id -> error) for the rest."""
        user_id = requester.user_id
        own_keys = await self._store.cross_signing_keys(user_id)
        accepted: list[Signature] = []
        failures: dict[str, dict[str, dict[str, str]]] = {}
        for target_user, by_key in signed.items():
            if target_user == user_id:
                devices = await self._store.device_keys_of(user_id)
                target_master = own_keys.get("master")
            else:
                devices = {}
                target_master = (await self._store.cross_signing_keys(target_user)).get("master")
            for key_id, signed_object in by_key.items():
                try:
                    accepted.extend(
                        self._check_signature(
                            user_id, own_keys, target_user, target_master, devices, key_id, signed_object
                        )
                    )
                except MatrixError as e:
                    failures.setdefault(target_user, {})[key_id] = _failure(e)
        if accepted:
            await self._store.add_signatures(user_id, accepted)
            await self._notify_device_list_change({user_id} | {s.target_user_id for s in accepted})
            # Other servers see only the user's own signatures: on their devices and master key.
            own = {s.target_key_id for s in accepted if s.target_user_id == user_id}
            master_public = _public_key(own_keys.get("master"))
            self._federate_devices(user_id, sorted(own - {master_public}))
            if self.federation is not None and master_public in own:
                self.federation.local_signing_keys_changed(user_id)
        return failures

    def _check_signature(
        self,
        user_id: str,
        own_keys: dict[str, dict],
        target_user: str,
        target_master: dict | None,
        devices: dict[str, dict],
        key_id: str,
        signed: dict,
    ) -> list[Signature]:
        """The new signatures by `user_id` in `signed`, checked; MatrixError for the failure to report.

        A user signs their own devices with their self-signing key, their own master key with a device
        key, and other users' master keys with their user-signing key."""
        all_signatures = signed.get("signatures")
        signatures = all_signatures.get(user_id) if isinstance(all_signatures, dict) else None
        if not isinstance(signatures, dict) or not signatures:
            raise MatrixError(400, "M_INVALID_SIGNATURE", f"No signature by {user_id}")
        master_public = _public_key(target_master)
        if target_user == user_id and key_id in devices:
            return [self._checked_by(own_keys, "self_signing", user_id, signed, devices[key_id], target_user, key_id)]
        if target_master is None or key_id != master_public:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown key {key_id} of {target_user}")
        if target_user != user_id:
            return [self._checked_by(own_keys, "user_signing", user_id, signed, target_master, target_user, key_id)]
        # The user's own master key, signed by their devices (signatures it already has are kept as they are).
        if _stripped(signed) != _stripped(target_master):
            raise MatrixError(400, "M_INVALID_PARAM", "The signed object does not match the stored key")
        stored = target_master.get("signatures", {}).get(user_id, {})
        own_devices = self._device_keys_by_id(user_id, devices)
        result = []
        for signer_key_id, signature in signatures.items():
            if stored.get(signer_key_id) == signature:
                continue
            device_public = own_devices.get(signer_key_id)
            if device_public is None or not _verifies(signed, user_id, signer_key_id, device_public):
                raise MatrixError(400, "M_INVALID_SIGNATURE", f"Invalid signature by {signer_key_id}")
            result.append(Signature(user_id, key_id, user_id, signer_key_id, signature))
        return result

    @staticmethod
    def _device_keys_by_id(user_id: str, devices: dict[str, dict]) -> dict[str, str]:
        """`ed25519:<device id>` -> that device's public ed25519 key."""
        found = {}
        for device_id, keys in devices.items():
            key_id = f"ed25519:{device_id}"
            public = keys.get("keys", {}).get(key_id)
            if isinstance(public, str):
                found[key_id] = public
        return found

    @staticmethod
    def _checked_by(
        own_keys: dict[str, dict],
        signing_type: str,
        user_id: str,
        signed: dict,
        stored: dict,
        target_user: str,
        target_key_id: str,
    ) -> Signature:
        """The signature by the user's `signing_type` key over `signed`, which must be `stored` with
        other signatures."""
        signing_public = _public_key(own_keys.get(signing_type))
        if signing_public is None:
            raise MatrixError(404, "M_NOT_FOUND", f"{user_id} has no {signing_type} key")
        signer_key_id = f"ed25519:{signing_public}"
        signature = signed["signatures"][user_id].get(signer_key_id)
        if not isinstance(signature, str):
            raise MatrixError(400, "M_INVALID_SIGNATURE", f"No signature by the {signing_type} key")
        if _stripped(signed) != _stripped(stored):
            raise MatrixError(400, "M_INVALID_PARAM", "The signed object does not match the stored key")
        if not _verifies(signed, user_id, signer_key_id, signing_public):
            raise MatrixError(400, "M_INVALID_SIGNATURE", f"Invalid signature by the {signing_type} key")
        return Signature(target_user, target_key_id, user_id, signer_key_id, signature)

    # -- device list changes -------------------------------------------------------------------

    async def device_added(self, user_id: str, device_id: str) -> None:
        """A device was created (login, registration): the user's device list changed."""
        await self._device_lists.record_change(user_id)
        await self._notify_device_list_change([user_id])
        self._federate_devices(user_id, [device_id])

    async def device_renamed(self, user_id: str, device_id: str) -> None:
        """Other users see device names in /keys/query: the user's device list changed."""
        await self._device_lists.record_change(user_id)
        await self._notify_device_list_change([user_id])
        self._federate_devices(user_id, [device_id])

    async def devices_removed(self, user_id: str) -> None:
        """Some of the user's devices were deleted: their keys and to-device inboxes go too."""
        gone = await self._store.forget_deleted_devices(user_id)
        if gone:
            await self._notify_device_list_change([user_id])
            self._federate_devices(user_id, gone)

    def _federate_devices(self, user_id: str, device_ids: list[str]) -> None:
        if self.federation is not None and device_ids:
            self.federation.local_devices_changed(user_id, device_ids)

    async def _notify_device_list_change(self, user_ids: Iterable[str]) -> None:
        """Wake the syncs of these users and of everyone who shares a room with them."""
        if self.notifier is None or not self.notifier.waiting:
            return
        targets: set[str] = set()
        for user_id in user_ids:
            targets.add(user_id)
            targets |= await self._rooms.users_sharing_rooms(user_id)
        self.notifier.notify_users(targets)


def _public_key(key: dict | None) -> str | None:
    """The public key of a stored cross-signing key."""
    if key is None:
        return None
    ((_, public_key),) = key["keys"].items()
    return public_key
