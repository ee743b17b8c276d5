"""Turn a YAML file (or nothing) plus environment overrides into a validated HomeserverConfig."""

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from homeserver.config.options import HomeserverConfig
from homeserver.config.types import ByteSize, ConfigError, ConfigValueError, Duration

ENV_PREFIX = "HOMESERVER_"


def load_config(path: str | None, environ: dict[str, str] | None = None) -> HomeserverConfig:
    """Read `path` (None: the embedded defaults), apply HOMESERVER_* overrides, validate.

    Relative paths in the result are resolved against the config file's folder (the working
    directory when there is no file), so a service manager's working directory does not matter.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    base = Path.cwd()
    if path is not None:
        source = path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(path, "", "config file not found") from None
        except OSError as e:
            raise ConfigError(path, "", f"cannot read config file: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(path, "", f"not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(path, "", "the top level must be a mapping of options")
        raw = loaded
        base = Path(path).resolve().parent
    raw = apply_env_overrides(raw, os.environ if environ is None else environ)
    config = build_section(HomeserverConfig, raw, "", source)
    return _resolve_paths(config, base)


def apply_env_overrides(raw: dict[str, Any], environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """HOMESERVER_SERVER_NAME=x sets server_name; `__` separates levels (HOMESERVER_DATABASE__NAME).

    Values are parsed as YAML, so lists and mappings can be given too.
    """
    raw = dict(raw)
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        target = raw
        for key in keys[:-1]:
            child = target.get(key)
            target[key] = dict(child) if isinstance(child, dict) else {}
            target = target[key]
        try:
            target[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"environment variable {name}", "", f"not valid YAML: {e}") from None
    return raw


def build_section(cls: type, raw: Any, prefix: str, source: str) -> Any:
    """Build dataclass `cls` from `raw`, naming `prefix.key` in every error."""
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, "expected a mapping of options")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(source, _join(prefix, str(key)), "unknown option")
    values = {}
    for name, f in fields.items():
        if name in raw:
            key = _join(prefix, name)
            values[name] = _convert(hints[name], raw[name], key, source)
            _check_bounds(f.metadata, values[name], key, source)
    section = cls(**values)
    if hasattr(section, "validate"):
        try:
            section.validate()
        except ConfigValueError as e:
            raise ConfigError(source, _join(prefix, e.key), e.message) from None
    return section


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _convert(inner, value, key, source)
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{key}.{k}", source) for k, v in value.items()}
    if hint is Any:
        return value
    if hint in (ByteSize, Duration):
        try:
            return hint.parse(value)
        except ValueError as e:
            raise ConfigError(source, key, f"{e}, got {_describe(value)}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected a whole number, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, key, f"expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, key, f"expected a string, got {_describe(value)}")
    raise TypeError(f"config type {hint!r} at {key} is not supported")  # a bug in options.py


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _check_bounds(meta: typing.Mapping[str, Any], value: Any, key: str, source: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(source, key, f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(source, key, f"must be at least {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(source, key, f"must be at most {meta['max']}, got {value!r}")


def _resolve_paths(config: HomeserverConfig, base: Path) -> HomeserverConfig:
    def resolve(p: str | None) -> str | None:
        return None if p is None else str(base / p)

    changes: dict[str, Any] = {
        "signing_key_path": resolve(config.signing_key_path),
        "tls_certificate_path": resolve(config.tls_certificate_path),
        "tls_private_key_path": resolve(config.tls_private_key_path),
        "media": dataclasses.replace(config.media, media_store_path=resolve(config.media.media_store_path)),
    }
    if config.database.name == "sqlite3" and config.database.args["database"] != ":memory:":
        args = {**config.database.args, "database": resolve(config.database.args["database"])}
        changes["database"] = dataclasses.replace(config.database, args=args)
    return dataclasses.replace(config, **changes)
