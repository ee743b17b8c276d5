"""Pushers: the HTTP pushers that send users' notifications to their push gateways, and their settings.

`settings` serves the client API, `pool` keeps the running pushers, `http_pusher` sends one pusher's
notifications with retries, `notification` builds the gateway's request and `gateway` posts it.
"""

from homeserver.handlers.pushers.http_pusher import RetryPolicy
from homeserver.handlers.pushers.notification import NotificationBuilder
from homeserver.handlers.pushers.pool import PusherPool
from homeserver.handlers.pushers.settings import PusherHandler

__all__ = ["NotificationBuilder", "PusherHandler", "PusherPool", "RetryPolicy"]
