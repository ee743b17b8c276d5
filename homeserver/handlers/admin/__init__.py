"""Admin use cases: purges in keyed batches (run inline by the CLI or in the background by the server),
deactivating users, statistics."""
