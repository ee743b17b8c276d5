"""Use cases: what the server does for a request, in terms of stores and core rules."""
