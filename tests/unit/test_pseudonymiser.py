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


# --- v2 additions: record keys, retiring, rotation-stable key hashes, service limits ------
def test_record_key_of_an_epoch_1_keyring_is_the_v1_one(keyring: Keyring) -> None:
    assert keyring.record_key("D") == keyring.domain_key("D", 1, purpose="record-key")
    assert keyring.record_key("D", client="C1") != keyring.record_key("D")


def test_retire_refuses_the_current_or_an_unknown_epoch(keyring: Keyring, tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="current one"):
        keyring.retire(1)
    keyring.rotate()
    with pytest.raises(KeyringError, match="no epoch 7"):
        keyring.retire(7)
    keyring.retire(1)
    again = Keyring.open(tmp_path / "k.json", KeySource.from_env(tmp_path / "k.key"))
    assert again.epochs == (2,)
    with pytest.raises(KeyringError, match="retired"):
        Pseudonymiser(again, "D1", epoch=1)


def test_entity_key_hashes_survive_a_rotation(keyring: Keyring) -> None:
    ident = parse_identifier(CF)
    old = Pseudonymiser(keyring, "D1")
    keyring.rotate()
    new = Pseudonymiser(keyring, "D1")
    p_old, p_new = old.pseudonym(ident), new.pseudonym(ident)
    assert p_old != p_new
    assert old.key_hash("subject", p_old) == new.key_hash("subject", p_new)
    other = new.pseudonym(parse_identifier("RSSMRA80A01H501U".replace("H501U", "F205X")))
    assert new.key_hash("subject", other) != new.key_hash("subject", p_new)
    with pytest.raises(ValueError, match="epoch 1"):
        new.key_hash("subject", p_old)


def test_record_fingerprints_key_the_source_key_as_key_hash_and_change_with_the_content(
    keyring: Keyring, tmp_path: Path
) -> None:
    ps = Pseudonymiser(keyring, "D1")
    pseudonym = ps.pseudonym(parse_identifier(CF))
    items = [("1001", "('CISS', 'upsert', ('a',))"), (pseudonym, "x"), ("1001", "changed")]
    (k1, f1), (k2, f2), (k3, f3) = ps.record_fingerprints("csv", "rows", items)
    # The source key hash is the one key_hash gives (a pseudonym as key: rotation-stable).
    assert (k1, k2, k3) == (
        ps.key_hash("csv", "rows", "1001"),
        ps.key_hash("csv", "rows", pseudonym),
        ps.key_hash("csv", "rows", "1001"),
    )
    assert len({f1, f2, f3}) == 3 and all(len(f) == 32 for f in (f1, f2, f3))
    # The same record gives the same fingerprint; another keyring another one.
    assert ps.record_fingerprints("csv", "rows", items[:1]) == [(k1, f1)]
    other = Keyring.create(tmp_path / "o.json", KeySource.generate_key_file(tmp_path / "o.key"))
    ((_, elsewhere),) = Pseudonymiser(other, "D1").record_fingerprints("csv", "rows", items[:1])
    assert elsewhere != f1


def _service(tmp_path: Path, keyring: Keyring, now: list[float], **limits: int):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from hub.pseudonyms.service import add_client, create_service_app, load_clients

    clients = tmp_path / "clients.json"
    if not clients.exists():
        token = add_client(clients, {"id": "c", "domain": "D1", **limits})
        (tmp_path / "token").write_text(token)
    app = create_service_app(
        keyring, load_clients(clients), tmp_path / "logs", clock=lambda: now[0]
    )
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {(tmp_path / 'token').read_text()}"
    return client


def _elements(n: int) -> list[str]:
    from hub.pseudonyms import group
    from hub.pseudonyms.pseudonymiser import b64url

    return [b64url(group.hash_to_group(b"%d" % i)) for i in range(n)]


def test_rate_limit_refuses_then_recovers(tmp_path: Path, keyring: Keyring) -> None:
    import time

    now = [time.time()]
    svc = _service(tmp_path, keyring, now, per_minute=100)
    assert svc.post("/v1/evaluate", json={"elements": _elements(80)}).status_code == 200
    r = svc.post("/v1/evaluate", json={"elements": _elements(30)})
    assert r.status_code == 429 and "per minute" in r.json()["error"]
    now[0] += 61
    assert svc.post("/v1/evaluate", json={"elements": _elements(30)}).status_code == 200
    log = (tmp_path / "logs" / "requests.jsonl").read_text()
    assert log.count('"refused_rate"') == 1


def test_quota_is_counted_again_after_a_restart(tmp_path: Path, keyring: Keyring) -> None:
    import time

    now = [time.time()]
    svc = _service(tmp_path, keyring, now, daily_quota=100)
    assert svc.post("/v1/evaluate", json={"elements": _elements(90)}).status_code == 200
    restarted = _service(tmp_path, keyring, now, daily_quota=100)
    assert restarted.post("/v1/evaluate", json={"elements": _elements(20)}).status_code == 429
    now[0] += 24 * 3600 + 1
    later = _service(tmp_path, keyring, now, daily_quota=100)
    assert later.post("/v1/evaluate", json={"elements": _elements(20)}).status_code == 200


def test_key16_many_gives_the_bytes_key16_gives(keyring: Keyring) -> None:
    """The batch form the transform stage uses: the same key hashes, pseudonym parts made
    epoch-independent as key16 makes them (and text merely containing the prefix not)."""
    ps = Pseudonymiser(keyring, "D1")
    p = ps.pseudonym(parse_identifier(CF))
    keys = [("1001", "05/03/2020"), (p, "2020"), ("p1.abc",), ("xv2.", p), ("", "")]
    assert ps.key16_many("assessment", keys) == [ps.key16("assessment", *k) for k in keys]
    assert len(set(ps.key16_many("assessment", keys))) == len(keys)
