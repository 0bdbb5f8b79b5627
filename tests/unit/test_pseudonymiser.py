"""Keyed pseudonyms and the encrypted keyring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.errors import KeyringError
from hub.pseudonyms import Keyring, KeySource, Pseudonymiser, parse_identifier
from tests.support.codes import omocodic_variants

CF = "RSSMRA80A01H501U"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))


def test_same_id_domain_epoch_same_pseudonym_else_different(keyring: Keyring) -> None:
    ident = parse_identifier(CF)
    a = Pseudonymiser(keyring, "D1").pseudonym(ident)
    assert a == Pseudonymiser(keyring, "D1").pseudonym(parse_identifier(CF.lower()))
    assert a != Pseudonymiser(keyring, "D2").pseudonym(ident)
    keyring.rotate()
    assert a != Pseudonymiser(keyring, "D1").pseudonym(ident)
    assert a == Pseudonymiser(keyring, "D1", epoch=1).pseudonym(ident)
    assert CF not in a


def test_omocodic_variants_give_128_pseudonyms(keyring: Keyring) -> None:
    p = Pseudonymiser(keyring, "D1")
    assert len({p.pseudonym(parse_identifier(v)) for v in omocodic_variants(CF)}) == 128


def test_local_ids_are_scoped_to_their_ente(keyring: Keyring) -> None:
    p = Pseudonymiser(keyring, "D1")
    a = p.pseudonym(parse_identifier("X1", parse_identifier("").type.LOCAL, namespace="H501"))
    b = p.pseudonym(parse_identifier("X1", parse_identifier("").type.LOCAL, namespace="F952"))
    assert a != b


def test_keyring_is_encrypted_and_reopens(tmp_path: Path, keyring: Keyring) -> None:
    text = (tmp_path / "k.json").read_text()
    assert "secret" not in text and json.loads(text)["kdf"]["kind"] == "raw-key"
    again = Keyring.open(tmp_path / "k.json", KeySource.from_env(tmp_path / "k.key"))
    assert again.domain_key("D", purpose="pseudonym") == keyring.domain_key(
        "D", purpose="pseudonym"
    )


def test_wrong_key_missing_file_and_damage_are_explained(
    tmp_path: Path, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = KeySource.generate_key_file(tmp_path / "other.key")
    with pytest.raises(KeyringError, match="wrong passphrase or key"):
        Keyring.open(tmp_path / "k.json", other)
    with pytest.raises(KeyringError, match="not found") as e:
        Keyring.open(tmp_path / "nope.json", other)
    assert "raccordo keys init" in str(e.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(KeyringError, match="damaged"):
        Keyring.open(tmp_path / "bad.json", other)
    monkeypatch.delenv("RACCORDO_KEYRING_KEY", raising=False)
    monkeypatch.delenv("RACCORDO_KEYRING_PASSPHRASE", raising=False)
    with pytest.raises(KeyringError, match="no key"):
        KeySource.from_env(None)


def test_passphrase_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Keyring.create(tmp_path / "p.json", KeySource(passphrase="correct horse"))
    monkeypatch.setenv("RACCORDO_KEYRING_PASSPHRASE", "correct horse")
    ring = Keyring.open(tmp_path / "p.json", KeySource.from_env())
    assert ring.status().kdf == "scrypt"
    assert "correct horse" not in repr(KeySource.from_env())
    with pytest.raises(KeyringError):
        Keyring.open(tmp_path / "p.json", KeySource(passphrase="wrong"))


def test_never_overwrites(tmp_path: Path, keyring: Keyring) -> None:
    with pytest.raises(KeyringError, match="refusing"):
        Keyring.create(tmp_path / "k.json", KeySource(key=b"x" * 32))
    with pytest.raises(KeyringError, match="refusing"):
        KeySource.generate_key_file(tmp_path / "k.key")
