"""Admin commands that purge, delete, deactivate and count, on the config's database (the server may be
running). Purges run inline in keyed batches with a pause between them and show their progress; one cut
short (Ctrl-C, kill -9) leaves the database consistent and is finished by running the command again."""

import argparse
import datetime
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from homeserver.cli import Fatal, localpart_of, open_for_admin, resolve
from homeserver.core.errors import MatrixError
from homeserver.handlers.admin.purges import Purge, PurgeReport
from homeserver.handlers.batches import Batches, BatchPace, blocking_sleep

EXIT_INCOMPLETE = 1  # the purge finished with errors to look at (a member that could not leave)
PLAIN_EVERY_S = 2.0  # progress lines when stdout is not a terminal


def add_commands(admin_sub: Any) -> None:
    history = admin_sub.add_parser(
        "purge-history", help="delete a room's events before a time or an event; its state and what it needs stay"
    )
    history.add_argument("room_id")
    cut = history.add_mutually_exclusive_group(required=True)
    cut.add_argument(
        "--before",
        metavar="TIME",
        help="events sent before TIME: milliseconds since 1970, or an ISO date or time (UTC unless it says)",
    )
    cut.add_argument("--before-event", metavar="EVENT_ID", help="events before this event of the room")
    _purge_options(history, cmd_purge_history)

    room = admin_sub.add_parser("delete-room", help="make local members leave, then delete everything of a room")
    room.add_argument("room_id")
    room.add_argument("--block", action="store_true", help="refuse joins, invites and knocks to the room from now on")
    _purge_options(room, cmd_delete_room)

    push = admin_sub.add_parser("purge-push-actions", help="delete the push actions (notifications) of a user or room")
    who = push.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="localpart or user id: all their push actions, every room")
    who.add_argument("--room", help="room id: every member's push actions in the room")
    _purge_options(push, cmd_purge_push_actions)

    deactivate = admin_sub.add_parser("deactivate-user", help="deactivate an account and make it leave its rooms")
    deactivate.add_argument("name", help="localpart or user id")
    deactivate.add_argument("--keep-rooms", action="store_true", help="do not make the user leave their rooms")
    _config_option(deactivate, cmd_deactivate_user)

    admin = admin_sub.add_parser("set-admin", help="give an existing account the admin flag (or take it away)")
    admin.add_argument("name", help="localpart or user id")
    admin.add_argument("--revoke", action="store_true", help="take the admin flag away")
    _config_option(admin, cmd_set_admin)

    stats = admin_sub.add_parser("statistics", help="rows per table and the biggest rooms, or one room's figures")
    stats.add_argument("--room", help="show this room: size, members, rows per table")
    stats.add_argument("--rooms", type=_positive, default=10, metavar="N", help="biggest rooms to list (default 10)")
    stats.add_argument("--exact", action="store_true", help="count rows on PostgreSQL instead of its estimates")
    _config_option(stats, cmd_statistics)


def _config_option(parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], None]) -> None:
    parser.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    parser.set_defaults(command_fn=command)


def _purge_options(parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], None]) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, per table; change nothing")
    parser.add_argument(
        "--batch-size", type=_positive, metavar="N", help="rows per transaction (default: push.prune_batch_size)"
    )
    parser.add_argument(
        "--pause-ms", type=_non_negative, metavar="MS", help="pause between batches (default: push.prune_pause_ms)"
    )
    _config_option(parser, command)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def timestamp_ms(text: str) -> int:
    """Milliseconds since 1970 from a number of them or an ISO 8601 date or time (UTC when it has no offset)."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise Fatal(
            f"--before: {text!r} is neither milliseconds since 1970 nor an ISO date or time "
            "(2024-01-31, 2024-01-31T12:00:00+01:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0, int(when.timestamp() * 1000))


def _call(awaitable: Awaitable[Any]) -> Any:
    """Run a handler call inline; a Matrix error (unknown room, bad event id, ...) is one line, exit 2."""
    try:
        return resolve(awaitable)
    except MatrixError as e:
        raise Fatal(e.msg) from None


def _user_id(name: str, server_name: str) -> str:
    return f"@{localpart_of(name, server_name)}:{server_name}"


# -- purges -------------------------------------------------------------------------------------


def cmd_purge_history(args: argparse.Namespace) -> None:
    before_ts = timestamp_ms(args.before) if args.before is not None else None
    _run_purge(args, lambda hs: hs.purges.history(args.room_id, before_ts, args.before_event))


def cmd_delete_room(args: argparse.Namespace) -> None:
    _run_purge(args, lambda hs: hs.purges.room_deletion(args.room_id, "admin command line", args.block))


def cmd_purge_push_actions(args: argparse.Namespace) -> None:
    def make(hs: Any) -> Awaitable[Purge]:
        user_id = _user_id(args.user, hs.config.server_name) if args.user else None
        return hs.purges.push_actions(user_id, args.room)

    _run_purge(args, make)


def _run_purge(args: argparse.Namespace, make: Callable[[Any], Awaitable[Purge]]) -> None:
    hs = open_for_admin(args.config)
    purge: Purge = _call(make(hs))
    report = PurgeReport(planned=_call(purge.plan()))
    if args.dry_run:
        print(f"dry run: {_describe(purge)} would delete {report.total_planned:,} rows:")
        _print_counts(report.planned)
        return
    push = hs.config.push
    pause_ms = args.pause_ms if args.pause_ms is not None else push.prune_pause_ms
    pace = BatchPace(args.batch_size or push.prune_batch_size, pause_ms / 1000)
    progress = Progress(report.total_planned)
    report.on_change = progress.update
    print(f"{_describe(purge)}: {report.total_planned:,} rows in batches of {pace.size}", flush=True)
    _call(purge.run(Batches(hs.db, blocking_sleep, pace), report))
    progress.finish()
    print(f"done: {report.total_deleted:,} rows deleted")
    _print_counts(report.deleted)
    for error in report.errors:
        print(f"homeserver: {error}", file=sys.stderr)
    if report.errors:
        sys.exit(EXIT_INCOMPLETE)


def _describe(purge: Purge) -> str:
    return f"{purge.kind.replace('_', ' ')} of {purge.target}"


def _print_counts(counts: dict[str, int]) -> None:
    for table, n in counts.items():
        print(f"  {table:24} {n:>12,}")


class Progress:
    """A bar with counts on a terminal; elsewhere (a log, a pipe) a plain line after the first batch, at
    every new phase, and at most every PLAIN_EVERY_S seconds in between."""

    WIDTH = 30

    def __init__(self, total: int, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.clock = clock
        self._last: float | None = None
        self._phase = ""

    def update(self, report: PurgeReport) -> None:
        done = report.total_deleted
        if self.tty:
            filled = self.WIDTH if not self.total else min(self.WIDTH, self.WIDTH * done // self.total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {done:,}/{self.total:,} rows  {report.phase:<20}")
            self.out.flush()
            return
        now = self.clock()
        if self._last is None or report.phase != self._phase or now - self._last >= PLAIN_EVERY_S:
            self._last, self._phase = now, report.phase
            print(f"{done:,}/{self.total:,} rows deleted ({report.phase})", file=self.out, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


# -- accounts -----------------------------------------------------------------------------------


def cmd_deactivate_user(args: argparse.Namespace) -> None:
    hs = open_for_admin(args.config)
    user_id = _user_id(args.name, hs.config.server_name)
    done = _call(hs.admin_users.deactivate(user_id, leave_rooms=not args.keep_rooms))
    print(f"deactivated {user_id}; left {len(done.rooms_left)} room(s)")
    for error in done.errors:
        print(f"homeserver: could not leave {error}", file=sys.stderr)
    if done.errors:
        sys.exit(EXIT_INCOMPLETE)


def cmd_set_admin(args: argparse.Namespace) -> None:
    hs = open_for_admin(args.config)
    user_id = _user_id(args.name, hs.config.server_name)
    _call(hs.admin_users.set_admin(user_id, not args.revoke))
    print(f"{user_id} is {'no longer' if args.revoke else 'now'} an admin")


# -- statistics ---------------------------------------------------------------------------------


def cmd_statistics(args: argparse.Namespace) -> None:
    hs = open_for_admin(args.config)
    if args.room:
        room = _call(hs.admin_statistics.room(args.room))
        marks = [mark for mark, on in (("blocked", room["blocked"]), ("being deleted", room["deleting"])) if on]
        print(f"room {room['room_id']}" + "".join(f" ({mark})" for mark in marks))
        print(f"  events {room['events']:,}, state groups {room['state_groups']:,}, joined {room['joined_members']:,}")
        print("  memberships: " + (", ".join(f"{k} {v:,}" for k, v in room["memberships"].items()) or "none"))
        print("rows per table:")
        _print_counts(room["rows"])
        return
    stats = _call(hs.admin_statistics.overview(args.exact, args.rooms))
    db = stats["database"]
    how = "estimated" if db["rows_estimated"] else "counted"
    print(f"database: {db['engine']}, {_size(db['size_bytes'])} (rows {how})")
    print(f"  {'table':28} {'rows':>12} {'size':>10}")
    for name, table in stats["tables"].items():
        size = _size(table["bytes"]) if table["bytes"] is not None else ""
        print(f"  {name:28} {table['rows']:>12,} {size:>10}")
    print("biggest rooms:")
    print(f"  {'room id':44} {'events':>10} {'state groups':>12} {'joined':>7}")
    for room in stats["biggest_rooms"]:
        print(f"  {room['room_id']:44} {room['events']:>10,} {room['state_groups']:>12,} {room['joined_members']:>7,}")
    for deletion in stats["room_deletions"]:
        print(f"unfinished deletion of {deletion['room_id']} (run delete-room again to finish it)")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
