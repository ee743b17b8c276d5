"""The error an event that fails the authorisation rules raises."""

from homeserver.core.errors import MatrixError


class AuthError(MatrixError):
    """The event is not allowed: 403 M_FORBIDDEN, with the rule it broke as the message."""

    def __init__(self, msg: str) -> None:
        super().__init__(403, "M_FORBIDDEN", msg)
