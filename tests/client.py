"""A small HTTP client that speaks the client-server API, for tests."""

import json
import uuid
from typing import Any

import requests

PASSWORD = "correct horse battery staple"


class Client:
    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url
        self.access_token = access_token
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.session = requests.Session()

    def request(self, method: str, path: str, body: Any = None, token: bool = True, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token and self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        url = path if path.startswith("http") else self.base_url + path
        return self.session.request(method, url, json=body, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, body, **kwargs)

    def register(self, username: str | None = None, password: str = PASSWORD, **extra: Any) -> "Client":
        """Register (with the dummy stage) and keep the new login on this client."""
        username = username or "user_" + uuid.uuid4().hex[:10]
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra}
        response = self.post("/_matrix/client/v3/register", body, token=False)
        assert response.status_code == 200, response.text
        self._take(response.json())
        return self

    def login(self, user: str, password: str = PASSWORD, **extra: Any) -> requests.Response:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            **extra,
        }
        response = self.post("/_matrix/client/v3/login", body, token=False)
        if response.status_code == 200:
            self._take(response.json())
        return response

    def _take(self, answer: dict[str, Any]) -> None:
        self.access_token = answer.get("access_token")
        self.user_id = answer["user_id"]
        self.device_id = answer.get("device_id")

    def password_auth(self, password: str = PASSWORD, session: str | None = None) -> dict[str, Any]:
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": password,
        }
        if session:
            auth["session"] = session
        return auth


def new_user(base_url: str, username: str | None = None) -> Client:
    return Client(base_url).register(username)


def ok(response: requests.Response) -> Any:
    """Asserts a 200 and returns the JSON body."""
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    return response.json()


def assert_error(response: requests.Response, status: int, errcode: str | None = None) -> dict[str, Any]:
    """Asserts the status and, when given, the errcode; returns the error's JSON body."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    body = response.json()
    if errcode is not None:
        assert body["errcode"] == errcode, response.text
    return body


def error(response: requests.Response, status: int) -> str:
    """Asserts the status and returns the errcode, for the caller to compare."""
    return assert_error(response, status)["errcode"]


class RoomClient(Client):
    """Room calls a test makes again and again; each asserts success and returns the useful part."""

    def create_room(self, **body: Any) -> str:
        return ok(self.post("/_matrix/client/v3/createRoom", body))["room_id"]

    def send_text(self, room_id: str, text: str) -> str:
        txn = uuid.uuid4().hex
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}"
        return ok(self.put(path, {"msgtype": "m.text", "body": text}))["event_id"]

    def send_state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}"
        return ok(self.put(path, content))["event_id"]

    def join(self, room: str) -> str:
        return ok(self.post(f"/_matrix/client/v3/join/{quote(room)}", {}))["room_id"]

    def invite(self, room_id: str, user_id: str) -> None:
        ok(self.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id}))

    def leave(self, room_id: str) -> None:
        ok(self.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {}))

    def room_get(self, room_id: str, suffix: str, **params: Any) -> requests.Response:
        return self.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/{suffix}", params=params)


def quote(value: str) -> str:
    from urllib.parse import quote as _quote

    return _quote(value, safe="")


def new_room_user(base_url: str, username: str | None = None) -> RoomClient:
    client = RoomClient(base_url)
    client.register(username)
    return client


# -- push rules and unread counts ---------------------------------------------------------------


def push_rule_path(kind: str, rule_id: str, attribute: str = "", scope: str = "global") -> str:
    """/pushrules/{scope}/{kind}/{ruleId}[/{attribute}], the id percent-encoded."""
    path = f"/_matrix/client/v3/pushrules/{scope}/{kind}/{quote(rule_id)}"
    return f"{path}/{attribute}" if attribute else path


def send_event(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    """Send a message event of any type; returns its id."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/{quote(event_type)}/{uuid.uuid4().hex}"
    return ok(client.put(path, content))["event_id"]


def unread_counts(client: Client, room_id: str) -> tuple[int, int]:
    """(notification_count, highlight_count) of a joined room, from an initial sync of that room alone."""
    only_room = json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": 1}}})
    body = ok(client.get("/_matrix/client/v3/sync", params={"filter": only_room}))
    # The server keeps an initial sync's answer for a client's retry until the client moves on from it;
    # moving on makes the next call compute the counts afresh.
    ok(client.get("/_matrix/client/v3/sync", params={"filter": only_room, "since": body["next_batch"]}))
    counts = body["rooms"]["join"][room_id]["unread_notifications"]
    return counts["notification_count"], counts["highlight_count"]


# -- pushers --------------------------------------------------------------------------------------


def pusher_body(url: str, pushkey: str | None = None, **fields: Any) -> dict[str, Any]:
    """A complete /pushers/set body for an HTTP pusher sending to `url`; `fields` replace or add keys."""
    body = {
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": "pk_" + uuid.uuid4().hex if pushkey is None else pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url},
    }
    return {**body, **fields}


def set_pusher(client: Client, body: dict[str, Any]) -> requests.Response:
    return client.post("/_matrix/client/v3/pushers/set", body)


def pushers(client: Client) -> list[dict[str, Any]]:
    return ok(client.get("/_matrix/client/v3/pushers"))["pushers"]
