"""The error every layer raises for a failure the client can cause; the HTTP layer renders it."""

from typing import Any


class MatrixError(Exception):
    """A spec error: HTTP status, `errcode`, human-readable `error`, and extra body fields."""

    def __init__(self, code: int, errcode: str, msg: str, **extra: Any) -> None:
        super().__init__(f"{code} {errcode}: {msg}")
        self.code = code
        self.errcode = errcode
        self.msg = msg
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.msg, **self.extra}


class LimitExceeded(MatrixError):
    """Rate limit or admission refusal: 429/503 with `retry_after_ms` and a Retry-After header."""

    def __init__(self, retry_after_ms: int, msg: str = "Too many requests", code: int = 429) -> None:
        super().__init__(code, "M_LIMIT_EXCEEDED", msg, retry_after_ms=retry_after_ms)
        self.retry_after_ms = retry_after_ms
