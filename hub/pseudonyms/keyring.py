"""INTERFACE STUB — to be implemented (see helper brief)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeySource:
    passphrase: str | None = None
    key: bytes | None = None

    @classmethod
    def from_env(cls, key_file: Path | None = None) -> KeySource:
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class KeyMaterial:
    epoch: int
    secret: bytes


@dataclass(frozen=True)
class KeyringStatus:
    path: str
    current_epoch: int
    epochs: tuple[int, ...]


class Keyring:
    @classmethod
    def create(cls, path: Path, source: KeySource) -> Keyring:
        raise NotImplementedError

    @classmethod
    def open(cls, path: Path, source: KeySource) -> Keyring:
        raise NotImplementedError

    @property
    def current_epoch(self) -> int:
        raise NotImplementedError

    def domain_key(self, domain: str, epoch: int | None = None, *, purpose: str) -> bytes:
        raise NotImplementedError

    def status(self) -> KeyringStatus:
        raise NotImplementedError
