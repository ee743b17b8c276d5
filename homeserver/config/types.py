"""Value types and errors shared by the config loader and the section definitions."""

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class ByteSize(int):
    """A size in bytes, written in the config as a number or with a K/M/G suffix (Synapse's "50M")."""

    @classmethod
    def parse(cls, value: object) -> "ByteSize":
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and (m := _SIZE.match(value)):
            return cls(int(m.group(1)) * _UNITS[m.group(2).upper()])
        raise ValueError("expected a size such as 1048576, 512K or 50M")

    def __str__(self) -> str:
        for unit in ("G", "M", "K"):
            if self and self % _UNITS[unit] == 0:
                return f"{self // _UNITS[unit]}{unit}"
        return str(int(self))


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}


class Duration(int):
    """A duration in milliseconds, written as Synapse writes one: a number of ms, or "30s", "1h", "1d"."""

    @classmethod
    def parse(cls, value: object) -> "Duration":
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str) and (m := _DURATION.match(value)):
            return cls(int(m.group(1)) * _DURATION_MS[m.group(2) or "ms"])
        raise ValueError("expected a duration such as 3600000 (ms), 30s, 1h or 1d")

    def __str__(self) -> str:
        for unit in ("y", "w", "d", "h", "m", "s"):
            if self and self % _DURATION_MS[unit] == 0:
                return f"{self // _DURATION_MS[unit]}{unit}"
        return str(int(self))


class ConfigValueError(Exception):
    """Raised by a section's validate(): `key` is relative to that section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class ConfigError(Exception):
    """A config that cannot be used: names the file, the key path and what is wrong."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key
        self.message = message
