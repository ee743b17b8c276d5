"""The web server: routing, JSON in and out, errors, gzip, admission control."""
