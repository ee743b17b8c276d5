"""Purges started over HTTP run in the background: a purge may take far longer than a request may, so the
request answers 202 with an id at once and the status is read with GET purges/{id}.

Status lives in memory (the running purges and the last KEEP_FINISHED finished ones): a restart forgets it,
and running the purge again finishes what was cut short. One purge of a kind runs per target at a time;
asking again while it runs returns the running one.
"""

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from homeserver.core.work_class import BULK, current_work_class
from homeserver.handlers.admin.purges import Purge, PurgeReport
from homeserver.handlers.batches import Batches, BatchPace, reactor_sleep
from homeserver.storage.database import Database

logger = logging.getLogger(__name__)
KEEP_FINISHED = 100
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PurgeJob:
    purge_id: str
    kind: str
    target: str
    report: PurgeReport = field(default_factory=PurgeReport)
    state: str = RUNNING
    started_ts: int = field(default_factory=_now_ms)
    finished_ts: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "purge_id": self.purge_id,
            "kind": self.kind,
            "target": self.target,
            "state": self.state,
            "phase": self.report.phase,
            "planned": self.report.planned,
            "deleted": self.report.deleted,
            "errors": self.report.errors,
            "started_ts": self.started_ts,
            "finished_ts": self.finished_ts,
        }


class PurgeJobs:
    def __init__(self, reactor: Any, db: Database, pace: BatchPace) -> None:
        self._batches = Batches(db, reactor_sleep(reactor), pace)
        self._jobs: OrderedDict[str, PurgeJob] = OrderedDict()

    def start(self, purge: Purge) -> PurgeJob:
        for job in self._jobs.values():
            if job.state == RUNNING and (job.kind, job.target) == (purge.kind, purge.target):
                return job
        job = PurgeJob(secrets.token_urlsafe(12), purge.kind, purge.target)
        self._jobs[job.purge_id] = job
        # Background work waits behind requests for a database connection, as syncs do.
        mark = current_work_class.set(BULK)
        try:
            defer.ensureDeferred(self._run(job, purge))
        finally:
            current_work_class.reset(mark)
        return job

    def get(self, purge_id: str) -> PurgeJob | None:
        return self._jobs.get(purge_id)

    async def _run(self, job: PurgeJob, purge: Purge) -> None:
        logger.info("purge %s: %s of %s started", job.purge_id, job.kind, job.target)
        try:
            job.report.planned = await purge.plan()
            await purge.run(self._batches, job.report)
            job.state = COMPLETE
        except Exception as e:
            logger.exception("purge %s: %s of %s failed", job.purge_id, job.kind, job.target)
            job.report.errors.append(f"failed: {e}")
            job.state = FAILED
        job.finished_ts = _now_ms()
        logger.info(
            "purge %s: %s of %s %s, %d rows deleted", job.purge_id, job.kind, job.target, job.state,
            job.report.total_deleted,
        )
        finished = [key for key, j in self._jobs.items() if j.state != RUNNING]
        for key in finished[:-KEEP_FINISHED]:
            del self._jobs[key]
