"""Purges: POST rooms/{roomId}/purge_history, DELETE rooms/{roomId}, POST push_actions/purge, and
GET purges/{purgeId}. A dry run answers 200 with the counts it would delete; a real purge answers 202
with an id at once and runs in the background."""

from homeserver.api.admin.auth import PREFIX, require_admin
from homeserver.core.errors import MatrixError
from homeserver.handlers.admin.jobs import PurgeJobs
from homeserver.handlers.admin.purges import Purge, PurgeHandler
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.routing import Endpoint


async def _plan_or_start(jobs: PurgeJobs, purge: Purge, dry_run: bool) -> tuple[int, dict]:
    if dry_run:
        return 200, {"dry_run": True, "counts": await purge.plan()}
    return 202, {"purge_id": jobs.start(purge).purge_id}


class PurgeHistory(Endpoint):
    method, path = "POST", PREFIX + "/rooms/{room_id}/purge_history"

    def __init__(self, purges: PurgeHandler, jobs: PurgeJobs) -> None:
        self._purges = purges
        self._jobs = jobs

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        await require_admin(request)
        body = request.json_object()
        purge = await self._purges.history(
            room_id, optional_field(body, "before_ts", int), optional_field(body, "before_event_id")
        )
        return await _plan_or_start(self._jobs, purge, optional_field(body, "dry_run", bool, False))


class DeleteRoom(Endpoint):
    method, path = "DELETE", PREFIX + "/rooms/{room_id}"

    def __init__(self, purges: PurgeHandler, jobs: PurgeJobs) -> None:
        self._purges = purges
        self._jobs = jobs

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await require_admin(request)
        body = request.json_object(empty_ok=True)
        purge = await self._purges.room_deletion(
            room_id, requester.user_id, optional_field(body, "block", bool, False)
        )
        return await _plan_or_start(self._jobs, purge, optional_field(body, "dry_run", bool, False))


class PurgePushActions(Endpoint):
    method, path = "POST", PREFIX + "/push_actions/purge"

    def __init__(self, purges: PurgeHandler, jobs: PurgeJobs) -> None:
        self._purges = purges
        self._jobs = jobs

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await require_admin(request)
        body = request.json_object()
        purge = await self._purges.push_actions(optional_field(body, "user_id"), optional_field(body, "room_id"))
        return await _plan_or_start(self._jobs, purge, optional_field(body, "dry_run", bool, False))


class PurgeStatus(Endpoint):
    method, path = "GET", PREFIX + "/purges/{purge_id}"

    def __init__(self, jobs: PurgeJobs) -> None:
        self._jobs = jobs

    async def handle(self, request: ApiRequest, purge_id: str) -> tuple[int, dict]:
        await require_admin(request)
        job = self._jobs.get(purge_id)
        if job is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown purge (purges are forgotten when the server restarts)")
        return 200, job.to_json()


def endpoints(purges: PurgeHandler, jobs: PurgeJobs) -> list[Endpoint]:
    return [
        PurgeHistory(purges, jobs),
        DeleteRoom(purges, jobs),
        PurgePushActions(purges, jobs),
        PurgeStatus(jobs),
    ]
