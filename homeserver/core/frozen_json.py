"""Read-only JSON values, so an event's content cannot be changed after it is built.

Objects become read-only mappings and arrays tuples. Code that inspects them tests for
`collections.abc.Mapping` and `list | tuple` rather than `dict` and `list`.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def freeze(value: Any) -> Any:
    """A deep, read-only copy of a JSON value."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A deep, mutable copy of a JSON value (dicts and lists), ready to encode or change."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value
