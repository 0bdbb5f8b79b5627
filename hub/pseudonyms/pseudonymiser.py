"""Pseudonyms v2: ``k[domain, epoch] · H("raccordo/v2|TYPE|namespace|value")`` on ristretto255.

A pseudonym is a group element (32 bytes) beside the epoch of the key that made it. Being a
group element, it can be converted without the identifier by whoever holds the keys: to a
new epoch (``k_new · k_old⁻¹``, key rotation) or to another domain (``k_B · k_A⁻¹``,
exchange between districts). See ``docs/pseudonymisation.md``.

One type, :class:`Pseudonymiser`, in two ways:

* built from a :class:`Keyring` (*embedded*: the keys are on this machine, as in the demo);
* :class:`hub.pseudonyms.remote.RemotePseudonymiser` (*remote*: a consortium worker blinds
  each identifier and the district's pseudonymisation service applies the key).

:func:`open_pseudonymiser` picks one from ``raccordo.toml``. Source-record keys stay keyed
HMACs (:meth:`Pseudonymiser.key_hash`): they never leave their registry.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from hub.pseudonyms import group
from hub.pseudonyms.identifiers import Identifier, IdentifierType
from hub.pseudonyms.keyring import Keyring

if TYPE_CHECKING:
    from hub.config import Config

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")
#: Text form of a v2 pseudonym: ``v2.<epoch>.<base64url of the 32 bytes>``.
TEXT_PREFIX = "v2."
#: Distinct identifiers remembered per pseudonymiser (32 bytes each plus the key). The
#: pipeline's stage keeps its own, larger memory of outcomes; this one serves single calls
#: (the web intake).
CACHE_SIZE = 200_000
#: Pseudonyms whose epoch-independent token is remembered (a group multiplication each):
#: the distinct people of a 1,000,000-record export.
STABLE_CACHE_SIZE = 1_000_000
TOKEN_ENV = "RACCORDO_PSEUDONYMISER_TOKEN"  # noqa: S105 - a variable name


def b64url(d: bytes) -> str:
    """Unpadded base64url (what ``base64.urlsafe_b64encode`` gives, in one C call)."""
    return binascii.b2a_base64(d, newline=False).translate(_URLSAFE).decode().rstrip("=")


def unb64url(s: str) -> bytes:
    return binascii.a2b_base64(s.translate(_FROM_URLSAFE) + "=" * (-len(s) % 4))


def pseudonym_text(epoch: int, raw: bytes) -> str:
    """The text form stored by today's registry: ``v2.<epoch>.<base64url>``."""
    return f"{TEXT_PREFIX}{epoch}.{b64url(raw)}"


def parse_pseudonym_text(text: str) -> tuple[int, bytes]:
    """``(epoch, 32 bytes)`` of a v2 text pseudonym; ``ValueError`` for anything else."""
    if not text.startswith(TEXT_PREFIX):
        raise ValueError("not a v2 pseudonym")
    epoch_text, _, body = text[len(TEXT_PREFIX) :].partition(".")
    try:
        epoch, raw = int(epoch_text), unb64url(body)
    except (ValueError, binascii.Error):
        raise ValueError("not a v2 pseudonym") from None
    if not group.is_element(raw):
        raise ValueError("not a v2 pseudonym")
    return epoch, raw


def is_v2_text(text: str) -> bool:
    try:
        parse_pseudonym_text(text)
    except ValueError:
        return False
    return True


def hash_input(identifier: Identifier, domain: str) -> bytes:
    """``"raccordo/v2|TYPE|namespace|value"``.

    A LOCAL id's namespace is its ente *inside its domain* (``DOMAIN/ENTE``): the same
    ente number in two districts is two unrelated namespaces, so a LOCAL pseudonym converted
    to another domain matches nothing there (conversion also refuses them outright).
    """
    if identifier.type is IdentifierType.NONE:
        raise ValueError("an absent identifier has no pseudonym")
    namespace = identifier.namespace or ""
    if identifier.type is IdentifierType.LOCAL:
        namespace = f"{domain}/{namespace}"
    return group.H2G_PREFIX + f"{identifier.type.value}|{namespace}|{identifier.value}".encode()


class Pseudonymiser:
    """Turns identifiers into pseudonyms of one domain (a district registry) and epoch.

    ``Pseudonymiser(keyring, domain)`` is the embedded one; the remote one is the subclass
    :class:`hub.pseudonyms.remote.RemotePseudonymiser`. Both give the same pseudonyms.
    """

    domain: str
    epoch: int

    def __init__(self, keyring: Keyring, domain: str, epoch: int | None = None) -> None:
        self.domain = domain
        self.epoch = keyring.current_epoch if epoch is None else epoch
        self._scalar = keyring.pseudonym_scalar(domain, self.epoch)
        self._init_common(keyring.record_key(domain), keyring.stable_factor(domain, self.epoch))

    def _init_common(self, record_key: bytes, stable_factor: bytes) -> None:
        self._rkey = record_key
        #: The record key's HMAC-SHA256 state, copied for each key of :meth:`key16_many`.
        self._rmac = hmac.new(record_key, digestmod=hashlib.sha256)
        #: The key of record fingerprints (keyed BLAKE2b), derived from the record key.
        self._fkey = hmac.digest(record_key, b"raccordo/fingerprint", hashlib.sha256)
        self._stable_factor = stable_factor
        self._cache: dict[tuple[str, str, str], bytes] = {}
        #: Pseudonym text → its epoch-independent token (one group multiplication each).
        self._stable_cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(domain={self.domain!r}, epoch={self.epoch})"

    # -- the key holder's step (overridden by the remote client) ---------------
    def _apply_key(self, elements: list[bytes]) -> list[bytes]:
        """``k · e`` for each element ``e = H(x)``."""
        k = self._scalar
        return [group.multiply(k, e) for e in elements]

    # -- the API ----------------------------------------------------------------
    def pseudonymise_many(
        self, identifiers: Sequence[Identifier], *, remember: bool = True
    ) -> list[bytes]:
        """The 32-byte pseudonym of each identifier, in order (one per input).

        Repeated identifiers are computed once; ``NONE`` raises ``ValueError``. With
        ``remember=False`` the results are not kept for later calls (the pipeline's stage
        keeps its own, per run: a second copy of a million pseudonyms would only cost memory).
        """
        keys = [(i.type.value, i.namespace or "", i.value) for i in identifiers]
        cache = self._cache
        todo: dict[tuple[str, str, str], Identifier] = {}
        for key, ident in zip(keys, identifiers, strict=True):
            if key not in cache and key not in todo:
                todo[key] = ident
        if not todo:
            return [cache[k] for k in keys]
        elements = [group.hash_to_group(hash_input(i, self.domain)) for i in todo.values()]
        fresh = dict(zip(todo, self._apply_key(elements), strict=True))
        if remember and len(fresh) <= CACHE_SIZE:
            if len(cache) + len(fresh) > CACHE_SIZE:
                cache.clear()
            cache.update(fresh)
        return [fresh[k] if k in fresh else cache[k] for k in keys]

    def pseudonym(self, identifier: Identifier) -> str:
        """Text form ``v2.<epoch>.<base64url>`` (what today's registry stores)."""
        return pseudonym_text(self.epoch, self.pseudonymise_many([identifier])[0])

    def key_hash(self, *parts: str) -> str:
        """Keyed hash of a source record key (which may contain identifiers), or of an
        entity key (which may contain pseudonyms).

        A part that is a v2 pseudonym of this epoch is first made epoch-independent
        (:meth:`Keyring.stable_factor`), so a key hash built from pseudonyms does not change
        when the keys rotate: a sync after a rotation finds the same rows.
        """
        stable = self._stable
        msg = "\x1f".join([stable(p) if p.startswith(TEXT_PREFIX) else p for p in parts])
        return "k1." + b64url(hmac.digest(self._rkey, msg.encode(), hashlib.sha256))

    def record_fingerprints(
        self, connector: str, stream: str, items: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Per ``(source key, content)`` of a stream's records: the source key's
        :meth:`key_hash` (as ``key_hash(connector, stream, key)``) and the record's
        fingerprint, a keyed BLAKE2b-128 (hex) of that key hash and ``content``.

        What every record read costs before anything else (a re-read of unchanged records
        costs little more): one HMAC and one BLAKE2b per record, the message prefix built
        once.
        """
        stable = self._stable
        rkey, fkey, blake2b, digest = self._rkey, self._fkey, hashlib.blake2b, hmac.digest
        prefix = f"{stable(connector)}\x1f{stable(stream)}\x1f".encode()
        out = []
        for key, content in items:
            if key.startswith(TEXT_PREFIX):
                skh = self.key_hash(connector, stream, key)
            else:
                skh = "k1." + b64url(digest(rkey, prefix + key.encode(), "sha256"))
            fingerprint = blake2b(f"{skh}\x1f{content}".encode(), key=fkey, digest_size=16)
            out.append((skh, fingerprint.hexdigest()))
        return out

    def key16(self, *parts: str) -> bytes:
        """:meth:`key_hash` as the 16 bytes the registry stores (the digest's first half),
        without its text form."""
        stable = self._stable
        msg = "\x1f".join([stable(p) if p.startswith(TEXT_PREFIX) else p for p in parts])
        return hmac.digest(self._rkey, msg.encode(), hashlib.sha256)[:16]

    def key16_many(self, first: str, keys: Iterable[Sequence[str]]) -> list[bytes]:
        """``key16(first, *key)`` of each key (the same bytes), for a batch's keys at once:
        each HMAC from a copy of the keyed state, about half the cost of one
        ``hmac.digest`` call."""
        stable = self._stable
        copy = self._rmac.copy
        head = stable(first) + "\x1f"
        out = []
        for parts in keys:
            text = "\x1f".join(parts)
            if TEXT_PREFIX in text:  # a part may be a pseudonym: made epoch-independent
                text = "\x1f".join([stable(p) if p.startswith(TEXT_PREFIX) else p for p in parts])
            h = copy()
            h.update((head + text).encode())
            out.append(h.digest()[:16])
        return out

    def person_key(self, identifier: Identifier) -> str:
        """An epoch-independent keyed token of a person (``p1.<base64url of 16 bytes>``):
        HMAC, with the record key, of what the pseudonym is computed from.

        Equal exactly when the pseudonyms are; it does not change when the pseudonym keys
        rotate, and it costs one HMAC (the stage computes it beside each pseudonym), so the
        row keys built from identifiers (a subject's, an assessment's) need no group
        operation. Kept inside key hashes; never stored as such.
        """
        msg = b"person\x1f" + hash_input(identifier, self.domain)
        return "p1." + b64url(hmac.digest(self._rkey, msg, hashlib.sha256)[:16])

    def _stable(self, part: str) -> str:
        if not part.startswith(TEXT_PREFIX):
            return part
        token = self._stable_cache.get(part)
        if token is None:
            token = self._stable_cache[part] = self._compute_stable(part)
            if len(self._stable_cache) > STABLE_CACHE_SIZE:
                self._stable_cache.clear()
        return token

    def _compute_stable(self, part: str) -> str:
        try:
            epoch, raw = parse_pseudonym_text(part)
        except ValueError:
            return part
        if epoch != self.epoch:
            raise ValueError(
                f"a key part is a pseudonym of epoch {epoch}, this pseudonymiser is of "
                f"epoch {self.epoch}"
            )
        return "s." + b64url(group.multiply(self._stable_factor, raw))


def open_pseudonymiser(
    config: Config, keyring: Keyring | None = None, *, token: str | None = None
) -> Pseudonymiser:
    """The pseudonymiser ``raccordo.toml`` asks for.

    ``[hub] pseudonymiser_url`` set: the remote client of that service, with ``token`` (e.g.
    the password of an Airflow Connection, read by the task) or else the one in the
    environment variable named by ``pseudonymiser_token_env``; the keyring is not opened (a
    worker has none). Otherwise the embedded one over the local keyring.
    """
    hub = config.hub
    if hub.pseudonymiser_url:
        from hub.pseudonyms.remote import RemotePseudonymiser, ServiceError

        token = token or os.environ.get(hub.pseudonymiser_token_env, "")
        if not token:
            raise ServiceError(
                "no token for the pseudonymisation service",
                where=f"{config.path} [hub] pseudonymiser_url",
                hint=f"set {hub.pseudonymiser_token_env} to the token given by "
                "`raccordo pseudonymiser add-client` (or the Airflow Connection's password)",
            )
        return RemotePseudonymiser(
            hub.pseudonymiser_url, token, expect_domain=config.pseudonym_domain
        )
    if keyring is None:
        from hub.pseudonyms.keyring import KeySource

        keyring = Keyring.open(config.keyring_path, KeySource.from_env(config.keyring_key_file))
    return Pseudonymiser(keyring, config.pseudonym_domain)
