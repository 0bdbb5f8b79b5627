"""Exchange private keys encrypted at rest with a passphrase (as the keyring is).

A key file is JSON::

    {"format": "raccordo-exchange-key/1", "purpose": "signing" | "hpke",
     "kdf": {"kind": "scrypt", "salt": b64, "n": 32768, "r": 8, "p": 1},
     "nonce": b64, "ciphertext": b64}

The ciphertext is AES-256-GCM over the raw private key with a key derived from the
passphrase by scrypt (the keyring's parameters, :mod:`hub.pseudonyms.keyring`), and
the header (format, purpose, kdf) as associated data: an edited header, or the
signing key's file put in place of the HPKE key's, does not open. The passphrase
comes from ``RACCORDO_EXCHANGE_PASSPHRASE`` (the keyring's is
``RACCORDO_KEYRING_PASSPHRASE``); it is never written anywhere.

A push worker's key (``push add-worker``) is encrypted the same way with the passphrase
in ``RACCORDO_PUSH_WORKER_PASSPHRASE`` on the hub, which the worker holds as its
``RACCORDO_EXCHANGE_PASSPHRASE``. Files written before this format (the raw key bytes,
mode 0600) are still read; ``raccordo exchange encrypt-keys`` and
``raccordo push encrypt-key`` rewrite them encrypted.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from hub.exchange.errors import ExchangeError
from hub.pseudonyms.keyring import SCRYPT_N, SCRYPT_P, SCRYPT_R

PASSPHRASE_ENV = "RACCORDO_EXCHANGE_PASSPHRASE"  # noqa: S105 - a variable name
#: ``push add-worker`` (on the hub): the passphrase the new worker's key is encrypted with,
#: which the worker then holds in its own ``RACCORDO_EXCHANGE_PASSPHRASE``.
WORKER_PASSPHRASE_ENV = "RACCORDO_PUSH_WORKER_PASSPHRASE"  # noqa: S105 - a variable name
FORMAT = "raccordo-exchange-key/1"
MIN_PASSPHRASE = 12
#: The sizes of the raw key files of before: Ed25519 signing key; ML-KEM-768 seed + X25519.
#: An encrypted file (a JSON document with its header) is always longer.
RAW_KEY_SIZES = frozenset({32, 96})


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def passphrase_from_env() -> str | None:
    return os.environ.get(PASSPHRASE_ENV) or None


def new_passphrase(where: Path, env: str = PASSPHRASE_ENV) -> str:
    """The passphrase to lock new keys with (from ``env``), or why there is none."""
    passphrase = os.environ.get(env) or None
    if passphrase is None:
        hint = (
            f"set {env} (at least {MIN_PASSPHRASE} characters) and keep it where the hub's "
            "other secrets are; every command that signs or receives needs it"
        )
        if env == WORKER_PASSPHRASE_ENV:
            hint = (
                f"set {env} (at least {MIN_PASSPHRASE} characters) to the worker's own "
                f"passphrase: give it to the worker, which sets it as {PASSPHRASE_ENV}"
            )
        raise ExchangeError(
            "no passphrase to encrypt the exchange keys with", where=str(where), hint=hint
        )
    if len(passphrase) < MIN_PASSPHRASE:
        raise ExchangeError(
            f"{env} is too short to protect the exchange keys",
            where=str(where),
            hint=f"use at least {MIN_PASSPHRASE} characters",
        )
    return passphrase


@lru_cache(maxsize=16)
def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


def is_encrypted(path: Path) -> bool:
    """Not a raw key of before. Told apart by length, not by a first byte: one raw key in
    256 begins with "{"."""
    return len(path.read_bytes()) not in RAW_KEY_SIZES


def encrypted(raw: bytes, passphrase: str, purpose: str) -> bytes:
    salt = secrets.token_bytes(16)
    header = {
        "format": FORMAT,
        "purpose": purpose,
        "kdf": {"kind": "scrypt", "salt": _b64e(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
    }
    nonce = secrets.token_bytes(12)
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ct = AESGCM(key).encrypt(nonce, raw, _aad(header))
    return (json.dumps({**header, "nonce": _b64e(nonce), "ciphertext": _b64e(ct)}) + "\n").encode()


def write_new(path: Path, data: bytes) -> None:
    """A new secret file, mode 0600; never overwrites one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def replace(path: Path, data: bytes) -> None:
    """Replace a secret file at once (mode 0600): a crash leaves the old or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path, purpose: str, passphrase: str | None) -> bytes:
    """The raw private key in ``path`` (encrypted, or a raw file of before)."""
    data = path.read_bytes()
    if len(data) in RAW_KEY_SIZES:
        return data  # written before keys were encrypted: `raccordo exchange encrypt-keys`
    try:
        doc = json.loads(data)
        header = {"format": doc["format"], "purpose": doc["purpose"], "kdf": doc["kdf"]}
        kdf = header["kdf"]
        salt, n, r, p = _b64d(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        nonce, ct = _b64d(doc["nonce"]), _b64d(doc["ciphertext"])
        assert doc["format"] == FORMAT and kdf["kind"] == "scrypt"
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ExchangeError(
            "the key file is damaged or not an exchange key",
            where=str(path),
            hint="restore the home's keys/ folder from its backup",
        ) from None
    if header["purpose"] != purpose:
        raise ExchangeError(
            f"this file holds the {header['purpose']} key, not the {purpose} key",
            where=str(path),
            hint="restore the home's keys/ folder from its backup",
        )
    if passphrase is None:
        raise ExchangeError(
            "the exchange keys are encrypted and no passphrase was given",
            where=str(path),
            hint=f"set {PASSPHRASE_ENV} to the passphrase the keys were encrypted with",
        )
    try:
        return AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, ct, _aad(header))
    except InvalidTag:
        raise ExchangeError(
            "cannot decrypt the exchange keys: wrong passphrase, or the file was altered",
            where=str(path),
            hint=f"check {PASSPHRASE_ENV}",
        ) from None
