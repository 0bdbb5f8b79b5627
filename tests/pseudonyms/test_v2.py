"""Pseudonyms v2 on ristretto255: the properties v1 had, and enumeration without the key."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from hub.pseudonyms import (
    IdentifierType,
    Keyring,
    KeySource,
    Pseudonymiser,
    group,
    parse_identifier,
    parse_pseudonym_text,
    pseudonym_text,
)
from hub.pseudonyms.identifiers import cf_check_character
from hub.pseudonyms.pseudonymiser import hash_input
from tests.support.codes import omocodic_variants

CF = "RSSMRA80A01H501U"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring.create(tmp_path / "k.json", KeySource.generate_key_file(tmp_path / "k.key"))


def synthetic_cfs(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct valid codici fiscali, computed (letters, date, place, check letter)."""
    rnd = random.Random(seed)
    out: set[str] = set()
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while len(out) < n:
        first15 = (
            "".join(rnd.choices(letters, k=6))
            + f"{rnd.randrange(100):02d}"
            + rnd.choice("ABCDEHLMPRST")
            + f"{rnd.choice([rnd.randint(1, 28), rnd.randint(41, 68)]):02d}"
            + rnd.choice(letters)
            + f"{rnd.randrange(1000):03d}"
        )
        out.add(first15 + cf_check_character(first15))
    return sorted(out)


def test_v2_is_deterministic_per_domain_and_epoch(keyring: Keyring) -> None:
    ident = parse_identifier(CF)
    a = Pseudonymiser(keyring, "D1").pseudonymise_many([ident])[0]
    assert len(a) == 32 and group.is_element(a)
    assert a == Pseudonymiser(keyring, "D1").pseudonymise_many([parse_identifier(CF.lower())])[0]
    assert a != Pseudonymiser(keyring, "D2").pseudonymise_many([ident])[0]
    keyring.rotate()
    assert Pseudonymiser(keyring, "D1").epoch == 2
    assert a != Pseudonymiser(keyring, "D1").pseudonymise_many([ident])[0]
    assert a == Pseudonymiser(keyring, "D1", epoch=1).pseudonymise_many([ident])[0]
    text = Pseudonymiser(keyring, "D1", epoch=1).pseudonym(ident)
    assert text.startswith("v2.1.") and parse_pseudonym_text(text) == (1, a)
    assert pseudonym_text(1, a) == text and CF not in text


def test_it_is_k_times_the_hash_of_the_documented_message(keyring: Keyring) -> None:
    """P = k[domain, epoch] · H("raccordo/v2|TYPE|namespace|value"), H over SHA-512."""
    ident = parse_identifier(CF)
    assert hash_input(ident, "D1") == b"raccordo/v2|CF||" + CF.encode()
    h = group.hash_to_group(b"raccordo/v2|CF||" + CF.encode())
    assert h == bytes(
        __import__("rbcl").crypto_core_ristretto255_from_hash(
            hashlib.sha512(b"raccordo/v2|CF||" + CF.encode()).digest()
        )
    )
    k = keyring.pseudonym_scalar("D1", 1)
    assert Pseudonymiser(keyring, "D1").pseudonymise_many([ident]) == [group.multiply(k, h)]


def test_batch_api_one_per_input_in_order_with_repeats(keyring: Keyring) -> None:
    p = Pseudonymiser(keyring, "D1")
    codes = synthetic_cfs(50)
    idents = [parse_identifier(c, IdentifierType.CF) for c in codes]
    out = p.pseudonymise_many([*idents, idents[3], idents[0]])
    assert len(out) == 52 and out[50] == out[3] and out[51] == out[0]
    fresh = Pseudonymiser(keyring, "D1")
    assert [fresh.pseudonymise_many([i])[0] for i in idents] == out[:50]
    with pytest.raises(ValueError, match="absent"):
        p.pseudonymise_many([parse_identifier("")])


def test_128_omocodic_variants_give_128_v2_pseudonyms(keyring: Keyring) -> None:
    variants = sorted(omocodic_variants(CF))
    out = Pseudonymiser(keyring, "D1").pseudonymise_many([parse_identifier(v) for v in variants])
    assert len(variants) == 128 and len(set(out)) == 128


def test_local_ids_stay_inside_their_ente_and_domain(keyring: Keyring) -> None:
    p = Pseudonymiser(keyring, "D1")
    local = IdentifierType.LOCAL
    a, b = p.pseudonymise_many(
        [
            parse_identifier("X1", local, namespace="H501"),
            parse_identifier("X1", local, namespace="F952"),
        ]
    )
    assert a != b
    # The namespace is the ente inside its domain: D1's ente H501 is not D2's.
    assert hash_input(parse_identifier("X1", local, namespace="H501"), "D1") == (
        b"raccordo/v2|LOCAL|D1/H501|X1"
    )
    c = Pseudonymiser(keyring, "D2").pseudonymise_many(
        [parse_identifier("X1", local, namespace="H501")]
    )[0]
    k1, k2 = keyring.pseudonym_scalar("D1", 1), keyring.pseudonym_scalar("D2", 1)
    converted = group.multiply(group.scalar_mul(k2, group.scalar_invert(k1)), a)
    assert converted != c  # even the conversion factor does not link LOCAL ids


def test_the_keyring_stays_encrypted_and_record_keys_do_not_rotate(
    tmp_path: Path, keyring: Keyring
) -> None:
    text = (tmp_path / "k.json").read_text()
    assert "record_secret" not in text and "secret" not in text
    p = Pseudonymiser(keyring, "D1")
    h = p.key_hash("conn", "stream", CF)
    assert h.startswith("k1.") and CF not in h
    keyring.rotate()
    again = Keyring.open(tmp_path / "k.json", KeySource.from_env(tmp_path / "k.key"))
    assert Pseudonymiser(again, "D1").key_hash("conn", "stream", CF) == h
    assert Pseudonymiser(again, "D1").epoch == 2


@pytest.mark.slow
def test_enumeration_of_1e5_cfs_needs_the_key(keyring: Keyring) -> None:
    """Goal: without the key, enumerating 10⁵ synthetic CFs through anything a worker,
    the registry or an analyst holds matches 0 pseudonyms; with the key, 100%."""
    candidates = synthetic_cfs(100_000)
    people = random.Random(1).sample(candidates, 2_000)
    p = Pseudonymiser(keyring, "D1")
    # What the registry holds:
    registry = {p.pseudonym(parse_identifier(c, IdentifierType.CF)) for c in people}
    raw_registry = {parse_pseudonym_text(t)[1] for t in registry}
    assert len(registry) == 2_000

    # Without the key: every unkeyed function of the identifier an attacker could try.
    idents = [parse_identifier(c, IdentifierType.CF) for c in candidates]
    msgs = [hash_input(i, "D1") for i in idents]
    unkeyed: set[bytes] = set()
    for m, c in zip(msgs, candidates, strict=True):
        unkeyed.add(group.hash_to_group(m))
        unkeyed.add(hashlib.sha256(c.encode()).digest())
        unkeyed.add(hashlib.sha512(m).digest()[:32])
    wrong = Keyring.create(keyring.path.with_name("w.json"), KeySource(key=b"\x01" * 32))
    guessed = Pseudonymiser(wrong, "D1").pseudonymise_many(idents[:20_000])
    assert not (unkeyed | set(guessed)) & raw_registry
    assert not {pseudonym_text(1, x) for x in unkeyed} & registry

    # With the key (the service's or the embedded keyring's): every person is found.
    with_key = Pseudonymiser(keyring, "D1").pseudonymise_many(idents)
    found = {pseudonym_text(1, x) for x in with_key} & registry
    assert len(found) == len(registry)


def test_invalid_elements_are_refused(keyring: Keyring) -> None:
    k = keyring.pseudonym_scalar("D1", 1)
    for bad in (bytes(32), b"\xff" * 32, b"\x01" * 32, b"\x00" * 31, b""):
        assert not group.is_element(bad)
        with pytest.raises(ValueError, match="not a ristretto255 element"):
            group.multiply(k, bad)
    with pytest.raises(ValueError, match="not a v2 pseudonym"):
        parse_pseudonym_text("v2.1." + "A" * 43)
    with pytest.raises(ValueError, match="not a v2 pseudonym"):
        parse_pseudonym_text("1.abcdefghijklmnop")
