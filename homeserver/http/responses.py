"""Response bodies: JSON encoding and gzip, shared by every endpoint."""

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 5  # most of level 9's saving at a fraction of its CPU


@dataclass
class Response:
    """A finished body. Endpoints that cache their output (sync) can hand over the gzip bytes too."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    gzipped: bytes | None = None


def encode_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
