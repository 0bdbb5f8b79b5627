"""Errors meant for people.

Every error the CLI can show is a :class:`RaccordoError`: it says what was
wrong, where (file, key, line, field) and what to do, and carries the
documented exit code (see ``docs/cli.md``). It never contains a clear
identifier.
"""

from __future__ import annotations


class RaccordoError(Exception):
    """``errors``, when given, lists each problem found (one line each, shown after the hint)."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        errors: list[str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.errors = errors or []

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        for e in self.errors:
            text += f"\n  - {e}"
        return text


class ConfigError(RaccordoError):
    """``raccordo.toml`` is missing, unreadable or has a wrong value."""

    exit_code = 3


class SourceUnavailable(RaccordoError):
    """A connector cannot reach or read its source."""

    exit_code = 4


class KeyringError(RaccordoError):
    """The pseudonymisation keyring is missing, locked or damaged."""

    exit_code = 5


class MappingFileError(RaccordoError):
    """A mapping file is not valid; ``errors`` lists each problem with its location."""

    exit_code = 6


class RunFailed(RaccordoError):
    """A sync stopped before the end (its committed batches are kept)."""

    exit_code = 7
