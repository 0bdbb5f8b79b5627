"""An exchange *home*: the folder holding one party's exchange keys, convenzioni and log.

One hub (or one consortium worker in push mode) has one home::

    exchange.toml          party code, registry, pseudonymisation service, listen address, TLS
    keys/signing.key       Ed25519 private key, encrypted with the home's passphrase
    keys/hpke.key          HPKE private key (ML-KEM-768 seed + X25519), encrypted likewise
                           (:mod:`hub.exchange.keyfile`; ``RACCORDO_EXCHANGE_PASSPHRASE``)
    convenzioni/*.toml     the agreements (+ .sig, .revoked)
    log/                   the flow log (:mod:`hub.exchange.log`)
    outbox/                packages built, each pending until its receipt, then accepted/refused
    receipts/              the receipts this hub received, by package id
    acked/                 the sender's cursor: what each recipient acknowledged holding
                           (row key → content digest), moved only on a signed receipt
    inbox/                 receipts this hub issued, by package id (replays get the same one)
    received/              aggregate tables received (snapshot per convenzione, indicator, period)
    peers/                 the other parties' signed log heads, from packages and receipts

The exchange keys sign and decrypt packages; they are not pseudonymisation
keys (those live only in the pseudonymisation service).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.exchange import crypto, keyfile
from hub.exchange.convenzioni import Directory
from hub.exchange.errors import ExchangeError
from hub.exchange.log import FlowLog


class HomeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    party: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    #: This party's pseudonymisation domain (pseudonyms in its registry are in it).
    pseudonym_domain: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    #: Where received records are loaded (empty: this home only sends).
    registry_url: str = ""
    #: The pseudonymisation service's base URL (for domain conversion when sending records).
    pseudonym_service: str = ""
    #: Listen address of ``raccordo exchange serve``.
    host: str = "127.0.0.1"
    port: int = Field(default=18600, ge=0, le=65535)
    #: HTTPS for ``serve``: certificate chain and private key (PEM files). Without them
    #: it speaks plain HTTP, for loopback or behind the district's TLS terminator.
    tls_cert: str = ""
    tls_key: str = ""
    #: CA bundle (PEM) the sender trusts for the recipients' endpoints (default: the system's).
    ca_bundle: str = ""
    #: ``push serve``: a run's sync lock expires once its worker sent nothing for this long
    #: (it died or gave up), so a direct sync or the worker's next run is not blocked for ever.
    push_lock_idle_minutes: int = Field(default=30, ge=1, le=1440)


@dataclass
class Home:
    """One party's home. Its private keys are read on first use, so a read-only view
    (the web's exchange pages: ``open_home(path, keys=False)``) never touches them."""

    path: Path
    settings: HomeSettings
    _signing_key: ed25519.Ed25519PrivateKey | None = None
    _kem_key: crypto.KemKey | None = None

    @property
    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        if self._signing_key is None:
            self._load_keys()
        assert self._signing_key is not None
        return self._signing_key

    @property
    def kem_key(self) -> crypto.KemKey:
        if self._kem_key is None:
            self._load_keys()
        assert self._kem_key is not None
        return self._kem_key

    def _load_keys(self) -> None:
        keys = self.path / "keys"
        passphrase = keyfile.passphrase_from_env()
        try:
            self._signing_key = crypto.signing_key_from_bytes(
                keyfile.read(keys / "signing.key", "signing", passphrase)
            )
            self._kem_key = crypto.KemKey.from_bytes(
                keyfile.read(keys / "hpke.key", "hpke", passphrase)
            )
        except (OSError, crypto.CryptoFailure) as e:
            raise ExchangeError(
                f"cannot read the exchange keys: {e}",
                where=str(keys),
                hint="the keys are created by `raccordo exchange init`",
            ) from None

    @property
    def keys_encrypted(self) -> bool:
        """False for a home whose keys were written before they were encrypted."""
        return all(
            keyfile.is_encrypted(self.path / "keys" / name) for name in ("signing.key", "hpke.key")
        )

    @property
    def party(self) -> str:
        return self.settings.party

    @property
    def convenzioni(self) -> Directory:
        return Directory(self.path / "convenzioni")

    @property
    def log(self) -> FlowLog:
        return FlowLog(self.path / "log", self.party, lambda: self.signing_key)

    def folder(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def public_keys(self) -> dict[str, str]:
        return {
            "signing_key": crypto.public_b64(self.signing_key),
            "encryption_key": self.kem_key.public_b64(),
        }


def init_home(
    path: Path,
    *,
    party: str,
    pseudonym_domain: str,
    registry_url: str = "",
    pseudonym_service: str = "",
    port: int = 18600,
) -> Home:
    """Create a home with fresh keys; refuses to overwrite existing keys."""
    keys = path / "keys"
    if (keys / "signing.key").exists():
        raise ExchangeError(
            "this folder already holds exchange keys",
            where=str(keys),
            hint="use it as it is, or pick another folder",
        )
    passphrase = keyfile.new_passphrase(path)
    settings = HomeSettings(
        party=party,
        pseudonym_domain=pseudonym_domain,
        registry_url=registry_url,
        pseudonym_service=pseudonym_service,
        port=port,
    )
    keys.mkdir(parents=True, exist_ok=True)
    for sub in ("convenzioni", "log", "outbox", "inbox", "received"):
        (path / sub).mkdir(exist_ok=True)
    signing, kem = crypto.new_signing_key(), crypto.KemKey.generate()
    write_secret(
        keys / "signing.key",
        keyfile.encrypted(crypto.private_bytes(signing), passphrase, "signing"),
    )
    write_secret(keys / "hpke.key", keyfile.encrypted(kem.to_bytes(), passphrase, "hpke"))
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.model_dump().items()]
    (path / "exchange.toml").write_text("\n".join(lines) + "\n")
    return open_home(path)


write_secret = keyfile.write_new


def encrypt_keys(path: Path) -> list[str]:
    """Encrypt the keys of a home written before keys were encrypted (the passphrase from
    ``RACCORDO_EXCHANGE_PASSPHRASE``); the names of the files rewritten."""
    home = open_home(path)  # reads them as they are: raw, or already encrypted
    passphrase = keyfile.new_passphrase(path)
    done = []
    for name, purpose, raw in (
        ("signing.key", "signing", crypto.private_bytes(home.signing_key)),
        ("hpke.key", "hpke", home.kem_key.to_bytes()),
    ):
        file = path / "keys" / name
        if not keyfile.is_encrypted(file):
            keyfile.replace(file, keyfile.encrypted(raw, passphrase, purpose))
            done.append(name)
    open_home(path)  # they open with the passphrase
    return done


def open_home(path: Path, *, keys: bool = True) -> Home:
    """The home in ``path``; ``keys=False`` leaves its private keys unread (read-only views)."""
    cfg = path / "exchange.toml"
    try:
        data = tomllib.loads(cfg.read_text())
    except FileNotFoundError:
        raise ExchangeError(
            "no exchange.toml here",
            where=str(path),
            hint="create one with `raccordo exchange init`",
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ExchangeError(f"not a valid TOML file: {e}", where=str(cfg)) from None
    try:
        settings = HomeSettings.model_validate(data)
    except ValidationError as e:
        raise ExchangeError(
            "invalid exchange settings",
            where=str(cfg),
            errors=[f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()],
        ) from None
    home = Home(path=path, settings=settings)
    if keys:
        home._load_keys()
    return home
