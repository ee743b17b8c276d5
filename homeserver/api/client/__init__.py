"""The client-server API."""
