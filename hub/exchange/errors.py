"""Errors of the exchange, for people (exit codes documented in docs/exchange.md)."""

from __future__ import annotations

from hub.errors import RaccordoError


class ExchangeError(RaccordoError):
    """Base of exchange errors; ``errors`` lists each problem found."""

    exit_code = 20


class ConvenzioneError(ExchangeError):
    """A convenzione file is invalid, unsigned, tampered with, expired or revoked."""

    exit_code = 20


class PackageRefused(ExchangeError):
    """A package does not verify or is outside its convenzione."""

    exit_code = 21


class LogTampered(ExchangeError):
    """``raccordo log verify`` found entries edited, deleted, reordered or truncated."""

    exit_code = 22


class PeerUnavailable(ExchangeError):
    """The other party (or the pseudonymisation service) cannot be reached."""

    exit_code = 23
