"""Errors that speak to the user: each message names the key or file, the value, and the fix.

Every entry point (train, prepare, explain, score) prints one of these as a single line and exits
with status 2; anything else is a bug and keeps its traceback (``debug=true`` shows the traceback
of these too).
"""

from __future__ import annotations


class ProtocellError(ValueError):
    """A problem with the user's input or settings, not with protocell."""


class ConfigError(ProtocellError):
    """A configuration value that cannot work; raised before any work starts."""

    @classmethod
    def invalid(cls, key: str, value, need: str) -> ConfigError:
        return cls(f"config value {key}={value!r} is invalid: {need}")


def check(cond: bool, key: str, value, need: str, error: type[Exception] = ConfigError) -> None:
    """Raise ``error("config value key=value is invalid: need")`` unless ``cond``."""
    if not cond:
        raise error(f"config value {key}={value!r} is invalid: {need}")
