"""Admin endpoints under /_homeserver/admin/v1/."""
