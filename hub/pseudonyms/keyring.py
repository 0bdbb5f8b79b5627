"""The keyring: per-epoch master secrets, encrypted at rest, outside the registry.

File format (JSON, ``format = 1``)::

    {"format": 1, "kdf": {"kind": "scrypt", "salt": b64, "n": 32768, "r": 8, "p": 1}
                         | {"kind": "raw-key"},
     "nonce": b64, "ciphertext": b64}

The ciphertext is AES-256-GCM over the JSON payload
``{"current_epoch": 1, "epochs": {"1": {"secret": b64, "created": iso}}, "record_secret": b64}``,
with the
header (format and kdf) as associated data, so tampering with either is detected.
The file-encryption key is a raw 32-byte key (env ``RACCORDO_KEYRING_KEY`` or a
key file) or derived from a passphrase with scrypt.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hub.errors import KeyringError
from hub.pseudonyms import group

KEY_ENV = "RACCORDO_KEYRING_KEY"
PASSPHRASE_ENV = "RACCORDO_KEYRING_PASSPHRASE"  # noqa: S105 - a variable name
FORMAT = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(frozen=True, repr=False)
class KeySource:
    """What unlocks the keyring: a passphrase or a raw 32-byte key. Never printed."""

    passphrase: str | None = None
    key: bytes | None = None
    origin: str = ""

    def __repr__(self) -> str:
        return f"KeySource({self.origin or ('passphrase' if self.passphrase else 'key')}, ***)"

    @classmethod
    def from_env(cls, key_file: Path | None = None) -> KeySource:
        if os.environ.get(KEY_ENV):
            return cls(key=_parse_key(os.environ[KEY_ENV], KEY_ENV), origin=KEY_ENV)
        if os.environ.get(PASSPHRASE_ENV):
            return cls(passphrase=os.environ[PASSPHRASE_ENV], origin=PASSPHRASE_ENV)
        if key_file is not None and key_file.is_file():
            try:
                text = key_file.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise KeyringError(f"cannot read the key file: {e}", where=str(key_file)) from None
            return cls(key=_parse_key(text, str(key_file)), origin=str(key_file))
        raise KeyringError(
            "no key to unlock the keyring",
            where=str(key_file) if key_file else None,
            hint=f"set {KEY_ENV} (a base64 32-byte key) or {PASSPHRASE_ENV}, or point "
            "keyring_key_file in raccordo.toml to the key file created by `raccordo keys init`; "
            "a consortium worker holds no keys: it sets [hub] pseudonymiser_url instead",
        )

    @classmethod
    def generate_key_file(cls, path: Path) -> KeySource:
        """Write a new random key to ``path`` (mode 0600) and return it as a source."""
        if path.exists():
            raise KeyringError(
                "a key file already exists; refusing to overwrite it",
                where=str(path),
                hint="keep it, or move it away first",
            )
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_b64e(key) + "\n")
        return cls(key=key, origin=str(path))


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = _b64d(text.strip())
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise KeyringError(
            "the keyring key is not a base64 encoding of 32 bytes",
            where=where,
            hint="use the key file written by `raccordo keys init`",
        )
    return key


@dataclass(frozen=True, repr=False)
class KeyMaterial:
    epoch: int
    secret: bytes
    created: str

    def __repr__(self) -> str:
        return f"KeyMaterial(epoch={self.epoch}, ***)"


@dataclass(frozen=True)
class KeyringStatus:
    path: str
    format: int
    kdf: str
    current_epoch: int
    epochs: tuple[tuple[int, str], ...]  # (epoch, created ISO date)


class Keyring:
    """Unlocked keyring. Derives per-domain keys; never exposes master secrets."""

    def __init__(
        self,
        path: Path,
        source: KeySource,
        header: dict[str, Any],
        current: int,
        epochs: dict[int, KeyMaterial],
        record_secret: bytes,
    ) -> None:
        self.path = path
        self._source = source
        self._header = header
        self._current = current
        self._epochs = epochs
        #: Keys source-record hashes; it does not rotate with the epochs (a source record
        #: keeps its key hash for ever, else a sync after a rotation would duplicate it).
        self._record_secret = record_secret

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r}, epochs={sorted(self._epochs)})"

    # -- life cycle -----------------------------------------------------------
    @classmethod
    def create(cls, path: Path, source: KeySource) -> Keyring:
        if path.exists():
            raise KeyringError(
                "a keyring already exists; refusing to overwrite it",
                where=str(path),
                hint="use `raccordo keys status`; rotation adds an epoch instead",
            )
        if source.passphrase is not None:
            header: dict[str, Any] = {
                "format": FORMAT,
                "kdf": {
                    "kind": "scrypt",
                    "salt": _b64e(secrets.token_bytes(16)),
                    "n": SCRYPT_N,
                    "r": SCRYPT_R,
                    "p": SCRYPT_P,
                },
            }
        else:
            header = {"format": FORMAT, "kdf": {"kind": "raw-key"}}
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        first = secrets.token_bytes(32)
        ring = cls(path, source, header, 1, {1: KeyMaterial(1, first, now)}, first)
        ring._save()
        return ring

    @classmethod
    def open(cls, path: Path, source: KeySource) -> Keyring:
        if not path.is_file():
            raise KeyringError(
                "keyring file not found",
                where=str(path),
                hint="create it with `raccordo keys init` (or `raccordo init`); a consortium "
                "worker holds no keys: it sets [hub] pseudonymiser_url instead",
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            header = {"format": doc["format"], "kdf": doc["kdf"]}
            nonce, ct = _b64d(doc["nonce"]), _b64d(doc["ciphertext"])
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyringError(
                "the keyring file is damaged or not a keyring",
                where=str(path),
                hint="restore it from your backup",
            ) from None
        if header["format"] != FORMAT:
            raise KeyringError(
                f"unknown keyring format {header['format']!r}",
                where=str(path),
                hint="upgrade Raccordo",
            )
        key = _file_key(header, source, path)
        try:
            payload = json.loads(AESGCM(key).decrypt(nonce, ct, _aad(header)))
        except InvalidTag:
            raise KeyringError(
                "cannot unlock the keyring: wrong passphrase or key",
                where=str(path),
                hint="check RACCORDO_KEYRING_KEY / RACCORDO_KEYRING_PASSPHRASE or keyring_key_file",
            ) from None
        epochs = {
            int(e): KeyMaterial(int(e), _b64d(v["secret"]), v["created"])
            for e, v in payload["epochs"].items()
        }
        if "record_secret" in payload:
            record_secret = _b64d(payload["record_secret"])
        else:  # written before v2: record keys were derived from epoch 1, the first one
            record_secret = epochs[min(epochs)].secret
        return cls(path, source, header, int(payload["current_epoch"]), epochs, record_secret)

    def rotate(self) -> int:
        """Add a new epoch and make it current (old epochs stay, for conversion)."""
        new = max(self._epochs) + 1
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._epochs[new] = KeyMaterial(new, secrets.token_bytes(32), now)
        self._current = new
        self._save()
        return new

    def retire(self, epoch: int) -> None:
        """Destroy the secret of ``epoch`` (the caller checked that no pseudonym uses it)."""
        if epoch not in self._epochs:
            raise KeyringError(f"the keyring has no epoch {epoch}", where=str(self.path))
        if epoch == self._current:
            raise KeyringError(
                f"epoch {epoch} is the current one and cannot be retired",
                where=str(self.path),
                hint="run `raccordo keys rotate` first; it moves every pseudonym to a new epoch",
            )
        del self._epochs[epoch]
        self._save()

    # -- use ------------------------------------------------------------------
    @property
    def current_epoch(self) -> int:
        return self._current

    @property
    def epochs(self) -> tuple[int, ...]:
        return tuple(sorted(self._epochs))

    def domain_key(self, domain: str, epoch: int | None = None, *, purpose: str) -> bytes:
        """HKDF-SHA256 key for one pseudonymisation domain, epoch and purpose."""
        e = self._current if epoch is None else epoch
        if e not in self._epochs:
            raise KeyringError(f"the keyring has no epoch {e}", where=str(self.path))
        info = b"raccordo/v1|" + purpose.encode() + b"|" + domain.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._epochs[e].secret
        )

    def _material(self, epoch: int | None) -> KeyMaterial:
        e = self._current if epoch is None else epoch
        if e not in self._epochs:
            raise KeyringError(
                f"the keyring has no epoch {e}"
                + (" (it was retired)" if self._epochs and e < max(self._epochs) else ""),
                where=str(self.path),
                hint="`raccordo keys status` lists the epochs it holds",
            )
        return self._epochs[e]

    def pseudonym_scalar(self, domain: str, epoch: int | None = None) -> bytes:
        """``k[domain, epoch]``: the v2 pseudonym key, a ristretto255 scalar.

        HKDF-SHA512 of the epoch's secret (info ``raccordo/v2|pseudonym|DOMAIN``), 64
        bytes reduced modulo the group order, so it is uniform.
        """
        info = b"raccordo/v2|pseudonym|" + domain.encode()
        wide = HKDF(algorithm=hashes.SHA512(), length=64, salt=None, info=info).derive(
            self._material(epoch).secret
        )
        return group.scalar_from_wide(wide)

    def conversion_factor(
        self, from_domain: str, from_epoch: int, to_domain: str, to_epoch: int
    ) -> bytes:
        """``k[to] · k[from]⁻¹``: turns pseudonyms of one (domain, epoch) into another's."""
        return group.scalar_mul(
            self.pseudonym_scalar(to_domain, to_epoch),
            group.scalar_invert(self.pseudonym_scalar(from_domain, from_epoch)),
        )

    def stable_factor(self, domain: str, epoch: int | None = None) -> bytes:
        """``k_ref[domain] · k[domain, epoch]⁻¹``, where ``k_ref`` comes from the record
        secret and never rotates: ``factor · P`` is the same for a person in every epoch.

        Only used inside keyed hashes (entity and record keys built from pseudonyms), so that
        they survive a rotation. It reveals nothing about ``k`` (a ratio of two secret
        scalars) and cannot compute a pseudonym from an identifier.
        """
        info = b"raccordo/v2|stable|" + domain.encode()
        wide = HKDF(algorithm=hashes.SHA512(), length=64, salt=None, info=info).derive(
            self._record_secret
        )
        return group.scalar_mul(
            group.scalar_from_wide(wide),
            group.scalar_invert(self.pseudonym_scalar(domain, epoch)),
        )

    def record_key(self, domain: str, client: str | None = None) -> bytes:
        """HMAC key of source-record keys: per domain, and per client of the service.

        Without ``client`` it is the key v1 used for epoch 1 (``raccordo/v1|record-key|D``),
        so key hashes already in a registry stay valid. A remote client gets its own key
        (``...|client=ID``): a consortium's worker can only compute its own records' hashes.
        """
        info = b"raccordo/v1|record-key|" + domain.encode()
        if client is not None:
            info += b"|client=" + client.encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._record_secret
        )

    def audit_key(self) -> bytes:
        """Key of the digests written in the service's audit log (never a pseudonym key)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"raccordo/v2|audit-digest"
        ).derive(self._record_secret)

    def status(self) -> KeyringStatus:
        return KeyringStatus(
            path=str(self.path),
            format=FORMAT,
            kdf=str(self._header["kdf"]["kind"]),
            current_epoch=self._current,
            epochs=tuple((e, self._epochs[e].created) for e in sorted(self._epochs)),
        )

    # -- storage --------------------------------------------------------------
    def _save(self) -> None:
        payload = json.dumps(
            {
                "current_epoch": self._current,
                "epochs": {
                    str(e): {"secret": _b64e(m.secret), "created": m.created}
                    for e, m in self._epochs.items()
                },
                "record_secret": _b64e(self._record_secret),
            }
        ).encode()
        nonce = secrets.token_bytes(12)
        key = _file_key(self._header, self._source, self.path)
        ct = AESGCM(key).encrypt(nonce, payload, _aad(self._header))
        doc = {**self._header, "nonce": _b64e(nonce), "ciphertext": _b64e(ct)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keyring-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


def _file_key(header: dict[str, Any], source: KeySource, path: Path) -> bytes:
    kdf = header["kdf"]
    if kdf["kind"] == "scrypt":
        if source.passphrase is None:
            raise KeyringError(
                "this keyring is locked with a passphrase",
                where=str(path),
                hint="set RACCORDO_KEYRING_PASSPHRASE",
            )
        return Scrypt(
            salt=_b64d(kdf["salt"]), length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])
        ).derive(source.passphrase.encode())
    if kdf["kind"] == "raw-key":
        if source.key is None:
            raise KeyringError(
                "this keyring is locked with a key, not a passphrase",
                where=str(path),
                hint="set RACCORDO_KEYRING_KEY or keyring_key_file",
            )
        return source.key
    raise KeyringError(f"unknown key derivation {kdf['kind']!r}", where=str(path))
