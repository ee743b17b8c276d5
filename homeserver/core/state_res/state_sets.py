"""Splitting the state sets to resolve into what they agree on and what they conflict over."""

from collections.abc import Mapping, Sequence

from homeserver.core.auth.auth_types import StateKey


def split_conflicted(
    state_sets: Sequence[Mapping[StateKey, str]], *, every_set_must_agree: bool
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """The unconflicted state map, and the conflicted event ids for each conflicted pair.

    v2: a pair is unconflicted only if every set has it, with the same event. v1: a pair is
    conflicted only if two sets give it different events (a pair some sets lack is not).
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys = set().union(*state_sets) if state_sets else set()
    for key in keys:
        values = {state[key] for state in state_sets if key in state}
        complete = all(key in state for state in state_sets)
        if len(values) == 1 and (complete or not every_set_must_agree):
            unconflicted[key] = next(iter(values))
        else:
            conflicted[key] = values
    return unconflicted, conflicted
