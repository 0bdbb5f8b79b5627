"""INTERFACE STUB — to be implemented (see helper brief)."""

from __future__ import annotations

from hub.pseudonyms.identifiers import Identifier
from hub.pseudonyms.keyring import Keyring


class Pseudonymiser:
    def __init__(self, keyring: Keyring, domain: str, epoch: int | None = None) -> None:
        raise NotImplementedError

    def pseudonym(self, identifier: Identifier) -> str:
        raise NotImplementedError

    def key_hash(self, *parts: str) -> str:
        raise NotImplementedError
