"""Refusing a configuration value before any work starts, with one message shape for every command."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before any work starts."""


def check(cond: bool, key: str, value, need: str, error: type[Exception] = ConfigError) -> None:
    """Raise ``error("config value key=value is invalid: need")`` unless ``cond``."""
    if not cond:
        raise error(f"config value {key}={value!r} is invalid: {need}")
