"""Response bodies: JSON encoding and gzip, shared by every endpoint; files sent as they are read."""

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

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
    compress: bool = True  # False for bodies gzip would not shrink (images, archives)


@dataclass
class FileResponse:
    """An open file to send as the body (see bodies.FileTransfer); `close` is called once it is sent, or
    the client is gone, and must close the file."""

    status: int
    file: BinaryIO
    length: int
    content_type: str
    close: Callable[[], None]
    headers: dict[str, str] = field(default_factory=dict)


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
