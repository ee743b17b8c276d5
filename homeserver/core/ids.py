"""Identifier grammar from the spec's appendices: user ids, localparts, server names."""

import re

MAX_ID_BYTES = 255

# Localparts we allow for new users (the spec's current grammar).
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")
# Historical user ids may use any printable ASCII but ':' (appendices, "Historical User IDs").
_HISTORICAL_LOCALPART = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}\]"
_DNS = r"[A-Za-z0-9\-.]{1,255}"
_SERVER_NAME = re.compile(rf"^(?:{_IPV4}|{_IPV6}|{_DNS})(?::\d{{1,5}})?$")


def is_valid_server_name(name: str) -> bool:
    return bool(_SERVER_NAME.match(name))


def is_valid_localpart(localpart: str) -> bool:
    """True for a localpart a new user may register."""
    return bool(_LOCALPART.match(localpart))


def parse_user_id(user_id: str) -> tuple[str, str]:
    """Split `@localpart:server` into its parts; ValueError if it is not a user id."""
    if not user_id.startswith("@") or ":" not in user_id or len(user_id.encode()) > MAX_ID_BYTES:
        raise ValueError(f"not a user id: {user_id!r}")
    localpart, server = user_id[1:].split(":", 1)
    if not localpart or not _HISTORICAL_LOCALPART.match(localpart) or not is_valid_server_name(server):
        raise ValueError(f"not a user id: {user_id!r}")
    return localpart, server


def user_id(localpart: str, server_name: str) -> str:
    return f"@{localpart}:{server_name}"
