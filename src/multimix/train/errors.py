"""The training package's user-facing error: a bad option, named with what is valid."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is valid."""


__all__ = ["ConfigError"]
