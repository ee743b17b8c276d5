"""`homeserver admin purge-media` and `homeserver admin quarantine-media`: the operator's media commands.
They work on the config's database and media store directly, as the other admin commands do, and may run
while the server is up: a purge goes in keyed batches with a pause between them."""

import argparse
import datetime
import re
import sys
from typing import Any

from homeserver.cli import Fatal, open_for_admin, resolve
from homeserver.core.errors import MatrixError
from homeserver.handlers.batches import Batches, BatchPace, blocking_sleep
from homeserver.handlers.media import PurgeTotals

_DAYS_AGO = re.compile(r"^(\d+)d$")


def add_commands(admin_sub: Any) -> None:
    purge = admin_sub.add_parser(
        "purge-media", help="delete media created before a date, with thumbnails and the files no other item uses"
    )
    purge.add_argument(
        "--before", required=True, type=_timestamp_ms, help="a date (2024-05-31), a UTC time (2024-05-31T12:00) or 30d"
    )
    purge.add_argument("--remote-only", action="store_true", help="only media cached from other servers")
    purge.add_argument("--dry-run", action="store_true", help="count what would go and change nothing")
    purge.add_argument("--batch-size", type=int, default=100, help="items per transaction (default: 100)")
    purge.add_argument("--pause-ms", type=int, default=50, help="pause between batches (default: 50)")
    purge.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    purge.set_defaults(command_fn=cmd_purge_media)

    quarantine = admin_sub.add_parser("quarantine-media", help="stop serving one media item (it answers 404)")
    quarantine.add_argument("mxc", help="the item, as mxc://server/media_id")
    quarantine.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    quarantine.set_defaults(command_fn=cmd_quarantine_media)


def _timestamp_ms(value: str) -> int:
    if m := _DAYS_AGO.match(value):
        moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=int(m.group(1)))
    else:
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a date, a time or a number of days (30d)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _megabytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


def cmd_purge_media(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.pause_ms < 0:
        raise Fatal("purge-media: --batch-size must be at least 1 and --pause-ms not negative")
    hs = open_for_admin(args.config)
    batches = Batches(hs.db, blocking_sleep, BatchPace(args.batch_size, args.pause_ms / 1000))
    verb = "would delete" if args.dry_run else "deleted"

    def progress(totals: PurgeTotals) -> None:
        print(f"... {verb} {totals.items} item(s), {_megabytes(totals.bytes)}", file=sys.stderr, flush=True)

    run = hs.media.count_purgeable if args.dry_run else hs.media.purge
    totals = resolve(run(args.before, args.remote_only, batches, progress))
    when = datetime.datetime.fromtimestamp(args.before / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    scope = "remote media" if args.remote_only else "media"
    files = "" if args.dry_run else f", {totals.files} file(s) removed"
    print(f"{verb} {totals.items} item(s) of {scope} created before {when}: {_megabytes(totals.bytes)}{files}")


def cmd_quarantine_media(args: argparse.Namespace) -> None:
    hs = open_for_admin(args.config)
    try:
        resolve(hs.media.quarantine(args.mxc, "admin command"))
    except MatrixError as e:
        raise Fatal(f"quarantine-media: {args.mxc}: {e.msg}") from None
    print(f"quarantined {args.mxc}: it is no longer served")
