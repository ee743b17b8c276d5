"""Thin REST resources: parse and validate, call one handler, shape the answer."""
