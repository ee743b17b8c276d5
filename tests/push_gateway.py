"""A push gateway for tests: a small Twisted web server in a subprocess, standing in for Sygnal.

It records every POST to /_matrix/push/v1/notify and answers 200 {"rejected": []}, unless the test told
it to fail a pushkey's next requests or to reject a pushkey. The test steers and reads it over HTTP:

    POST /test/fail    {"pushkey": ..., "count": N, "status": 500}   fail that pushkey's next N requests
    POST /test/reject  {"pushkey": ...}                              answer {"rejected": [pushkey]} from now on
    GET  /test/attempts                                              every notify request: {"status", "body"}

Run as a script it prints the port it listens on, then serves until killed.
"""

import json
import subprocess
import sys
import time
from typing import Any

import requests

NOTIFY_PATH = "/_matrix/push/v1/notify"


class PushGateway:
    """The gateway subprocess, seen from a test."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    @property
    def url(self) -> str:
        """The URL a pusher's data.url is set to."""
        return self.base_url + NOTIFY_PATH

    def start(self) -> "PushGateway":
        self.process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def fail(self, pushkey: str, count: int, status: int = 500) -> None:
        response = requests.post(
            self.base_url + "/test/fail", json={"pushkey": pushkey, "count": count, "status": status}, timeout=5
        )
        response.raise_for_status()

    def reject(self, pushkey: str) -> None:
        requests.post(self.base_url + "/test/reject", json={"pushkey": pushkey}, timeout=5).raise_for_status()

    def attempts(self, pushkey: str) -> list[dict[str, Any]]:
        """Every notify request for `pushkey` so far, oldest first: {"status": answered, "body": sent}."""
        response = requests.get(self.base_url + "/test/attempts", timeout=5)
        response.raise_for_status()
        return [a for a in response.json() if pushkey in _pushkeys(a["body"])]

    def notifications(self, pushkey: str) -> list[dict[str, Any]]:
        """The notifications delivered to `pushkey` (answered 200), oldest first."""
        return [a["body"]["notification"] for a in self.attempts(pushkey) if a["status"] == 200]

    def wait_for(self, pushkey: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until at least `count` notifications reached `pushkey`; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            delivered = self.notifications(pushkey)
            if len(delivered) >= count or time.monotonic() > deadline:
                assert len(delivered) >= count, f"{len(delivered)} of {count} notifications arrived: {delivered}"
                return delivered
            time.sleep(0.05)


def _pushkeys(body: Any) -> list[str]:
    devices = body.get("notification", {}).get("devices", []) if isinstance(body, dict) else []
    return [d.get("pushkey") for d in devices if isinstance(d, dict)]


def serve() -> None:
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Gateway(Resource):
        isLeaf = True

        def __init__(self) -> None:
            super().__init__()
            self.attempts: list[dict[str, Any]] = []
            self.failing: dict[str, tuple[int, int]] = {}  # pushkey -> (requests left to fail, status)
            self.rejected: set[str] = set()

        def render_GET(self, request: Any) -> bytes:
            if request.path == b"/test/attempts":
                return _json(request, 200, self.attempts)
            return _json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})

        def render_POST(self, request: Any) -> bytes:
            try:
                body = json.loads(request.content.read())
            except ValueError:
                return _json(request, 400, {"errcode": "M_NOT_JSON", "error": "Content not JSON."})
            if request.path == NOTIFY_PATH.encode():
                return self._notify(request, body)
            if request.path == b"/test/fail":
                self.failing[body["pushkey"]] = (body["count"], body.get("status", 500))
            elif request.path == b"/test/reject":
                self.rejected.add(body["pushkey"])
            else:
                return _json(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
            return _json(request, 200, {})

        def _notify(self, request: Any, body: Any) -> bytes:
            pushkeys = _pushkeys(body)
            status = 200
            for pushkey in pushkeys:
                left, failure = self.failing.get(pushkey, (0, 500))
                if left > 0:
                    self.failing[pushkey] = (left - 1, failure)
                    status = failure
            self.attempts.append({"status": status, "body": body})
            if status != 200:
                return _json(request, status, {"errcode": "M_UNKNOWN", "error": "failing on purpose"})
            return _json(request, 200, {"rejected": [p for p in pushkeys if p in self.rejected]})

    def _json(request: Any, status: int, value: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(value).encode()

    port = reactor.listenTCP(0, Site(Gateway()), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    serve()
