"""Who is making a request, once their access token is known."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str
    is_admin: bool = False
