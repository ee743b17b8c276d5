"""The view of a request that endpoints get: parameters, JSON body, client address, authentication."""

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester

Authenticator = Callable[[str], Awaitable[Requester | None]]
# (Authorization header values, method, uri with query, JSON body or None) -> the origin server name;
# raises 401 M_UNAUTHORIZED (handlers/federation/keys.py KeyRing.authenticate_request).
ServerAuthenticator = Callable[[list[str], str, str, Any], Awaitable[str]]


# A JSON escape for half of a UTF-16 surrogate pair; only bodies that contain one need the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(value: Any) -> bool:
    """True if a string anywhere in `value` holds an unpaired surrogate: it cannot be stored or sent
    as UTF-8, so it must be refused here rather than fail in the database or an encoder."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class ApiRequest:
    def __init__(
        self,
        raw: Any,
        request_id: str,
        client_ip: str,
        authenticate: Authenticator,
        authenticate_server: ServerAuthenticator | None = None,
    ) -> None:
        self.raw = raw
        self.request_id = request_id
        self.client_ip = client_ip
        self.method: str = raw.method.decode("ascii", "replace")
        self.path: str = raw.path.decode("ascii", "replace")
        self.query: dict[str, list[str]] = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs] for k, vs in raw.args.items()
        }
        self.requester: Requester | None = None
        self.origin: str | None = None  # the server a federation request is from, once authenticated
        self._authenticate = authenticate
        self._authenticate_server = authenticate_server

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
        except RecursionError:
            raise MatrixError(400, "M_BAD_JSON", "Content is nested too deeply.") from None
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
        if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
            raise MatrixError(400, "M_BAD_JSON", "Content contains an unpaired UTF-16 surrogate.")
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

    async def require_origin(self) -> str:
        """The server that signed this federation request (X-Matrix); 401 M_UNAUTHORIZED if none did."""
        if self._authenticate_server is None:
            raise MatrixError(401, "M_UNAUTHORIZED", "This listener does not serve federation")
        headers = [v.decode("latin-1") for v in self.raw.requestHeaders.getRawHeaders(b"Authorization", [])]
        content = self.json_object() if self.body.strip() else None
        self.origin = await self._authenticate_server(headers, self.method, self.raw.uri.decode("latin-1"), content)
        return self.origin


def require_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    """A required body field of the given type: M_MISSING_PARAM or M_INVALID_PARAM otherwise."""
    if name not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {name}")
    return optional_field(body, name, kind)


def optional_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str, default: Any = None) -> Any:
    """A body field of the given type, or `default` when absent (or null). Strings may not hold NUL:
    no parameter needs one, and PostgreSQL cannot store it in a text column."""
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be of type {_json_type(names)}")
    if isinstance(value, str) and "\x00" in value:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must not contain NUL characters")
    return value


MAX_DEVICE_ID_LENGTH = 512  # far above any client's; keeps the key within PostgreSQL's index row limit


def device_id_field(body: dict[str, Any]) -> str | None:
    """The optional `device_id` a client chooses at login or registration."""
    device_id = optional_field(body, "device_id")
    if not device_id:
        return None  # an empty id is taken as none, as before: the server generates one
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", f"device_id may be at most {MAX_DEVICE_ID_LENGTH} characters")
    return device_id


def _json_type(python_name: str) -> str:
    return {"str": "string", "dict": "object", "list": "array", "int": "integer", "bool": "boolean"}.get(
        python_name, python_name
    )
