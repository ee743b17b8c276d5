"""The spec's test vectors (../shared/matrix-spec/test-vectors), loaded for the core tests."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from homeserver.core.json_signing import signing_key_from_seed

VECTORS_DIR = Path(__file__).resolve().parents[3] / "shared" / "matrix-spec" / "test-vectors"


@cache
def _load(name: str) -> str:
    return (VECTORS_DIR / name).read_text(encoding="utf-8")


def load_vectors(name: str) -> Any:
    """A fresh copy of a vector file each time, so a test cannot spoil it for the next."""
    return json.loads(_load(name))


def spec_signing_key():
    """The published test key (signing-key.json) every signing vector was made with."""
    key = load_vectors("signing-key.json")
    _, version = key["key_id"].split(":", 1)
    return signing_key_from_seed(key["seed_unpadded_base64"], version, key["algorithm"])


def spec_server_name() -> str:
    return load_vectors("signing-key.json")["server_name"]
