"""The media store on disk: files named by the sha256 of their bytes, so identical uploads (and thumbnails)
share one file and no name a client sends ever becomes part of a path.

    <media_store_path>/content/ab/cd/abcd0123...   the bytes, by hash
    <media_store_path>/tmp/                         uploads being received, thumbnails being written

A file is written under tmp/, fsynced, then hard-linked to its final name (and the folder fsynced), so a
crash leaves either no file or a whole one. Every method here does blocking I/O: callers on the reactor
run them in a thread, except `IncomingFile.write` and `close`, called on the reactor as bytes arrive and
when the request ends (buffered writes the page cache absorbs, an unlink).

Files are shared, so deleting one must not race a new item that names it. An upload links its file into
place, commits its row, then makes sure the link is still there (relinking from its temporary file if a
purge took it meanwhile); a purge renames an unreferenced file aside, asks the database again, and puts it
back if an item appeared. Either the upload sees the file gone and relinks, or the purge sees the item.
"""

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
WRITE_BUFFER = 256 * 1024
STALE_TMP_S = 3600  # a temporary file not written to for this long was left by a crash


class IncomingFile:
    """Bytes being received into a temporary file, hashed as they arrive. `close()` always removes the
    temporary file; what is kept has been linked to its final name by then."""

    def __init__(self, tmp_dir: Path, on_close: Callable[[], None]) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="in-")
        self._on_close = on_close
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER)
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def flush_to_disk(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        finally:
            self._on_close()


class MediaFiles:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.content = self.root / "content"
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Create the folders, and clear temporary files a crash left behind (those written to lately may
        belong to another process: an admin command)."""
        self.content.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        stale = time.time() - STALE_TMP_S
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < stale:
                    leftover.unlink()

    def path(self, sha: str) -> Path:
        if not _SHA256.match(sha):
            raise ValueError(f"not a sha256: {sha!r}")
        return self.content / sha[:2] / sha[2:4] / sha

    def incoming(self, on_close: Callable[[], None]) -> IncomingFile:
        return IncomingFile(self.tmp, on_close)

    def keep(self, incoming: IncomingFile) -> str:
        """Make the received bytes durable under their hash; returns the hash. The temporary file stays
        until `close`, for `ensure_linked`."""
        incoming.flush_to_disk()
        sha = incoming.sha256()
        self._link(incoming.path, self.path(sha))
        return sha

    def keep_bytes(self, data: bytes) -> tuple[str, Path]:
        """Write `data` (a thumbnail) to a temporary file and link it under its hash: (hash, temporary
        file, for `ensure_linked` and then removal by the caller)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="thumb-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        sha = hashlib.sha256(data).hexdigest()
        self._link(Path(name), self.path(sha))
        return sha, Path(name)

    def ensure_linked(self, source: Path, sha: str) -> None:
        """After the row naming `sha` is committed: put the file back if a purge took it in between."""
        target = self.path(sha)
        if not target.exists():
            self._link(source, target)

    def _link(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:
            return  # the same bytes are there already
        _fsync_dir(target.parent)

    def set_aside(self, sha: str) -> Path | None:
        """First step of deleting a file no row named when the caller looked: move it out of the way
        (None if it is gone already). The caller then asks the database again and calls `settle`."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        aside = self.tmp / f"purge-{sha}-{secrets.token_hex(4)}"
        try:
            os.replace(self.path(sha), aside)
        except FileNotFoundError:
            return None
        return aside

    def settle(self, aside: Path, sha: str, referenced: bool) -> None:
        """Delete a file set aside, putting it back first if a row names it after all."""
        if referenced:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path(sha))
        aside.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
