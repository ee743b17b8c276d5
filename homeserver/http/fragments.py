"""JSON responses assembled from pre-serialized, pre-compressed fragments.

A big piece shared by many responses (the state of a large room, in every initial /sync of it) is
serialized and deflated once. Each response then costs the JSON and compression of its own small
parts plus a CRC32 pass: deflate streams whose pieces each end in a sync flush, and that share no
history, concatenate into one valid stream, wrapped here in a gzip header and trailer.
"""

import json
import secrets
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from homeserver.http.responses import GZIP_LEVEL, Response

_MARK = "frag-" + secrets.token_hex(16) + "-"  # a per-process secret: content cannot guess it
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _deflate_piece(data: bytes, final: bool) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


@dataclass(frozen=True)
class Fragment:
    """A JSON value serialized once, kept with its deflated form (computed on first use)."""

    json: bytes
    _deflated: list[bytes] = field(default_factory=list, compare=False)

    @classmethod
    def of(cls, value: Any) -> "Fragment":
        return cls(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))

    @property
    def deflated(self) -> bytes:
        if not self._deflated:
            self._deflated.append(_deflate_piece(self.json, final=False))
        return self._deflated[0]

    @property
    def size(self) -> int:
        return len(self.json) + (len(self._deflated[0]) if self._deflated else 0)


def assemble(status: int, body: Any, gzip: bool) -> Response:
    """`body` may hold Fragments anywhere a JSON value goes. With `gzip`, the response carries the
    gzip bytes too, built from the fragments' cached deflate streams."""
    fragments: list[Fragment] = []

    def default(value: Any) -> Any:
        if isinstance(value, Fragment):
            fragments.append(value)
            return f"{_MARK}{len(fragments) - 1}"
        raise TypeError(f"not JSON serializable: {type(value).__name__}")

    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=default)
    pieces: list[bytes | Fragment] = []
    for n, part in enumerate(text.split(f'"{_MARK}')):
        if n == 0:
            pieces.append(part.encode("utf-8"))
            continue
        index, _, rest = part.partition('"')
        pieces += [fragments[int(index)], rest.encode("utf-8")]
    plain = b"".join(p.json if isinstance(p, Fragment) else p for p in pieces)
    if not gzip or not fragments:
        return Response(status, plain)
    stream = [p.deflated if isinstance(p, Fragment) else _deflate_piece(p, final=False) for p in pieces]
    stream.append(_deflate_piece(b"", final=True))
    trailer = struct.pack("<II", zlib.crc32(plain) & 0xFFFFFFFF, len(plain) & 0xFFFFFFFF)
    return Response(status, plain, gzipped=_GZIP_HEADER + b"".join(stream) + trailer)
