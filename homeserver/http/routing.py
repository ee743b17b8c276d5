"""Map method + path to an endpoint. Paths are templates: `/_matrix/client/v3/rooms/{room_id}/state`."""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from homeserver.core.errors import MatrixError

_PARAM = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern[str]:
    """Parameters match one raw (still percent-encoded) path segment; they are decoded after."""
    regex, pos = "^", 0
    for m in _PARAM.finditer(template):
        regex += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    return re.compile(regex + re.escape(template[pos:]) + "$")


class Endpoint:
    """A REST endpoint: `method`, `path` (or several in `paths`), and `handle`."""

    method: str = "GET"
    path: str = ""
    paths: tuple[str, ...] = ()

    # Endpoints that may legitimately wait a long time (long-polls) override is_long_poll.
    def is_long_poll(self, request: Any) -> bool:
        return False

    def deadline(self, request: Any, default: float) -> float:
        return default

    async def handle(self, request: Any, **params: str) -> Any:
        raise NotImplementedError

    def all_paths(self) -> Iterable[str]:
        for path in self.paths or (self.path,):
            yield path
            # Clients still in use (and matrix-nio for some calls) speak r0; the shapes are the same.
            if path.startswith("/_matrix/client/v3/"):
                yield path.replace("/v3/", "/r0/", 1)


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], str, dict[str, Endpoint]]] = []

    def add(self, endpoint: Endpoint) -> None:
        for template in endpoint.all_paths():
            for _, existing, methods in self._routes:
                if existing == template:
                    if endpoint.method in methods:
                        raise ValueError(f"two endpoints for {endpoint.method} {template}")
                    methods[endpoint.method] = endpoint
                    break
            else:
                self._routes.append((_compile(template), template, {endpoint.method: endpoint}))

    def match(self, method: str, path: str) -> tuple[Endpoint, str, dict[str, str]]:
        """The endpoint, its path template and the decoded parameters; 404 or 405 M_UNRECOGNIZED."""
        allowed = False
        for pattern, template, methods in self._routes:
            m = pattern.match(path)
            if not m:
                continue
            endpoint = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
            if endpoint is None:
                allowed = True
                continue
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            for name, value in params.items():
                # No identifier may hold NUL, and PostgreSQL cannot even look one up.
                if "\x00" in value:
                    raise MatrixError(400, "M_INVALID_PARAM", f"{name} must not contain NUL characters")
            return endpoint, template, params
        if allowed:
            raise MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request: method not allowed on this path")
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")

    def methods_for(self, path: str) -> list[str]:
        return sorted({m for pattern, _, methods in self._routes if pattern.match(path) for m in methods})
