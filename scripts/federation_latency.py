#!/usr/bin/env python3
"""Loopback federation latency between our server and a real Synapse, both ways (docs/benchmarks.md).

    .venv/bin/python scripts/federation_latency.py                       # our side on SQLite, 200 each way
    .venv/bin/python scripts/federation_latency.py --database postgres \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/postgres     # a fresh database, dropped afterwards

It starts our server (this tree, with an HTTPS federation listener) and a Synapse (the test harness's
pinned version, from HS_TEST_SYNAPSE_VENV or built on first use), both on loopback with self-signed
certificates, as tests/federation_servers.py and tests/synapse.py do. A user of ours creates a room and a
Synapse user joins it. Then it sends N messages from our side, one at a time, each timed from just before
the send request to the moment the other user's /sync long-poll returns it; then N from Synapse's side.
The latency is what a user sees: the sender's request, the outgoing transaction, the receiver's intake and
the receiver's sync wake-up. The last column is the same message reaching the sender's own /sync: the
sending server's part alone. Both servers share the machine, so it is an upper bound on loopback.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from loadtest import machine_description  # noqa: E402

from tests.client import RoomClient, new_room_user, ok, quote  # noqa: E402
from tests.federation_servers import FederatingServer, federating_server  # noqa: E402
from tests.server import POSTGRES_ENV  # noqa: E402
from tests.synapse import SYNAPSE_VERSION, SynapseProcess, running_synapse  # noqa: E402

WARMUP = 5  # messages each way before timing: first key fetches and connections are not steady state
ARRIVAL_TIMEOUT_S = 60.0


class Arrivals:
    """A /sync long-poll loop for one user in a thread, noting when each message body first arrives."""

    def __init__(self, user: RoomClient, room_id: str) -> None:
        # A client of its own: a requests session is not shared between threads.
        self._client = RoomClient(user.base_url, user.access_token)
        self._filter = json.dumps(
            {
                "room": {"rooms": [room_id], "timeline": {"limit": 100}, "state": {"types": []}},
                "presence": {"types": []},
                "account_data": {"types": []},
            }
        )
        self._room_id = room_id
        self._seen: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stopping = False
        self._since = ok(self._client.get("/_matrix/client/v3/sync", params={"timeout": 0}))["next_batch"]
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            params = {"timeout": 20_000, "since": self._since, "filter": self._filter}
            try:
                answer = ok(self._client.get("/_matrix/client/v3/sync", params=params))
            except Exception:
                if self._stopping:  # the servers went away under the last long-poll
                    return
                raise
            now = time.monotonic()
            self._since = answer["next_batch"]
            room = answer.get("rooms", {}).get("join", {}).get(self._room_id, {})
            with self._changed:
                for event in room.get("timeline", {}).get("events", []):
                    body = event["content"].get("body") if event["type"] == "m.room.message" else None
                    if body is not None:
                        self._seen.setdefault(body, now)
                self._changed.notify_all()

    def wait_for(self, body: str) -> float:
        with self._changed:
            if not self._changed.wait_for(lambda: body in self._seen, ARRIVAL_TIMEOUT_S):
                raise SystemExit(f"{body!r} did not arrive within {ARRIVAL_TIMEOUT_S}s")
            return self._seen[body]

    def stop(self) -> None:
        self._stopping = True  # the loop ends after its current long-poll


def one_way(
    sender: RoomClient, at_sender: Arrivals, at_receiver: Arrivals, room_id: str, label: str, count: int
) -> tuple[list[float], list[float]]:
    """Milliseconds from send to the receiver's sync, and to the sender's own sync (the same server's part,
    for comparison), per message, sent one at a time."""
    remote, local = [], []
    for i in range(WARMUP + count):
        body = f"{label} {i}"
        started = time.monotonic()
        sender.send_text(room_id, body)
        arrived = at_receiver.wait_for(body)
        if i >= WARMUP:
            remote.append((arrived - started) * 1000)
            local.append((at_sender.wait_for(body) - started) * 1000)
    return remote, local


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(direction: str, remote: list[float], local: list[float]) -> str:
    return (
        f"| {direction} | {len(remote)} | {statistics.median(remote):.1f} | {percentile(remote, 0.95):.1f}"
        f" | {max(remote):.1f} | {statistics.median(local):.1f} |"
    )


@contextmanager
def peers(database: str, directory: Path) -> Iterator[tuple[FederatingServer, SynapseProcess]]:
    (directory / "ours").mkdir()
    (directory / "synapse").mkdir()
    with running_synapse(directory / "synapse") as synapse, federating_server(database, directory / "ours") as ours:
        yield ours, synapse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200, help="timed messages each way (default 200)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite", help="our server's database")
    parser.add_argument("--postgres-url", help="PostgreSQL server for the new database")
    args = parser.parse_args()
    if args.database == "postgres":
        if not (args.postgres_url or os.environ.get(POSTGRES_ENV)):
            parser.error("--database postgres needs --postgres-url")
        os.environ.setdefault(POSTGRES_ENV, args.postgres_url or "")
    warnings.filterwarnings("ignore", message="Unverified HTTPS request")  # the peers' self-signed certificates

    with (
        tempfile.TemporaryDirectory(prefix="federation-latency-") as tmp,
        peers(args.database, Path(tmp)) as (
            ours,
            synapse,
        ),
    ):
        alice = new_room_user(ours.url)
        room_id = alice.create_room(preset="public_chat")
        sam = synapse.register()
        ok(sam.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}, params={"server_name": ours.server_name}))
        at_ours, at_synapse = Arrivals(alice, room_id), Arrivals(sam, room_id)
        outgoing = one_way(alice, at_ours, at_synapse, room_id, "ours->synapse", args.messages)
        incoming = one_way(sam, at_synapse, at_ours, room_id, "synapse->ours", args.messages)
        at_ours.stop()
        at_synapse.stop()

    print(f"machine: {machine_description()}")
    print(f"our database: {args.database}; Synapse {SYNAPSE_VERSION} on SQLite; both on loopback (HTTPS)")
    print("| direction | messages | p50 ms | p95 ms | max ms | sender's own sync p50 ms |")
    print("|---|---|---|---|---|---|")
    print(summary("ours -> Synapse", *outgoing))
    print(summary("Synapse -> ours", *incoming))


if __name__ == "__main__":
    main()
