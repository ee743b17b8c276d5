"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys, signatures.

Each write that changes what another client must re-fetch moves the user on the device list stream in
the same transaction (`record_change_txn`), so a sync never sees the change without the key or the
reverse.
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.device_lists import record_change_txn
from homeserver.storage.ids import next_id
from homeserver.storage.to_device import delete_inboxes_of_deleted_devices_txn

CHUNK = 500  # ids per IN (...) list
CLAIM_ATTEMPTS = 5  # a claim racing another for the same key tries the next one this often

KeyList = list[tuple[str, str, Any]]  # (algorithm, key id, key object or string)


class OneTimeKeyConflict(Exception):
    """A one-time key id is already stored with different contents."""

    def __init__(self, key_name: str) -> None:
        super().__init__(key_name)
        self.key_name = key_name


@dataclass(frozen=True)
class Signature:
    """A signature by `signer_user_id` with `signer_key_id` over a device (`target_key_id` is its id)
    or a master key (`target_key_id` is its public key) of `target_user_id`."""

    target_user_id: str
    target_key_id: str
    signer_user_id: str
    signer_key_id: str
    signature: str


@dataclass
class KeyQueryResult:
    """What /keys/query answers for local users, with the signatures the requester may see merged in."""

    device_keys: dict[str, dict[str, dict]] = field(default_factory=dict)
    master_keys: dict[str, dict] = field(default_factory=dict)
    self_signing_keys: dict[str, dict] = field(default_factory=dict)
    user_signing_keys: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceEntry:
    """A device of a local user as other servers learn of it (GET /user/devices, m.device_list_update)."""

    device_id: str
    display_name: str | None
    keys: dict | None  # with the user's own signatures merged in; None if it uploaded none
    exists: bool  # False for a device that was deleted


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _without_signatures(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    return value


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- /keys/upload ---------------------------------------------------------------------------

    async def upload(
        self,
        user_id: str,
        device_id: str,
        device_keys: dict | None,
        one_time_keys: KeyList,
        fallback_keys: KeyList,
    ) -> tuple[dict[str, int], bool]:
        """Store a device's keys in one transaction. Returns the one-time key counts afterwards and
        whether the device list changed (new device keys). Raises OneTimeKeyConflict, storing nothing,
        if a one-time key id is reused with other contents."""
        return await self._db.run(
            "e2e.upload", self._upload_txn, user_id, device_id, device_keys, one_time_keys, fallback_keys
        )

    def _upload_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str,
        device_keys: dict | None,
        one_time_keys: KeyList,
        fallback_keys: KeyList,
    ) -> tuple[dict[str, int], bool]:
        changed = False
        if device_keys is not None:
            changed = self._set_device_keys_txn(txn, user_id, device_id, device_keys)
        if one_time_keys:
            self._add_one_time_keys_txn(txn, user_id, device_id, one_time_keys)
        for algorithm, key_id, key in fallback_keys:
            self._set_fallback_key_txn(txn, user_id, device_id, algorithm, key_id, key)
        if changed:
            record_change_txn(txn, user_id)
        return self._counts_txn(txn, user_id, device_id), changed

    def _set_device_keys_txn(self, txn: Txn, user_id: str, device_id: str, keys: dict) -> bool:
        row = txn.execute(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        ).fetchone()
        old = json.loads(row[0]) if row else None
        if old == keys:
            return False  # clients upload the same keys again after a restart: nothing to tell anyone
        txn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
            (user_id, device_id, _dump(keys)),
        )
        if old is not None and old.get("keys") != keys.get("keys"):
            # Cross-signatures were made over the old keys and no longer verify.
            txn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id = ?",
                (user_id, device_id),
            )
        return True

    def _add_one_time_keys_txn(self, txn: Txn, user_id: str, device_id: str, keys: KeyList) -> None:
        existing: dict[tuple[str, str], Any] = {}
        for algorithm, key_id, stored in txn.execute(
            "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchall():
            existing[(algorithm, key_id)] = json.loads(stored)
        new_rows = []
        for algorithm, key_id, key in keys:
            if (algorithm, key_id) in existing:
                # A retried upload sends the same keys again; the same id with another key is a client bug.
                if _without_signatures(existing[(algorithm, key_id)]) != _without_signatures(key):
                    raise OneTimeKeyConflict(f"{algorithm}:{key_id}")
                continue
            new_rows.append((algorithm, key_id, key))
        if not new_rows:
            return
        upload_id = next_id(txn, "e2e_key_uploads")
        txn.insert_many(
            "e2e_one_time_keys",
            ("user_id", "device_id", "algorithm", "key_id", "key_json", "upload_id"),
            [(user_id, device_id, algorithm, key_id, _dump(key), upload_id) for algorithm, key_id, key in new_rows],
        )

    def _set_fallback_key_txn(
        self, txn: Txn, user_id: str, device_id: str, algorithm: str, key_id: str, key: Any
    ) -> None:
        row = txn.execute(
            "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        ).fetchone()
        if row and row[0] == key_id and json.loads(row[1]) == key:
            return  # the same key again keeps its `used` mark
        txn.execute(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
            " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE"
            " SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
            (user_id, device_id, algorithm, key_id, _dump(key)),
        )

    # -- counts, for /keys/upload and /sync -----------------------------------------------------

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self._db.run("e2e.one_time_key_counts", self._counts_txn, user_id, device_id, readonly=True)

    def _counts_txn(self, txn: Txn, user_id: str, device_id: str) -> dict[str, int]:
        rows = txn.execute(
            "SELECT algorithm, count(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
            (user_id, device_id),
        ).fetchall()
        # signed_curve25519 is always there: some clients read it without checking, as Synapse found.
        counts = {"signed_curve25519": 0}
        counts.update({algorithm: int(n) for algorithm, n in rows})
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self._db.run(
            "e2e.unused_fallback_key_types",
            lambda txn: txn.execute(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0"
                " ORDER BY algorithm",
                (user_id, device_id),
            ).fetchall(),
            readonly=True,
        )
        return [r[0] for r in rows]

    # -- /keys/claim ----------------------------------------------------------------------------

    async def claim(self, wanted: list[tuple[str, str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
        """For each (user, device, algorithm), the device's oldest one-time key, removed so nobody gets
        it again; else its fallback key, marked used. Unknown devices and devices without keys are
        left out."""
        return await self._db.run("e2e.claim", self._claim_txn, wanted)

    def _claim_txn(self, txn: Txn, wanted: list[tuple[str, str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
        claimed: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, device_id, algorithm in wanted:
            if not txn.execute(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ).fetchone():
                continue
            found = self._claim_one_time_key_txn(txn, user_id, device_id, algorithm)
            if found is None:
                found = self._claim_fallback_key_txn(txn, user_id, device_id, algorithm)
            if found is not None:
                key_id, key_json = found
                claimed.setdefault(user_id, {})[device_id] = {f"{algorithm}:{key_id}": json.loads(key_json)}
        return claimed

    def _claim_one_time_key_txn(self, txn: Txn, user_id: str, device_id: str, algorithm: str) -> tuple | None:
        for _ in range(CLAIM_ATTEMPTS):
            row = txn.execute(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
                " ORDER BY upload_id, key_id LIMIT 1",
                (user_id, device_id, algorithm),
            ).fetchone()
            if row is None:
                return None
            # On PostgreSQL a concurrent claim may have taken this key: the DELETE then removes nothing.
            txn.execute(
                "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
                (user_id, device_id, algorithm, row[0]),
            )
            if txn.rowcount == 1:
                return row
        return None

    def _claim_fallback_key_txn(self, txn: Txn, user_id: str, device_id: str, algorithm: str) -> tuple | None:
        row = txn.execute(
            "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        ).fetchone()
        if row is not None:
            txn.execute(
                "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
        return row

    # -- /keys/query ----------------------------------------------------------------------------

    async def query(self, wanted: dict[str, list[str]], requester_id: str) -> KeyQueryResult:
        """Device and cross-signing keys of local users: all their devices with keys when the list is
        empty, else those named. Unknown users are left out."""
        return await self._db.run("e2e.query", self._query_txn, wanted, requester_id, readonly=True)

    def _query_txn(self, txn: Txn, wanted: dict[str, list[str]], requester_id: str) -> KeyQueryResult:
        result = KeyQueryResult()
        user_ids = list(wanted)
        signatures = self._visible_signatures_txn(txn, user_ids, requester_id)
        for chunk in _chunks(user_ids):
            known = txn.execute(f"SELECT user_id FROM users WHERE user_id IN ({_marks(chunk)})", chunk).fetchall()
            for (user_id,) in known:
                result.device_keys[user_id] = {}
            for user_id, device_id, key_json, display_name in txn.execute(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                f" WHERE k.user_id IN ({_marks(chunk)})",
                chunk,
            ).fetchall():
                if wanted[user_id] and device_id not in wanted[user_id]:
                    continue
                keys = _with_signatures(json.loads(key_json), signatures.get((user_id, device_id)))
                keys["unsigned"] = {"device_display_name": display_name} if display_name is not None else {}
                result.device_keys[user_id][device_id] = keys
            for user_id, key_type, public_key, key_json in txn.execute(
                "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys"
                f" WHERE user_id IN ({_marks(chunk)})",
                chunk,
            ).fetchall():
                key = _with_signatures(json.loads(key_json), signatures.get((user_id, public_key)))
                if key_type == "master":
                    result.master_keys[user_id] = key
                elif key_type == "self_signing":
                    result.self_signing_keys[user_id] = key
                elif user_id == requester_id:  # a user-signing key is for its owner's eyes only
                    result.user_signing_keys[user_id] = key
        return result

    def _visible_signatures_txn(
        self, txn: Txn, user_ids: list[str], requester_id: str
    ) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        """(target user, target key id) -> [(signer user, signer key id, signature)] that the requester
        may see: the target user's own, and the requester's."""
        found: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for chunk in _chunks(user_ids):
            for target_user, target_key, signer_user, signer_key, signature in txn.execute(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
                f" FROM e2e_cross_signing_signatures WHERE target_user_id IN ({_marks(chunk)})"
                " AND (signer_user_id = target_user_id OR signer_user_id = ?)",
                (*chunk, requester_id),
            ).fetchall():
                found[(target_user, target_key)].append((signer_user, signer_key, signature))
        return found

    async def device_list(self, user_id: str, device_ids: list[str] | None) -> tuple[int, list[DeviceEntry]]:
        """The user's last position on the device list stream (0 if none) and their devices: all that
        exist, or the ones named (a deleted one as not existing), read in one transaction so the position
        matches the devices."""
        return await self._db.run("e2e.device_list", self._device_list_txn, user_id, device_ids, readonly=True)

    def _device_list_txn(self, txn: Txn, user_id: str, device_ids: list[str] | None) -> tuple[int, list[DeviceEntry]]:
        row = txn.execute("SELECT stream_id FROM device_list_changes WHERE user_id = ?", (user_id,)).fetchone()
        signatures = self._visible_signatures_txn(txn, [user_id], "")  # the user's own signatures only
        rows = txn.execute(
            "SELECT d.device_id, d.display_name, k.key_json FROM devices d LEFT JOIN e2e_device_keys k"
            " ON k.user_id = d.user_id AND k.device_id = d.device_id WHERE d.user_id = ? ORDER BY d.device_id",
            (user_id,),
        ).fetchall()
        found = {
            device_id: DeviceEntry(
                device_id,
                display_name,
                _with_signatures(json.loads(key_json), signatures.get((user_id, device_id))) if key_json else None,
                True,
            )
            for device_id, display_name, key_json in rows
        }
        if device_ids is None:
            entries = list(found.values())
        else:
            entries = [found.get(d) or DeviceEntry(d, None, None, False) for d in device_ids]
        return (int(row[0]) if row else 0), entries

    async def device_keys_of(self, user_id: str) -> dict[str, dict]:
        """device id -> the keys the device uploaded, for every device of the user that has keys."""
        rows = await self._db.run(
            "e2e.device_keys_of",
            lambda txn: txn.execute(
                "SELECT k.device_id, k.key_json FROM e2e_device_keys k"
                " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = ?",
                (user_id,),
            ).fetchall(),
            readonly=True,
        )
        return {device_id: json.loads(key_json) for device_id, key_json in rows}

    # -- cross-signing --------------------------------------------------------------------------

    async def cross_signing_keys(self, user_id: str) -> dict[str, dict]:
        """key type (master, self_signing, user_signing) -> the key as uploaded."""
        rows = await self._db.run(
            "e2e.cross_signing_keys",
            lambda txn: txn.execute(
                "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,)
            ).fetchall(),
            readonly=True,
        )
        return {key_type: json.loads(key_json) for key_type, key_json in rows}

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, tuple[str, dict]]) -> None:
        """Replace the user's keys of these types (type -> (public key, key object)). Signatures made by
        a replaced key, and those over a replaced master key, go with it."""
        await self._db.run("e2e.set_cross_signing_keys", self._set_cross_signing_txn, user_id, keys)

    def _set_cross_signing_txn(self, txn: Txn, user_id: str, keys: dict[str, tuple[str, dict]]) -> None:
        for key_type, (public_key, key) in keys.items():
            row = txn.execute(
                "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?", (user_id, key_type)
            ).fetchone()
            if row and row[0] != public_key:
                txn.execute(
                    "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
                    (user_id, f"ed25519:{row[0]}"),
                )
                if key_type == "master":
                    txn.execute(
                        "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id = ?",
                        (user_id, row[0]),
                    )
            txn.execute(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, key_type) DO UPDATE"
                " SET public_key = excluded.public_key, key_json = excluded.key_json",
                (user_id, key_type, public_key, _dump(key)),
            )
        record_change_txn(txn, user_id)

    async def add_signatures(self, signer_user_id: str, signatures: list[Signature]) -> None:
        """Store signatures uploaded by `signer_user_id`. The device lists of the signer and of every
        signed user change, so the signer's other devices re-fetch the keys that now carry them."""
        await self._db.run("e2e.add_signatures", self._add_signatures_txn, signer_user_id, signatures)

    def _add_signatures_txn(self, txn: Txn, signer_user_id: str, signatures: list[Signature]) -> None:
        for s in signatures:
            txn.execute(
                "INSERT INTO e2e_cross_signing_signatures"
                " (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
                " DO UPDATE SET signature = excluded.signature",
                (s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature),
            )
        for user_id in sorted({signer_user_id} | {s.target_user_id for s in signatures}):
            record_change_txn(txn, user_id)

    # -- deleted devices ------------------------------------------------------------------------

    async def forget_deleted_devices(self, user_id: str) -> list[str]:
        """Remove the keys, signatures and to-device inboxes of the user's devices that no longer exist.
        Returns those of them that had keys (if any, the device list changed and the change is recorded)."""
        return await self._db.run("e2e.forget_deleted_devices", self._forget_txn, user_id)

    def _forget_txn(self, txn: Txn, user_id: str) -> list[str]:
        gone = "device_id NOT IN (SELECT device_id FROM devices WHERE user_id = ?)"
        keyed = txn.execute(
            f"SELECT device_id FROM e2e_device_keys WHERE user_id = ? AND {gone}", (user_id, user_id)
        ).fetchall()
        txn.execute(
            "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id IN"
            f" (SELECT device_id FROM e2e_device_keys WHERE user_id = ? AND {gone})",
            (user_id, user_id, user_id),
        )
        txn.execute(f"DELETE FROM e2e_device_keys WHERE user_id = ? AND {gone}", (user_id, user_id))
        for table in ("e2e_one_time_keys", "e2e_fallback_keys"):
            txn.execute(f"DELETE FROM {table} WHERE user_id = ? AND {gone}", (user_id, user_id))
        delete_inboxes_of_deleted_devices_txn(txn, user_id)
        if keyed:
            record_change_txn(txn, user_id)
        return sorted(r[0] for r in keyed)


def _with_signatures(key: dict, extra: list[tuple[str, str, str]] | None) -> dict:
    """A copy of `key` with `extra` (signer user, signer key id, signature) added to its signatures."""
    if not extra:
        return key
    signatures = {user: dict(sigs) for user, sigs in key.get("signatures", {}).items()}
    for signer_user, signer_key, signature in extra:
        signatures.setdefault(signer_user, {})[signer_key] = signature
    return {**key, "signatures": signatures}
