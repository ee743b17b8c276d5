"""The database: pool and engines, migrations, one store module per table family."""
