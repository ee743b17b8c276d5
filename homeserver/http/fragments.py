"""JSON responses assembled from pre-serialized, pre-compressed fragments.

A big piece shared by many responses (the state of a large room, in every initial /sync of it) is
serialized and deflated once. Each response then costs the JSON and compression of its own small
parts: deflate streams whose pieces each end in a sync flush, and that share no history, concatenate
into one valid stream, wrapped here in a gzip header and trailer. The trailer's CRC32 is combined from
each fragment's own CRC, so a response does not read the big piece again.

A `Template` is JSON serialized once with holes for values that differ per response (the `age` of
events): filling it in is a join of cached bytes, and the result (`Raw`) is compressed with the
response's own parts.
"""

import json
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeserver.http.responses import GZIP_LEVEL, Response

_MARK = "frag-" + secrets.token_hex(16) + "-"  # a per-process secret: content cannot guess it
_HOLE = "hole-" + secrets.token_hex(16) + "-"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_ZEROS = memoryview(bytes(64 * 1024))
STEP = 64 * 1024  # bytes compressed (or CRC'd) per step of Fragment.prepare


def _dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)


def json_items(values: Sequence[Any]) -> bytes:
    """The JSON of a list's items without its brackets: a big list serialized a piece at a time."""
    return _dumps(list(values))[1:-1].encode("utf-8")


def _deflate_piece(data: bytes, final: bool) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


def _crc_of_zeros(n: int, crc: int) -> int:
    for start in range(0, n, len(_ZEROS)):
        crc = zlib.crc32(_ZEROS[: min(len(_ZEROS), n - start)], crc)
    return crc


@dataclass(frozen=True)
class Fragment:
    """A JSON value serialized once, kept with its deflated form and its CRC (computed on first use)."""

    json: bytes
    _deflated: list[bytes] = field(default_factory=list, compare=False)
    _crc: list[tuple[int, tuple[int, ...]]] = field(default_factory=list, compare=False)

    @classmethod
    def of(cls, value: Any) -> "Fragment":
        return cls(_dumps(value).encode("utf-8"))

    @classmethod
    def of_items(cls, parts: Iterable[bytes]) -> "Fragment":
        """A JSON list from pieces of its items (json_items of consecutive slices)."""
        return cls(b"[" + b",".join(p for p in parts if p) + b"]")

    def prepare(self) -> Iterator[None]:
        """Compute the deflated form and the CRC's images a step at a time, yielding between steps, for
        a caller that lets other work run meanwhile: a big fragment takes tens of milliseconds."""
        if not self._deflated:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
            out = []
            for start in range(0, len(self.json), STEP):
                out.append(compressor.compress(self.json[start : start + STEP]))
                yield
            self._deflated.append(b"".join(out) + compressor.flush(zlib.Z_SYNC_FLUSH))
        if not self._crc:
            base = _crc_of_zeros(len(self.json), 0)
            images = []
            for bit in range(32):
                images.append(_crc_of_zeros(len(self.json), 1 << bit) ^ base)
                yield
            self._crc.append((zlib.crc32(self.json), tuple(images)))

    @property
    def deflated(self) -> bytes:
        if not self._deflated:
            self._deflated.append(_deflate_piece(self.json, final=False))
        return self._deflated[0]

    def crc_after(self, crc: int) -> int:
        """zlib.crc32(self.json, crc) without reading the bytes again: CRC32 continued over n bytes is
        linear in the starting value (plus the CRC of the bytes alone), so it is 32 cached images of
        one-bit starting values, XORed."""
        if not self._crc:
            for _ in self.prepare():
                pass
        own, images = self._crc[0]
        for bit in range(32):
            if crc >> bit & 1:
                own ^= images[bit]
        return own

    @property
    def size(self) -> int:
        return len(self.json) + (len(self._deflated[0]) if self._deflated else 0)


@dataclass(frozen=True)
class Raw:
    """JSON text made for one response (a Template filled in): copied into the body as it is."""

    json: bytes


@dataclass(frozen=True)
class Hole:
    """Where a Template takes a value per response; `key` tells the filler which one."""

    key: Any


@dataclass(frozen=True)
class Template:
    """A JSON value serialized once, with Holes filled in per response."""

    parts: tuple[bytes, ...]  # the text around the holes: one more than there are holes
    keys: tuple[Any, ...]

    @classmethod
    def of(cls, value: Any) -> "Template":
        keys: list[Any] = []

        def default(hole: Any) -> Any:
            if isinstance(hole, Hole):
                keys.append(hole.key)
                return f"{_HOLE}{len(keys) - 1}"
            raise TypeError(f"not JSON serializable: {type(hole).__name__}")

        parts = _dumps(value, default).split(f'"{_HOLE}')
        # Each part after the first starts with its hole's number and the closing quote; holes come in order.
        return cls(
            (parts[0].encode("utf-8"), *(part.partition('"')[2].encode("utf-8") for part in parts[1:])), tuple(keys)
        )

    def fill(self, value_of: Callable[[Any], Any]) -> Raw:
        """The JSON text with each hole replaced by `value_of(its key)`."""
        if not self.keys:
            return Raw(self.parts[0])
        pieces = [self.parts[0]]
        for key, part in zip(self.keys, self.parts[1:], strict=True):
            pieces += [_dumps(value_of(key)).encode("utf-8"), part]
        return Raw(b"".join(pieces))

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts) + 64 * len(self.keys)


def assemble(status: int, body: Any, gzip: bool) -> Response:
    """`body` may hold Fragments and Raw JSON anywhere a JSON value goes. With `gzip`, the response
    carries the gzip bytes too, built from the fragments' cached deflate streams."""
    inserts: list[Fragment | Raw] = []

    def default(value: Any) -> Any:
        if isinstance(value, (Fragment, Raw)):
            inserts.append(value)
            return f"{_MARK}{len(inserts) - 1}"
        raise TypeError(f"not JSON serializable: {type(value).__name__}")

    text = _dumps(body, default)
    pieces: list[bytes | Fragment] = []  # the response's own text (Raw included) between fragments
    own: list[bytes] = []
    for n, part in enumerate(text.split(f'"{_MARK}')):
        if n > 0:
            index, _, part = part.partition('"')
            insert = inserts[int(index)]
            if isinstance(insert, Raw):
                own.append(insert.json)
            else:
                pieces += [b"".join(own), insert]
                own = []
        own.append(part.encode("utf-8"))
    pieces.append(b"".join(own))
    plain = b"".join(p.json if isinstance(p, Fragment) else p for p in pieces)
    if not gzip or len(pieces) == 1:
        return Response(status, plain)
    stream, crc = [], 0
    for piece in pieces:
        if isinstance(piece, Fragment):
            stream.append(piece.deflated)
            crc = piece.crc_after(crc)
        elif piece:
            stream.append(_deflate_piece(piece, final=False))
            crc = zlib.crc32(piece, crc)
    stream.append(_deflate_piece(b"", final=True))
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, len(plain) & 0xFFFFFFFF)
    return Response(status, plain, gzipped=_GZIP_HEADER + b"".join(stream) + trailer)
