"""Glob patterns of push rules (appendices, "Glob-style matching"), matched without backtracking.

`*` matches any run of characters (the empty one too) and `?` exactly one; everything else is
literal, `[` included. Matching is case-insensitive. A pattern is matched either against the
whole value (`event_match` on most keys) or against any substring of `content.body` that starts
and ends at a word boundary (content rules, `event_match` on `content.body`).

User-defined rules are evaluated on every event of a room, so a pattern such as `*a*a*a*a*b` must
not cost exponential time on a long body: a pattern is cut at its stars into fixed-length
segments, and each segment is placed at its leftmost possible position. That is exact for globs
(leftmost placement leaves the most room for what follows) and costs at most the value's length
times the pattern's per match.
"""

import re
from functools import lru_cache

# A word boundary is the start or end of the value, or any character outside these ASCII sets
# (push module, "Content-specific rules"). `(?-i:...)`: case-insensitivity must not let `[A-Z]`
# take the Kelvin sign or the long s.
_WORD_CHAR = "(?-i:[A-Za-z0-9_])"
_STARTS_AT_BOUNDARY = f"(?<!{_WORD_CHAR})"
_ENDS_AT_BOUNDARY = f"(?!{_WORD_CHAR})"
_FLAGS = re.IGNORECASE | re.DOTALL


def _segment(text: str) -> str:
    """The regex for a star-free piece of a pattern: `?` is any one character, the rest literal."""
    return "".join("." if char == "?" else re.escape(char) for char in text)


class Glob:
    """A compiled glob pattern. Make one with `compile_glob`, which caches them."""

    __slots__ = ("pattern", "_whole", "_first", "_middle", "_last_whole", "_in_words", "_first_word", "_last_word")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        pieces = [_segment(piece) for piece in re.sub(r"\*+", "*", pattern).split("*")]
        if len(pieces) == 1:
            self._whole: re.Pattern[str] | None = re.compile(pieces[0], _FLAGS)
            self._in_words = re.compile(_STARTS_AT_BOUNDARY + pieces[0] + _ENDS_AT_BOUNDARY, _FLAGS)
            return
        self._whole = None
        self._first = re.compile(pieces[0], _FLAGS)
        self._middle = tuple(re.compile(piece, _FLAGS) for piece in pieces[1:-1])
        self._last_whole = re.compile(pieces[-1] + r"\Z", _FLAGS)
        self._first_word = re.compile(_STARTS_AT_BOUNDARY + pieces[0], _FLAGS)
        self._last_word = re.compile(pieces[-1] + _ENDS_AT_BOUNDARY, _FLAGS)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def matches(self, value: str) -> bool:
        """Whether the pattern matches the whole of `value`."""
        if self._whole is not None:
            return self._whole.fullmatch(value) is not None
        first = self._first.match(value)
        return first is not None and self._rest_matches(value, first.end(), self._last_whole)

    def matches_words(self, value: str) -> bool:
        """Whether the pattern matches a substring of `value` that starts and ends at a word boundary."""
        if self._whole is not None:
            return self._in_words.search(value) is not None
        first = self._first_word.search(value)
        return first is not None and self._rest_matches(value, first.end(), self._last_word)

    def _rest_matches(self, value: str, pos: int, last: re.Pattern[str]) -> bool:
        for middle in self._middle:
            found = middle.search(value, pos)
            if found is None:
                return False
            pos = found.end()
        return last.search(value, pos) is not None


# The caches below hold pure functions of their argument, so nothing invalidates them. Only short
# texts are cached, which bounds their memory: a long pattern (a user may write one) is compiled
# for the ruleset that holds it and lives as long as that.
CACHED_TEXT_MAX = 256


def compile_glob(pattern: str) -> Glob:
    """The compiled form of a glob pattern, shared by every rule (and user) that uses it."""
    return _cached_glob(pattern) if len(pattern) <= CACHED_TEXT_MAX else Glob(pattern)


@lru_cache(maxsize=4096)
def _cached_glob(pattern: str) -> Glob:
    return Glob(pattern)


def literal_in_words(text: str) -> re.Pattern[str]:
    """A regex finding `text` literally (no globbing), case-insensitively, between word boundaries:
    how `contains_display_name` looks for a display name in a body."""
    return _cached_literal(text) if len(text) <= CACHED_TEXT_MAX else _literal(text)


def _literal(text: str) -> re.Pattern[str]:
    return re.compile(_STARTS_AT_BOUNDARY + re.escape(text) + _ENDS_AT_BOUNDARY, _FLAGS)


_cached_literal = lru_cache(maxsize=1024)(_literal)
