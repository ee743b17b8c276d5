"""State resolution: the room state where branches of the event DAG meet."""

from homeserver.core.state_res.auth_graph import AuthChainDifference, EventLookup
from homeserver.core.state_res.resolve import resolve_state

__all__ = ["AuthChainDifference", "EventLookup", "resolve_state"]
