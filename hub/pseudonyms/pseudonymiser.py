"""Keyed pseudonyms: HMAC-SHA256 with a key per domain and epoch (docs/pseudonymisation.md)."""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache

from hub.pseudonyms.identifiers import Identifier, IdentifierType
from hub.pseudonyms.keyring import Keyring

_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(d: bytes) -> str:
    """Unpadded base64url (what ``base64.urlsafe_b64encode`` gives, in one C call)."""
    return binascii.b2a_base64(d, newline=False).translate(_URLSAFE).decode().rstrip("=")


class Pseudonymiser:
    """Turns identifiers into pseudonyms of one domain (a district registry).

    ``pseudonym`` = ``f"{epoch}." + b64url(HMAC(k, "v1|TYPE|namespace|value"))``
    where ``k`` is derived by HKDF from the epoch's secret for this domain.
    """

    def __init__(self, keyring: Keyring, domain: str, epoch: int | None = None) -> None:
        self.domain = domain
        self.epoch = keyring.current_epoch if epoch is None else epoch
        self._pkey = keyring.domain_key(domain, self.epoch, purpose="pseudonym")
        self._rkey = keyring.domain_key(domain, self.epoch, purpose="record-key")
        self._cached = lru_cache(maxsize=200_000)(self._compute)

    def __repr__(self) -> str:
        return f"Pseudonymiser(domain={self.domain!r}, epoch={self.epoch})"

    def _compute(self, kind: str, namespace: str, value: str) -> str:
        msg = f"v1|{kind}|{namespace}|{value}".encode()
        return f"{self.epoch}." + _b64(hmac.digest(self._pkey, msg, hashlib.sha256))

    def pseudonym(self, identifier: Identifier) -> str:
        if identifier.type is IdentifierType.NONE:
            raise ValueError("an absent identifier has no pseudonym")
        return self._cached(identifier.type.value, identifier.namespace or "", identifier.value)

    # -- batch interface (engine v2, hub/pseudonyms/stage.py) ------------------------
    def pseudonymise_many(self, identifiers: Sequence[Identifier]) -> list[bytes]:
        """Raw 32-byte pseudonyms of distinct validated identifiers, one per input.

        The digest is the one :meth:`pseudonym` encodes as text (``f"{epoch}." +
        b64url(digest)``). The batch stage (:mod:`hub.pseudonyms.stage`) calls this once
        per batch with each distinct identifier; an implementation may answer remotely.
        """
        key = self._pkey
        out: list[bytes] = []
        for ident in identifiers:
            if ident.type is IdentifierType.NONE:
                raise ValueError("an absent identifier has no pseudonym")
            msg = f"v1|{ident.type.value}|{ident.namespace or ''}|{ident.value}".encode()
            out.append(hmac.digest(key, msg, hashlib.sha256))
        return out

    # -- end of batch interface -----------------------------------------------------

    def key_hash(self, *parts: str) -> str:
        """Keyed hash of a source record key (which may contain identifiers)."""
        msg = "\x1f".join(parts).encode()
        return f"k{self.epoch}." + _b64(hmac.digest(self._rkey, msg, hashlib.sha256))
