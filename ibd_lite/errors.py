"""User-facing errors: each names the problem and the fix, and the CLI turns them into exit status 2."""

from __future__ import annotations


class IBDError(Exception):
    """An error caused by the user's input or environment (bad parameter, missing file, ...)."""


class ConfigError(IBDError, ValueError):
    """A bad configuration value: names the parameter and the allowed values or range."""


class DataError(IBDError):
    """A missing, corrupt or unreadable data file, or a download that failed."""


class DivergedError(IBDError):
    """Training produced a non-finite loss: names the model, the phase, the epoch and the suspect parameters."""


def choice_error(kind: str, value: object, valid: "list[str] | tuple[str, ...]") -> ConfigError:
    """Build the error for an unknown name, listing the valid ones."""
    return ConfigError(f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(sorted(valid))}")
