"""Render a config as commented YAML from the option definitions (the sample and generate-config)."""

import dataclasses
import textwrap
from typing import Any

import yaml

from homeserver.config.options import HomeserverConfig
from homeserver.config.types import ByteSize, Duration

HEADER = """\
# Homeserver configuration.
#
# Every option is shown with its default value unless noted. Relative paths are relative to the
# folder this file is in. Any option can be overridden by an environment variable named
# HOMESERVER_<OPTION>, with `__` between levels (HOMESERVER_DATABASE__NAME=psycopg2); the value
# is read as YAML.
"""


def render_config(config: HomeserverConfig, header: str = HEADER) -> str:
    return header + "\n" + "\n".join(_render_fields(config, 0)) + "\n"


def render_sample() -> str:
    """The contents of homeserver.yaml.sample: every option at its default."""
    return render_config(HomeserverConfig())


def _render_fields(section: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if indent == 0 and lines:
            lines.append("")
        lines.extend(textwrap.wrap(f.metadata["doc"], 100, initial_indent=pad + "# ", subsequent_indent=pad + "# "))
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.extend(_render_fields(value, indent + 1))
        else:
            dumped = yaml.safe_dump({f.name: _plain(value)}, default_flow_style=False, sort_keys=False).rstrip()
            lines.extend(pad + line for line in dumped.splitlines())
    return lines


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (ByteSize, Duration)):
        return str(value)
    return value
