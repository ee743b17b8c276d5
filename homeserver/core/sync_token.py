"""Sync tokens: one position per stream.

Written `s{events}_{receipts}_{account_data}_{to_device}_{device_lists}_{typing}_{presence}`. Tokens
written before presence had a stream (six fields) still parse, as presence 0: clients keep their
token across a server upgrade.

Clients treat them as opaque. The first field alone is also accepted wherever a pagination token
is (`/messages?from=`), since it names a point in the room's timeline.
"""

import re
from dataclasses import dataclass, fields

from homeserver.core.errors import MatrixError

_TOKEN = re.compile(r"s(\d{1,18})(?:_(\d{1,18})){5,6}")


@dataclass(frozen=True)
class SyncToken:
    events: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0
    typing: int = 0
    presence: int = 0

    def __str__(self) -> str:
        return "s" + "_".join(str(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> "SyncToken":
        """400 M_INVALID_PARAM for anything that is not one of our sync tokens."""
        if not _TOKEN.fullmatch(text):
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid sync token {text!r}")
        return cls(*(int(part) for part in text[1:].split("_")))

    def is_after(self, other: "SyncToken") -> bool:
        """True if any stream has moved on since `other`."""
        return any(getattr(self, f.name) > getattr(other, f.name) for f in fields(self))
