"""Configuration: one dataclass per section, a loader that validates, a sample rendered from them."""

from homeserver.config.loader import load_config
from homeserver.config.options import HomeserverConfig
from homeserver.config.types import ConfigError

__all__ = ["ConfigError", "HomeserverConfig", "load_config"]
