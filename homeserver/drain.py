"""Graceful shutdown: the first SIGTERM or SIGINT drains the server, a second one exits at once.

Draining stops accepting connections, answers every waiting long-poll at once (an empty /sync answer
with an unchanged next_batch, so clients reconnect cleanly, to another instance if there is one), marks
every answer from then on `Connection: close`, closes keep-alive connections that stay idle for
IDLE_GRACE_S, then waits until no connection is left or `admission_control.shutdown_timeout` has passed,
and stops the reactor. So a client of a server handed over (sockets.py) sees its requests answered and
its connection closed between two of them, and opens the next one to the new process. Its shutdown
triggers stop the pushers (they resume from their stored positions on the next start), let the push pruner
finish its batch, and close the database pool; `homeserver run` exits 0. If database work is still stuck
SHUTDOWN_GRACE_S later, the process exits with EXIT_STUCK.
"""

import logging
import os
import signal
import threading
import time
from typing import Any

from twisted.internet import defer

from homeserver.handlers.batches import reactor_sleep
from homeserver.http.admission import LONG_POLL, SHORT

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
# Stopping the reactor waits for the database threads: one stuck in a transaction (a lock held elsewhere)
# would hold the process up without end. Past this grace after the drain, it exits anyway.
SHUTDOWN_GRACE_S = 2.0
# A client between two requests usually sends the next one within this; answered, it is told to reconnect.
IDLE_GRACE_S = 0.5
EXIT_STUCK = 1


def install_signal_handlers(hs: Any, reactor: Any, timeout_s: float) -> None:
    """Call once the reactor runs (so that these handlers replace Twisted's own)."""
    draining: list[int] = []  # the signals received so far

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if draining:
            logger.warning("%s again while draining: exiting at once", name)
            os._exit(128 + signum)
        logger.info("%s: draining", name)
        draining.append(signum)
        reactor.callFromThread(lambda: defer.ensureDeferred(drain(hs, reactor, timeout_s)))

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


async def drain(hs: Any, reactor: Any, timeout_s: float) -> None:
    """Drain `hs` (see the module's docstring) and stop the reactor."""
    admission = hs.admission
    if admission is None:  # still starting: nothing is being served yet
        reactor.stop()
        return
    started = time.monotonic()
    logger.info(
        "drain started: %d connections open, %d requests and %d long-polls in flight; waiting up to %gs",
        admission.open_connections,
        admission.in_flight[SHORT],
        admission.in_flight[LONG_POLL],
        timeout_s,
    )
    sleep = reactor_sleep(reactor)
    try:
        await defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in hs.ports], consumeErrors=True)
        admission.start_draining(IDLE_GRACE_S)
        woken = hs.notifier.drain()
        deadline = started + timeout_s
        while _busy(admission) and time.monotonic() < deadline:
            await sleep(POLL_INTERVAL_S)
        # The last answers were handed to their transports; one more turn lets them reach the sockets
        # before the reactor's shutdown drops every connection.
        await sleep(POLL_INTERVAL_S)
        logger.info(
            "drain ended after %.1fs: %d long-polls answered early, %d requests and %d long-polls cut off, "
            "%d connections dropped",
            time.monotonic() - started,
            woken,
            admission.in_flight[SHORT],
            admission.in_flight[LONG_POLL],
            admission.open_connections,
        )
    except Exception:
        logger.exception("drain failed; stopping now")
    watchdog = threading.Timer(SHUTDOWN_GRACE_S, _exit_stuck)
    watchdog.daemon = True
    watchdog.start()
    reactor.stop()


def _exit_stuck() -> None:
    logger.error("shutdown still waiting for database work %gs after the drain: exiting anyway", SHUTDOWN_GRACE_S)
    os._exit(EXIT_STUCK)


def _busy(admission: Any) -> bool:
    return admission.in_flight[SHORT] + admission.in_flight[LONG_POLL] + admission.open_connections > 0
