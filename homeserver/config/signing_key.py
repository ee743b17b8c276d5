"""The server's ed25519 signing key: read it, or generate and keep it on first start."""

import os
import secrets
import string
from pathlib import Path
from typing import Any

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys

from homeserver.config.types import ConfigError

KEY_ID_ALPHABET = string.ascii_letters + string.digits


def load_signing_key(path: str, source: str, create: bool = True) -> Any:
    """The first key in `path` (Synapse's format: `ed25519 <version> <seed>`); generated if the file is
    missing and `create` is set. ConfigError naming `signing_key_path` when it cannot be used."""
    key_file = Path(path)
    if not key_file.exists():
        if not create:
            raise ConfigError(source, "signing_key_path", f"{path} does not exist")
        return write_new_signing_key(key_file, source)
    try:
        with key_file.open() as f:
            keys = read_signing_keys(f)
    except OSError as e:
        raise ConfigError(source, "signing_key_path", f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # signedjson raises assorted errors for a damaged file
        raise ConfigError(source, "signing_key_path", f"{path} is not a valid signing key file ({e})") from None
    if not keys:
        raise ConfigError(source, "signing_key_path", f"{path} holds no signing key")
    return keys[0]


def write_new_signing_key(key_file: Path, source: str) -> Any:
    version = "a_" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(4))
    key = generate_signing_key(version)
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name, then renamed: a crash never leaves a half-written key.
        tmp = key_file.with_name(key_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            write_signing_keys(f, [key])
        tmp.replace(key_file)
    except OSError as e:
        raise ConfigError(source, "signing_key_path", f"cannot write {key_file}: {e.strerror}") from None
    return key
