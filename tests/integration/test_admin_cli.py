"""Admin purges from the command line while the server runs: dry runs, progress, errors, and a purge
killed with SIGKILL between batches that leaves the room readable and finishes when run again."""

import io
import os
import signal
import subprocess
import sys
import time

from homeserver.cli_admin import Progress
from homeserver.handlers.admin.purges import PurgeReport
from tests.client import RoomClient, assert_error, ok, quote
from tests.integration.test_cli import assert_clean_failure, homeserver
from tests.server import ServerProcess


def admin(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return homeserver("admin", *args, "-c", str(server.config_path))


def killed_after(server: ServerProcess, marker: str, *args: str) -> str:
    """Start an admin command, wait for a progress line containing `marker`, then kill -9 it. Returns
    what it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "homeserver", "admin", *args, "-c", str(server.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")},
    )
    assert process.stdout is not None
    printed = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "the command ended before printing progress:\n" + "".join(printed)
            printed.append(line)
            if "rows deleted" in line and marker in line:
                return "".join(printed)
        raise AssertionError("no progress line:\n" + "".join(printed))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def messages_back(client: RoomClient, room_id: str) -> list[str]:
    """The message bodies /messages gives going back from the end until it says there is no more."""
    found, token = [], None
    while True:
        page = ok(client.room_get(room_id, "messages", dir="b", limit=7, **({"from": token} if token else {})))
        found += [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page:
            return found
        token = page["end"]


def state_of(client: RoomClient, room_id: str) -> dict[tuple[str, str], str]:
    return {(e["type"], e["state_key"]): e["event_id"] for e in ok(client.room_get(room_id, "state"))}


def test_purge_history_dry_run_then_run(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    sent = [alice.send_text(room, f"message {i}") for i in range(6)]
    dry = admin(server, "purge-history", room, "--before-event", sent[4], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout and " events " in dry.stdout
    assert [line.split()[-1] for line in dry.stdout.splitlines() if line.split()[0] == "events"] == ["4"]
    assert len(messages_back(bob, room)) == 6

    done = admin(server, "purge-history", room, "--before-event", sent[4], "--batch-size", "2", "--pause-ms", "0")
    assert done.returncode == 0, done.stderr
    assert "rows deleted (events)" in done.stdout and "done: " in done.stdout
    assert messages_back(bob, room) == ["message 5", "message 4"]
    assert ok(bob.get("/_matrix/client/v3/sync"))["rooms"]["join"][room]["timeline"]["events"]


def test_a_history_purge_killed_between_batches_finishes_when_run_again(
    server: ServerProcess, alice: RoomClient, bob: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat", name="kill me softly")
    sent = [alice.send_text(room, f"message {i}") for i in range(20)]
    other = alice.create_room()
    other_sent = [alice.send_text(other, f"other {i}") for i in range(3)]
    state = state_of(alice, room)

    purge = ["purge-history", room, "--before-event", sent[12], "--batch-size", "1", "--pause-ms", "500"]
    killed_after(server, "(events)", *purge)
    left = messages_back(alice, room)  # readable, without errors, between two batches
    assert left[:8] == [f"message {i}" for i in reversed(range(12, 20))]
    assert 0 < len(left) - 8 < 12
    assert state_of(alice, room) == state
    bob.join(room)
    bob.send_text(room, "joined mid-purge")

    again = admin(server, *purge[:-4], "--batch-size", "3", "--pause-ms", "0")
    assert again.returncode == 0, again.stderr
    assert messages_back(alice, room) == ["joined mid-purge", *(f"message {i}" for i in reversed(range(12, 20)))]
    assert state_of(alice, room) == {**state, ("m.room.member", bob.user_id): state_of(alice, room)[
        ("m.room.member", bob.user_id or "")]}
    assert messages_back(alice, other) == [f"other {i}" for i in reversed(range(3))]
    assert ok(alice.room_get(other, f"event/{quote(other_sent[0])}"))["content"]["body"] == "other 0"


def test_a_room_deletion_killed_between_batches_finishes_when_run_again(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    for i in range(5):
        alice.send_text(room, f"message {i}")
    other = alice.create_room(preset="public_chat")
    alice.send_text(other, "survivor")

    killed_after(server, "(events)", "delete-room", room, "--batch-size", "1", "--pause-ms", "500")
    body = assert_error(carol.post(f"/_matrix/client/v3/join/{quote(room)}", {}), 403, "M_FORBIDDEN")
    assert body["error"] == "This room is being deleted"
    stats = admin(server, "statistics")
    assert f"unfinished deletion of {room}" in stats.stdout

    again = admin(server, "delete-room", room, "--batch-size", "4", "--pause-ms", "0")
    assert again.returncode == 0, again.stderr
    assert_error(carol.post(f"/_matrix/client/v3/join/{quote(room)}", {}), 404, "M_NOT_FOUND")
    for client in (alice, bob):
        assert room not in ok(client.get("/_matrix/client/v3/joined_rooms"))["joined_rooms"]
    assert messages_back(alice, other) == ["survivor"]
    assert_clean_failure(admin(server, "delete-room", room), "Unknown room")


def test_purge_errors_are_one_line_and_exit_2(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    event = alice.send_text(alice.create_room(), "elsewhere")
    assert_clean_failure(admin(server, "purge-history", "!nope:localhost", "--before", "0"), "Unknown room")
    assert_clean_failure(admin(server, "purge-history", room, "--before", "last week"), "--before", "ISO")
    assert_clean_failure(admin(server, "purge-history", room, "--before-event", event), "Unknown event")
    assert_clean_failure(admin(server, "purge-push-actions", "--user", "nobody"), "Unknown user")
    assert_clean_failure(admin(server, "purge-push-actions", "--user", "@x:elsewhere.org"), "not on this server")
    assert_clean_failure(admin(server, "deactivate-user", "nobody"), "Unknown user")
    assert_clean_failure(admin(server, "set-admin", "nobody"), "Unknown user")
    assert_clean_failure(admin(server, "statistics", "--room", "!nope:localhost"), "Unknown room")
    usage = admin(server, "purge-history", room)  # argparse: one of --before and --before-event
    assert usage.returncode == 2 and "--before" in usage.stderr


def test_purge_history_before_an_iso_date(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    alice.send_text(room, "old")
    dry = admin(server, "purge-history", room, "--before", "2001-01-01", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 0 rows" in dry.stdout
    everything = admin(server, "purge-history", room, "--before", "2999-01-01T00:00:00+00:00", "--pause-ms", "0")
    assert everything.returncode == 0, everything.stderr
    assert messages_back(alice, room) == ["old"]  # the newest event stays: new ones are built on it
    alice.send_text(room, "new")


def test_deactivate_user_and_statistics(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    result = admin(server, "deactivate-user", bob.user_id or "")
    assert result.returncode == 0, result.stderr
    assert "left 1 room(s)" in result.stdout
    # (A running server may accept a token it has cached for up to a minute; logging in fails at once.)
    assert_error(RoomClient(server.url).login(bob.user_id or ""), 403)
    assert bob.user_id not in ok(alice.room_get(room, "joined_members"))["joined"]

    stats = admin(server, "statistics", "--exact")
    assert stats.returncode == 0, stats.stderr
    assert "(rows counted)" in stats.stdout and "biggest rooms:" in stats.stdout
    assert any(line.split()[0] == "events" for line in stats.stdout.splitlines() if line.strip())
    detail = admin(server, "statistics", "--room", room)
    assert detail.returncode == 0, detail.stderr
    assert "memberships: join 1, leave 1" in detail.stdout


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    report = PurgeReport(planned={"events": 100})
    terminal = Terminal()
    bar = Progress(100, terminal)
    for n in (10, 50):
        report.add("events", {"events": n})
        bar.update(report)
    bar.finish()
    assert terminal.getvalue().split("\r")[-1] == f"[{'#' * 18}{'-' * 12}] 60/100 rows  events              \n"

    log, now = io.StringIO(), [0.0]
    plain = Progress(100, log, clock=lambda: now[0])
    report = PurgeReport(planned={"events": 100, "state_groups": 10})
    for step, (phase, n) in enumerate([("events", 1), ("events", 1), ("events", 1), ("state_groups", 1)]):
        now[0] = step * 1.5
        report.add(phase, {phase: n})
        plain.update(report)
    assert log.getvalue().splitlines() == [
        "1/100 rows deleted (events)",  # the first batch at once
        "3/100 rows deleted (events)",  # then every 2 s
        "4/100 rows deleted (state_groups)",  # and at every new table
    ]
