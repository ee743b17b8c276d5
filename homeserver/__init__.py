"""A Matrix homeserver for small communities, on Twisted."""

__version__ = "0.1.0"
