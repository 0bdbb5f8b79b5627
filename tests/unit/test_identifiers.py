"""Identifier validation: what a volunteer or an IT office would type, right and wrong."""

from __future__ import annotations

import datetime as dt

import pytest
from codicefiscale import codicefiscale as cfl
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.pseudonyms import IdentifierType, InvalidIdentifier, parse_identifier
from hub.pseudonyms.identifiers import cf_birth_year_and_sex
from tests.support.codes import omocodic_variants

GOOD, BAD = "RSSMRA80A01H501U", "RSSMRA80A01H501X"


def test_fixture_codes() -> None:
    ident = parse_identifier(GOOD)
    assert ident.type is IdentifierType.CF and ident.value == GOOD
    with pytest.raises(InvalidIdentifier) as e:
        parse_identifier(BAD)
    assert e.value.rule == "cf_check_char"
    assert "check character" in e.value.message and BAD not in e.value.message


def test_normalisation_spaces_and_case() -> None:
    assert parse_identifier(" rssmra 80a01 h501u ").value == GOOD


def test_reprs_never_show_the_code() -> None:
    ident = parse_identifier(GOOD)
    assert GOOD not in repr(ident) and GOOD not in str(ident)


def test_128_omocodic_variants_are_valid_and_distinct() -> None:
    variants = omocodic_variants(GOOD)
    assert len(variants) == 128
    assert {parse_identifier(v).value for v in variants} == variants  # never merged


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("RSSMRA80A01H501", "cf_length"),
        ("RSSMRA8XA01H501U", "cf_format"),
        ("RSSMRA80A35H501U", "cf_date"),
        ("12345678901", "cf_provv_check_digit"),
        ("STP12345", "stp_format"),
        ("123", "unknown_type"),
        ("", "empty"),
    ],
)
def test_refusals_explain_themselves(code: str, rule: str) -> None:
    expected = IdentifierType.CF if rule == "empty" else None
    with pytest.raises(InvalidIdentifier) as e:
        parse_identifier(code, expected)
    assert e.value.rule == rule
    assert not code or code not in e.value.message


def test_stp_eni_and_provisional() -> None:
    assert parse_identifier("STP0102061234567").type is IdentifierType.STP
    assert parse_identifier("eni0102061234567").type is IdentifierType.ENI
    assert parse_identifier("12345678903").type is IdentifierType.CF_PROVV
    with pytest.raises(InvalidIdentifier, match="13 digits"):
        parse_identifier("STP01020612345", IdentifierType.STP)


def test_local_ids_need_their_ente_and_anonymous_is_none() -> None:
    with pytest.raises(InvalidIdentifier) as e:
        parse_identifier("PROVA BENEF", IdentifierType.LOCAL)
    assert e.value.rule == "local_namespace"
    local = parse_identifier("PROVA BENEF", IdentifierType.LOCAL, namespace="h501")
    assert (local.value, local.namespace) == ("PROVABENEF", "H501")
    assert parse_identifier(None).type is IdentifierType.NONE


def test_birth_year_and_sex_from_the_code() -> None:
    assert cf_birth_year_and_sex(GOOD, reference_year=2026) == (1980, "M")
    women = cfl.encode(
        lastname="Bianchi",
        firstname="Anna",
        gender="F",
        birthdate="03/04/2021",
        birthplace="Novara",
    )
    assert cf_birth_year_and_sex(women, reference_year=2026) == (2021, "F")
    assert cf_birth_year_and_sex(women, reference_year=2020)[0] == 1921


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["Rossi", "Bianchi", "Fò", "De Luca", "Li", "Zanzottera"]),
    st.sampled_from(["Mario", "Anna", "Ugo", "Maria Grazia", "Ida"]),
    st.sampled_from(["M", "F"]),
    st.dates(min_value=dt.date(1920, 1, 1), max_value=dt.date(2025, 12, 31)),
    st.sampled_from(["Novara", "Borgomanero", "Roma", "Milano", "Arona"]),
)
def test_agrees_with_python_codicefiscale(
    surname: str, name: str, sex: str, birth: dt.date, place: str
) -> None:
    code = cfl.encode(
        lastname=surname,
        firstname=name,
        gender=sex,
        birthdate=birth.strftime("%d/%m/%Y"),
        birthplace=place,
    )
    assert parse_identifier(code).value == code
    for variant in list(omocodic_variants(code))[:5]:
        assert cfl.is_valid(variant)
        parse_identifier(variant)
    wrong = code[:15] + ("A" if code[15] != "A" else "B")
    with pytest.raises(InvalidIdentifier):
        parse_identifier(wrong)
