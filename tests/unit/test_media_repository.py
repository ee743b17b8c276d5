"""The media handler, store and files together, transactions inline, on both database engines: what is
kept where, pending uploads, the legacy freeze, quarantine and purges (including a purge racing an upload)."""

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from homeserver.config.options import DatabaseConfig, MediaConfig
from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.batches import Batches, BatchPace, blocking_sleep
from homeserver.handlers.media import MediaHandler, PurgeTotals
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.media import MediaStore
from homeserver.storage.media_files import MediaFiles
from homeserver.storage.migrations import migrate
from tests.inline import resolve

ALICE = Requester("@alice:test.org", "DEV")
BOB = Requester("@bob:test.org", "DEV")
DAY_MS = 86_400_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Repo:
    def __init__(self, db: Database, root: Path, config: MediaConfig) -> None:
        self.db = db
        self.clock = Clock()
        self.files = MediaFiles(root)
        self.store = MediaStore(db)
        self.open = 0
        self.media = MediaHandler("test.org", self.store, self.files, config, clock=self.clock)
        self.media.prepare()

    def incoming(self, data: bytes) -> Any:
        self.open += 1
        incoming = self.media.incoming(self._closed)
        incoming.write(data)
        return incoming

    def _closed(self) -> None:
        self.open -= 1

    def upload(self, data: bytes, content_type: str = "application/octet-stream", name: str | None = None) -> str:
        return resolve(self.media.upload(ALICE, self.incoming(data), content_type, name)).split("/")[-1]

    def read(self, media_id: str, legacy: bool = False) -> bytes:
        return resolve(self.media.content("test.org", media_id, legacy=legacy, timeout_ms=0)).path.read_bytes()

    def purge(self, before_ms: int, dry_run: bool = False, remote_only: bool = False) -> PurgeTotals:
        batches = Batches(self.db, blocking_sleep, BatchPace(size=2, pause_s=0))
        run = self.media.count_purgeable if dry_run else self.media.purge
        return resolve(run(before_ms, remote_only, batches, lambda _: None))

    def content_files(self) -> list[Path]:
        return sorted(p for p in self.files.content.rglob("*") if p.is_file())


@pytest.fixture
def repo(database_section: dict[str, Any], tmp_path: Path) -> Iterator[Repo]:
    config = DatabaseConfig(name=database_section["name"], args=database_section["args"])
    db = Database(create_engine(config), max_connections=2, max_waiting=2)
    resolve(migrate(db))
    yield Repo(db, tmp_path / "media", MediaConfig(max_pending_media_uploads=2))
    db.close()


def error(call: Any) -> tuple[int, str]:
    with pytest.raises(MatrixError) as raised:
        resolve(call)
    return raised.value.code, raised.value.errcode


def test_uploads_are_kept_by_hash_and_identical_content_shares_a_file(repo: Repo) -> None:
    first = repo.upload(b"same bytes", "text/plain", "a.txt")
    second = repo.upload(b"same bytes", "text/plain", "b.txt")
    assert first != second
    assert repo.read(first) == repo.read(second) == b"same bytes"
    assert len(repo.content_files()) == 1
    assert list(repo.files.tmp.iterdir()) == [] and repo.open == 0
    content = resolve(repo.media.content("test.org", second, legacy=False, timeout_ms=0))
    assert (content.content_type, content.upload_name, content.length) == ("text/plain", "b.txt", 10)


def test_ids_that_could_leave_the_media_folder_are_refused(repo: Repo) -> None:
    for server_name, media_id in [
        ("test.org", "../../etc/passwd"),
        ("test.org", ".."),
        ("test.org", "a/b"),
        ("test.org", "a%2Fb"),
        ("test.org", ""),
        ("../test.org", "abc"),
        ("test.org/..", "abc"),
    ]:
        assert error(repo.media.content(server_name, media_id, legacy=False, timeout_ms=0)) == (400, "M_INVALID_PARAM")


def test_unknown_and_remote_media_are_not_found(repo: Repo) -> None:
    assert error(repo.media.content("test.org", "nothing", legacy=False, timeout_ms=0)) == (404, "M_NOT_FOUND")
    assert error(repo.media.content("other.org", "abc", legacy=False, timeout_ms=0)) == (404, "M_NOT_FOUND")


def test_the_legacy_endpoints_serve_only_what_was_uploaded_before_the_freeze(
    database_section: dict[str, Any], tmp_path: Path
) -> None:
    config = DatabaseConfig(name=database_section["name"], args=database_section["args"])
    db = Database(create_engine(config), max_connections=2, max_waiting=2)
    resolve(migrate(db))
    before = Repo(db, tmp_path, MediaConfig(freeze_legacy_media=False))
    old = before.upload(b"old")
    after = Repo(db, tmp_path, MediaConfig(freeze_legacy_media=True))
    new = after.upload(b"new")
    assert after.read(old, legacy=True) == b"old"
    assert error(after.media.content("test.org", new, legacy=True, timeout_ms=0)) == (404, "M_NOT_FOUND")
    assert after.read(new) == b"new"
    db.close()


def test_asynchronous_upload_to_a_created_id(repo: Repo) -> None:
    uri, expires = resolve(repo.media.create(ALICE))
    media_id = uri.split("/")[-1]
    assert uri.startswith("mxc://test.org/") and expires == int(repo.clock.now * 1000) + DAY_MS
    # Not there yet: a download that will not wait is told so.
    assert error(repo.media.content("test.org", media_id, legacy=False, timeout_ms=0)) == (504, "M_NOT_YET_UPLOADED")
    assert error(repo.media.upload_to(BOB, "test.org", media_id, repo.incoming(b"x"), "text/plain", None)) == (
        403,
        "M_FORBIDDEN",
    )
    resolve(repo.media.upload_to(ALICE, "test.org", media_id, repo.incoming(b"later"), "text/plain", "l.txt"))
    assert repo.read(media_id) == b"later"
    assert error(repo.media.upload_to(ALICE, "test.org", media_id, repo.incoming(b"again"), "text/plain", None)) == (
        409,
        "M_CANNOT_OVERWRITE_MEDIA",
    )
    assert error(repo.media.upload_to(ALICE, "test.org", "unknown", repo.incoming(b"x"), "text/plain", None)) == (
        404,
        "M_NOT_FOUND",
    )
    assert repo.open == 0


def test_pending_ids_are_limited_per_user_and_expire(repo: Repo) -> None:
    first, _ = resolve(repo.media.create(ALICE))
    resolve(repo.media.create(ALICE))
    assert error(repo.media.create(ALICE)) == (429, "M_LIMIT_EXCEEDED")
    resolve(repo.media.create(BOB))  # the limit is per user
    repo.clock.now += DAY_MS / 1000 + 1
    resolve(repo.media.create(ALICE))  # the expired ones no longer count
    media_id = first.split("/")[-1]
    assert error(repo.media.upload_to(ALICE, "test.org", media_id, repo.incoming(b"x"), "text/plain", None)) == (
        404,
        "M_NOT_FOUND",
    )
    assert error(repo.media.content("test.org", media_id, legacy=False, timeout_ms=0)) == (404, "M_NOT_FOUND")


def test_quarantined_media_is_not_served(repo: Repo) -> None:
    media_id = repo.upload(b"bad")
    resolve(repo.media.quarantine(f"mxc://test.org/{media_id}", "admin"))
    assert error(repo.media.content("test.org", media_id, legacy=False, timeout_ms=0)) == (404, "M_NOT_FOUND")
    assert error(repo.media.quarantine("mxc://test.org/missing", "admin")) == (404, "M_NOT_FOUND")
    assert error(repo.media.quarantine("https://test.org/x", "admin")) == (400, "M_INVALID_PARAM")


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def test_thumbnails_are_made_once_and_kept(repo: Repo) -> None:
    media_id = repo.upload(_jpeg(1000, 800), "image/jpeg")
    first = resolve(repo.media.thumbnail("test.org", media_id, 90, 90, "crop", legacy=False, timeout_ms=0))
    assert Image.open(first.path).size == (96, 96) and first.content_type == "image/jpeg"
    again = resolve(repo.media.thumbnail("test.org", media_id, 96, 96, "crop", legacy=False, timeout_ms=0))
    assert again.path == first.path
    assert len(repo.content_files()) == 2
    # Small enough already: the original itself.
    small = repo.upload(_jpeg(20, 20), "image/jpeg")
    original = resolve(repo.media.thumbnail("test.org", small, 32, 32, "crop", legacy=False, timeout_ms=0))
    assert original.path.read_bytes() == _jpeg(20, 20)


def test_thumbnails_refuse_what_they_cannot_make(repo: Repo) -> None:
    text = repo.upload(b"hello", "text/plain")
    assert error(repo.media.thumbnail("test.org", text, 32, 32, "crop", legacy=False, timeout_ms=0)) == (
        400,
        "M_UNKNOWN",
    )
    fake = repo.upload(b"not really a png", "image/png")
    assert error(repo.media.thumbnail("test.org", fake, 32, 32, "crop", legacy=False, timeout_ms=0)) == (
        400,
        "M_UNKNOWN",
    )
    image = repo.upload(_jpeg(100, 100), "image/jpeg")
    assert error(repo.media.thumbnail("test.org", image, 32, 32, "zoom", legacy=False, timeout_ms=0)) == (
        400,
        "M_INVALID_PARAM",
    )


def test_purge_deletes_old_items_their_thumbnails_and_unshared_files(repo: Repo) -> None:
    old_ids = [repo.upload(_jpeg(400, 400), "image/jpeg"), repo.upload(b"shared"), repo.upload(b"only old")]
    resolve(repo.media.thumbnail("test.org", old_ids[0], 32, 32, "crop", legacy=False, timeout_ms=0))
    resolve(repo.media.create(ALICE))  # a pending id: purged too, it has no file
    repo.clock.now += 3600
    cutoff = int(repo.clock.now * 1000)
    repo.clock.now += 3600
    kept = repo.upload(b"shared")  # same bytes as an old item: the file must stay
    files_before = repo.content_files()
    dry = repo.purge(cutoff, dry_run=True)
    assert (dry.items, repo.content_files()) == (4, files_before)
    assert dry.bytes > len(_jpeg(400, 400))
    totals = repo.purge(cutoff)
    assert (totals.items, totals.bytes, totals.files) == (dry.items, dry.bytes, 3)
    for media_id in old_ids:
        assert error(repo.media.content("test.org", media_id, legacy=False, timeout_ms=0)) == (404, "M_NOT_FOUND")
    assert repo.read(kept) == b"shared"
    assert len(repo.content_files()) == 1
    assert repo.purge(cutoff).items == 0


def test_remote_only_purge_keeps_local_media(repo: Repo) -> None:
    media_id = repo.upload(b"local")
    assert repo.purge(int(repo.clock.now * 1000) + 1, remote_only=True).items == 0
    assert repo.read(media_id) == b"local"


def test_a_file_set_aside_by_a_purge_comes_back_when_an_upload_names_it_meanwhile(repo: Repo) -> None:
    media_id = repo.upload(b"contested")
    sha = resolve(repo.store.get("test.org", media_id)).sha256
    # The purge found no row naming the file and moved it aside; an upload of the same bytes commits now.
    aside = repo.files.set_aside(sha)
    assert aside is not None and not repo.files.path(sha).exists()
    repo.files.settle(aside, sha, referenced=resolve(repo.store.is_referenced(sha)))
    assert repo.read(media_id) == b"contested"
    assert list(repo.files.tmp.iterdir()) == []


def test_an_upload_puts_its_file_back_if_a_purge_took_it_before_the_row_was_committed(repo: Repo) -> None:
    incoming = repo.incoming(b"racing")
    sha = repo.files.keep(incoming)
    aside = repo.files.set_aside(sha)  # a purge of an older item with these bytes, before our row exists
    assert aside is not None
    repo.files.settle(aside, sha, referenced=False)
    repo.files.ensure_linked(incoming.path, sha)  # what upload does once its row is committed
    incoming.close()
    assert repo.files.path(sha).read_bytes() == b"racing"


def test_stale_temporary_files_are_cleared_at_start(repo: Repo) -> None:
    import os

    stale, fresh = repo.files.tmp / "in-stale", repo.files.tmp / "in-fresh"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (0, 0))
    repo.files.prepare()
    assert not stale.exists() and fresh.exists()
