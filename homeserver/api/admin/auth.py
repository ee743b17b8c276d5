"""Who may call the admin API: users with the admin flag."""

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.http.request import ApiRequest

PREFIX = "/_homeserver/admin/v1"


async def require_admin(request: ApiRequest) -> Requester:
    """401 without a valid access token, 403 M_FORBIDDEN for a user who is not an admin."""
    requester = await request.require_user()
    if not requester.is_admin:
        raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
    return requester
