"""One HTTP pusher: sends its user's notifications to a push gateway, one at a time and in order.

The pusher's position (`last_stream_ordering`) moves past a notification only once the gateway took it
(a 2xx), refused it for good (another 4xx), or it has failed for longer than the retry policy allows;
so a restart resumes where the pusher stopped, and a gateway that is down for a while gets the backlog
in order when it returns. Failures (no answer, 5xx, 408, 429) are retried with exponential backoff.
A gateway that lists the pushkey as `rejected` ends the pusher, as the spec asks.
"""

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task

from homeserver.core.work_class import BULK, current_work_class
from homeserver.handlers.pushers.gateway import GatewayClient, GatewayUnavailable
from homeserver.handlers.pushers.notification import NotificationBuilder
from homeserver.storage.database import DatabaseBusy
from homeserver.storage.pushers import PendingPush, PusherKey, PusherRecord, PusherStore

logger = logging.getLogger(__name__)

BATCH = 50  # pending notifications read per transaction


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 1.0
    max_s: float = 600.0
    # After failing this long, a notification is dropped (logged) and the pusher moves on to the next, so
    # one the gateway cannot take does not hold up the rest for ever.
    give_up_after_s: float = 24 * 3600.0


class Outcome(enum.Enum):
    SENT = "sent"
    SKIPPED = "skipped"  # nothing to send (event gone), or the gateway refused it for good
    RETRY = "retry"
    REJECTED = "rejected"


class HttpPusher:
    def __init__(
        self,
        record: PusherRecord,
        store: PusherStore,
        notifications: NotificationBuilder,
        gateway: GatewayClient,
        reactor: Any,
        retry: RetryPolicy,
        on_gone: Callable[["HttpPusher"], None],
    ) -> None:
        self.record = record
        self._store = store
        self._notifications = notifications
        self._gateway = gateway
        self._reactor = reactor
        self._retry = retry
        self._on_gone = on_gone
        self._url: str = record.data["url"]
        self._position = record.last_stream_ordering
        self._failing_since = record.failing_since  # ms
        self._wanted = False
        self._running = False
        self._sleeping: defer.Deferred | None = None
        self.stopped = False

    @property
    def key(self) -> PusherKey:
        return self.record.key

    def wake(self) -> None:
        """There may be new notifications: look, now or as soon as the current round ends."""
        if self.stopped:
            return
        self._wanted = True
        if not self._running:
            self._running = True
            defer.ensureDeferred(self._run())

    def stop(self) -> None:
        self.stopped = True
        if self._sleeping is not None:
            self._sleeping.cancel()

    async def _run(self) -> None:
        current_work_class.set(BULK)  # live requests get database connections first
        delay = self._retry.initial_s
        try:
            while self._wanted and not self.stopped:
                self._wanted = False
                try:
                    await self._send_pending()
                    delay = self._retry.initial_s
                except defer.CancelledError:
                    return  # stopped while waiting
                except Exception as e:  # the database refused or failed: look again later
                    busy = isinstance(e, DatabaseBusy)  # expected under load, unlike any other error
                    logger.log(
                        logging.WARNING if busy else logging.ERROR,
                        "pusher of %s (%s) failed; retrying in %.0f s",
                        *self._who(),
                        delay,
                        exc_info=not busy,
                    )
                    self._wanted = True
                    await self._sleep(delay)
                    delay = min(delay * 2, self._retry.max_s)
        except defer.CancelledError:
            pass
        finally:
            self._running = False

    async def _send_pending(self) -> None:
        while not self.stopped:
            pending = await self._store.pending_pushes(self.key, self._position, BATCH)
            if pending is None:
                self._gone()
                return
            if not pending:
                return
            for push in pending:
                if not await self._deliver(push):
                    return

    async def _deliver(self, push: PendingPush) -> bool:
        """Send one notification until it is done with; False when the pusher has ended."""
        delay = self._retry.initial_s
        while not self.stopped:
            outcome = await self._attempt(push)
            if outcome is Outcome.REJECTED:
                logger.info("push gateway rejected pushkey of %s (%s); removing the pusher", *self._who())
                await self._store.delete_pusher(self.key)
                self._gone()
                return False
            if outcome is not Outcome.RETRY:
                return await self._advance(push, self._now_ms() if outcome is Outcome.SENT else None)
            now_ms = self._now_ms()
            if self._failing_since is None:
                self._failing_since = now_ms
                await self._store.set_failing_since(self.key, now_ms)
            elif now_ms - self._failing_since >= self._retry.give_up_after_s * 1000:
                logger.warning("giving up on a notification (%s) for %s (%s)", push.event_id, *self._who())
                return await self._advance(push, None)
            await self._sleep(delay)
            delay = min(delay * 2, self._retry.max_s)
            if not await self._store.exists(self.key):  # its device logged out while the gateway was down
                self._gone()
        return False

    async def _attempt(self, push: PendingPush) -> Outcome:
        body = await self._notifications.build(self.record, push)
        if body is None:
            return Outcome.SKIPPED
        try:
            answer = await self._gateway.post(self._url, body)
        except GatewayUnavailable as e:
            logger.info("push gateway %s for %s unavailable: %s", self._url, self.key.user_id, e)
            return Outcome.RETRY
        if 200 <= answer.status < 300:
            rejected = answer.body.get("rejected") if isinstance(answer.body, dict) else None
            if isinstance(rejected, list) and self.record.pushkey in rejected:
                return Outcome.REJECTED
            return Outcome.SENT
        if answer.status >= 500 or answer.status in (408, 429):
            logger.info("push gateway %s for %s answered %d", self._url, self.key.user_id, answer.status)
            return Outcome.RETRY
        # The same request would be refused again: drop it rather than hold up the ones behind it.
        logger.warning("push gateway %s refused a notification for %s: %d", self._url, self.key.user_id, answer.status)
        return Outcome.SKIPPED

    async def _advance(self, push: PendingPush, success_ts: int | None) -> bool:
        self._position = push.stream_ordering
        self._failing_since = None
        if not await self._store.advance(self.key, push.stream_ordering, success_ts):
            self._gone()  # deleted, or replaced by a newer setting of the same pusher
            return False
        return True

    def _gone(self) -> None:
        self.stopped = True
        self._on_gone(self)

    async def _sleep(self, seconds: float) -> None:
        if self.stopped:
            raise defer.CancelledError()
        self._sleeping = task.deferLater(self._reactor, seconds, lambda: None)
        try:
            await self._sleeping
        finally:
            self._sleeping = None

    def _who(self) -> tuple[str, str]:
        return self.key.user_id, self.key.app_id

    def _now_ms(self) -> int:
        return int(self._reactor.seconds() * 1000)
