"""The view of a request that endpoints get: parameters, JSON body, client address, authentication."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester

Authenticator = Callable[[str], Awaitable[Requester | None]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class ApiRequest:
    def __init__(self, raw: Any, request_id: str, client_ip: str, authenticate: Authenticator) -> None:
        self.raw = raw
        self.request_id = request_id
        self.client_ip = client_ip
        self.method: str = raw.method.decode("ascii", "replace")
        self.path: str = raw.path.decode("ascii", "replace")
        self.query: dict[str, list[str]] = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs] for k, vs in raw.args.items()
        }
        self.requester: Requester | None = None
        self._authenticate = authenticate

    def header(self, name: str) -> str | None:
        value = self.raw.getHeader(name)
        return value.decode("latin-1") if isinstance(value, bytes) else value

    def query_param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def query_int(self, name: str, default: int, minimum: int = 0) -> int:
        value = self.query_param(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
        if number < minimum:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}")
        return number

    @property
    def body(self) -> bytes:
        self.raw.content.seek(0)
        return self.raw.content.read()

    def json_object(self, empty_ok: bool = False) -> dict[str, Any]:
        """The body as a JSON object: 400 M_NOT_JSON if it is not JSON, M_BAD_JSON if not an object."""
        body = self.body
        if not body.strip() and empty_ok:
            return {}
        try:
            value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError):
            raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
        return value

    def access_token(self) -> str | None:
        auth = self.header("Authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header.")
        return self.query_param("access_token")  # deprecated in the spec, still sent by older clients

    async def require_user(self) -> Requester:
        token = self.access_token()
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token.")
        requester = await self._authenticate(token)
        if requester is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired access token.", soft_logout=False)
        self.requester = requester
        return requester


def require_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    """A required body field of the given type: M_MISSING_PARAM or M_INVALID_PARAM otherwise."""
    if name not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {name}")
    return optional_field(body, name, kind)


def optional_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be of type {_json_type(names)}")
    return value


def _json_type(python_name: str) -> str:
    return {"str": "string", "dict": "object", "list": "array", "int": "integer", "bool": "boolean"}.get(
        python_name, python_name
    )
