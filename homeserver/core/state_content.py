"""Reading the fields of well-known state events that clients show in room summaries (the public room
directory, the spaces hierarchy), tolerating whatever a state event holds."""

from collections.abc import Mapping
from typing import Any


def content_string(content: Mapping[str, Any] | None, key: str) -> str | None:
    """`content[key]` if it is a non-empty string."""
    value = content.get(key) if content is not None else None
    return value if isinstance(value, str) and value else None


def plain_topic(content: Mapping[str, Any] | None) -> str | None:
    """The text/plain topic of an `m.room.topic` content: from its `m.topic` blocks if there are any,
    else `topic`."""
    if content is None:
        return None
    blocks = content.get("m.topic", {})
    text = blocks.get("m.text") if isinstance(blocks, Mapping) else None
    if isinstance(text, list | tuple):
        for block in text:
            if isinstance(block, Mapping) and block.get("mimetype", "text/plain") == "text/plain":
                body = block.get("body")
                if isinstance(body, str):
                    return body
    return content_string(content, "topic")
