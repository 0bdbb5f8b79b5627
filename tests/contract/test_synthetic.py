"""The synthetic connector: contract, determinism, valid and bad records as promised."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from codicefiscale import codicefiscale

from connectors.synthetic import (
    BAD_KINDS,
    BIRTH_YEARS,
    SYNTHETIC_NAMES,
    SyntheticConfig,
    SyntheticConnector,
    bad_kind,
    expected_bad,
    is_bad,
)
from hub.connector import RawRecord, StateCheckpoint
from hub.pseudonyms import IdentifierType
from hub.pseudonyms.identifiers import InvalidIdentifier, cf_birth_year_and_sex, parse_identifier
from tests.contract.suite import connector_contract_tests

ROOT = Path(__file__).resolve().parents[2]

TestSyntheticContract = connector_contract_tests(
    lambda: SyntheticConnector(SyntheticConfig(count=180, checkpoint_every=25))
)


def records(**config: object) -> list[dict[str, str]]:
    conn = SyntheticConnector(SyntheticConfig.model_validate(config))
    return [dict(i.data) for i in conn.read("cases", {}) if isinstance(i, RawRecord)]


def defects(rec: dict[str, str]) -> set[str]:
    """Which of the promised defects a record has, found independently of the generator."""
    found = set()
    try:
        parse_identifier(rec["cf"], IdentifierType.CF)
    except InvalidIdentifier as e:
        assert e.rule == "cf_check_char"
        found.add("cf_check_char")
    if rec["area"] not in {"MIN", "FAM", "DIS", "ANZ", "POV", "IMM", "DIP", "MUL"}:
        found.add("unmapped_code")
    try:
        dt.datetime.strptime(rec["opened"], "%d/%m/%Y")
    except ValueError:
        found.add("bad_date")
    return found


def test_same_seed_same_records_and_a_small_run_is_a_prefix_of_a_big_one() -> None:
    big = records(count=400, seed=5)
    assert records(count=40, seed=5) == big[:40]
    assert records(count=40, seed=6) != big[:40]
    assert [r["case_id"] for r in big] == [f"C{i:08d}" for i in range(400)]


def test_bad_records_are_exactly_the_expected_ones() -> None:
    recs = records(count=3000, bad_ratio=0.05, seed=3)
    found = {i: defects(r) for i, r in enumerate(recs) if defects(r)}
    assert len(found) == expected_bad(3000, 0.05, 3)
    assert 100 < len(found) < 200  # about 5%
    for i, kinds in found.items():
        assert is_bad(i, 0.05, 3) and kinds == {bad_kind(i)}
    assert Counter(k for kinds in found.values() for k in kinds).keys() == set(BAD_KINDS)
    assert expected_bad(500, 0.0, 3) == 0 and expected_bad(500, 1.0, 3) == 500


def test_good_codici_fiscali_are_valid_and_match_the_names() -> None:
    for rec in records(count=600, bad_ratio=0.0, seed=2):
        cf = rec["cf"]
        assert codicefiscale.is_valid(cf), "a generated CF must be valid for an independent library"
        assert cf[:3] == codicefiscale.encode_lastname(rec["cognome"])
        assert cf[3:6] == codicefiscale.encode_firstname(rec["nome"])
        year, sex = cf_birth_year_and_sex(cf, reference_year=2026)
        assert BIRTH_YEARS[0] <= year <= BIRTH_YEARS[1]
        assert (sex == "F") == (int(cf[9:11]) > 40)


def test_bad_check_characters_are_refused_by_an_independent_library() -> None:
    bad = [r for r in records(count=2000, bad_ratio=0.2, seed=4) if "cf_check_char" in defects(r)]
    assert bad
    assert not any(codicefiscale.is_valid(r["cf"]) for r in bad)


def test_people_recur_with_the_same_household_and_comune() -> None:
    recs = records(count=2000, bad_ratio=0.0, seed=7)
    first: dict[str, dict[str, str]] = {}
    repeats = 0
    for rec in recs:
        person = {k: rec[k] for k in ("cognome", "nome", "household_id", "comune")}
        if rec["cf"] in first:
            repeats += 1
            assert first[rec["cf"]] == person
        first.setdefault(rec["cf"], person)
    assert 0.2 < repeats / len(recs) < 0.4  # about 30% of records are about someone seen before
    households: dict[str, set[str]] = {}
    for rec in recs:
        households.setdefault(rec["household_id"], set()).add(rec["comune"])
    assert all(len(c) == 1 for c in households.values()), "a household lives in one comune"
    assert len(households) < len(first)  # households group several people


def test_values_have_the_documented_formats() -> None:
    novara = {
        row["istat"]: row["cadastral_code"]
        for row in csv.DictReader(
            line
            for line in (ROOT / "hub/data/comuni_novara.csv").read_text().splitlines()
            if not line.startswith("#")
        )
    }
    for rec in records(count=500, bad_ratio=0.0, org_code="CISS7"):
        assert rec["comune"] in novara
        assert rec["cf"][11:15] in novara.values()
        assert rec["household_id"].startswith("CISS7-")
        assert "CISS7" not in rec["cf"] + rec["case_id"]
        assert re.fullmatch(r"[A-C]\d\.\d\d", rec["service"])
        assert re.fullmatch(r"(\d{1,3}(\.\d{3})*,\d\d)?", rec["amount"])
        for f in ("opened", "closed", "assessed"):
            assert rec[f] == "" or dt.datetime.strptime(rec[f], "%d/%m/%Y")
        assert rec["disability"] in ("S", "N", "") and rec["non_self_sufficient"] in ("S", "N", "")
        assert (rec["assessed"] == "") == (rec["disability"] == "")
        assert {rec["cognome"], rec["nome"]} <= set(SYNTHETIC_NAMES)
        assert all(isinstance(v, str) for v in rec.values())


def test_checkpoints_every_n_records_and_at_the_end() -> None:
    conn = SyntheticConnector(SyntheticConfig(count=23, checkpoint_every=10))
    items = list(conn.read("cases", {}))
    marks = [(n, i.state) for n, i in enumerate(items) if isinstance(i, StateCheckpoint)]
    assert marks == [(10, {"next": 10}), (21, {"next": 20}), (25, {"next": 23})]
    rest = [i.location for i in conn.read("cases", {"next": 20}) if isinstance(i, RawRecord)]
    assert rest == ["synthetic record 20", "synthetic record 21", "synthetic record 22"]
    assert list(SyntheticConnector(SyntheticConfig(count=0)).read("cases", {})) == [
        StateCheckpoint({"next": 0})
    ]


def test_config_bounds() -> None:
    for bad in ({"count": -1}, {"count": 10_000_001}, {"bad_ratio": 1.5}, {"org_code": "a b"}):
        with pytest.raises(ValueError):
            SyntheticConfig.model_validate(bad)


def test_crash_hook_kills_the_process_before_record_n() -> None:
    code = (
        "from connectors.synthetic import SyntheticConfig, SyntheticConnector\n"
        "for item in SyntheticConnector(SyntheticConfig(count=50)).read('cases', {}):\n"
        "    print(type(item).__name__, flush=True)\n"
    )
    env = {**os.environ, "RACCORDO_SYNTHETIC_CRASH_AT": "7"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == -signal.SIGKILL
    assert res.stdout.split() == ["RawRecord"] * 7
