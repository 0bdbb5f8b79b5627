"""Convenzioni: schema errors that name the field, signatures, states and the package check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.exchange import convenzioni as cv
from hub.exchange.errors import ConvenzioneError
from tests.exchange.conftest import TODAY, Parties, sign_both, write_convenzione

runner = CliRunner()


def shape(**kw: object) -> cv.PackageShape:
    base: dict[str, object] = {
        "convenzione": "conv-A-B-2026",
        "sender": "DISTRETTO_A",
        "recipient": "DISTRETTO_B",
        "purpose": "continuita-presa-in-carico",
        "kind": "records",
        "tables": {"case_episode": ["subject", "area", "opened_on"]},
    }
    base.update(kw)
    return cv.PackageShape(**base)  # type: ignore[arg-type]


def test_signed_by_both_is_active(parties: Parties) -> None:
    cf = cv.load(parties.conv)
    assert cf.signed_by == ["DISTRETTO_A", "DISTRETTO_B"]
    assert cf.state() == "active"
    assert cv.refusals(cf, shape()) == []


def test_signed_by_one_is_a_draft_and_nothing_flows(tmp_path: Path, parties: Parties) -> None:
    path = write_convenzione(tmp_path / "one", parties.a, parties.b)
    cv.sign(path, "DISTRETTO_A", parties.a.signing_key)
    cf = cv.load(path)
    assert cf.state() == "draft"
    assert cv.refusals(cf, shape()) == [
        "convenzione conv-A-B-2026 is not signed yet by DISTRETTO_B"
    ]


def test_an_edit_after_signing_voids_the_signatures(parties: Parties) -> None:
    text = parties.conv.read_text().replace("retention_days = 365", "retention_days = 3650")
    parties.conv.write_text(text)
    cf = cv.load(parties.conv)
    assert cf.state() == "tampered"
    assert sorted(cf.bad_signatures) == ["DISTRETTO_A", "DISTRETTO_B"]
    (reason,) = cv.refusals(cf, shape())
    assert "changed after it was signed" in reason


def test_a_party_cannot_sign_with_another_key(parties: Parties) -> None:
    with pytest.raises(ConvenzioneError, match="not the one the file lists"):
        cv.sign(parties.conv, "DISTRETTO_A", parties.b.signing_key)
    with pytest.raises(ConvenzioneError, match="not a party"):
        cv.sign(parties.conv, "DISTRETTO_Z", parties.a.signing_key)


def test_expired_and_not_yet_in_force(tmp_path: Path, parties: Parties) -> None:
    old = write_convenzione(
        tmp_path / "old",
        parties.a,
        parties.b,
        start=TODAY - dt.timedelta(days=400),
        expiry=TODAY - dt.timedelta(days=1),
    )
    sign_both(old, parties.a, parties.b)
    cf = cv.load(old)
    assert cf.state() == "expired"
    expiry = TODAY - dt.timedelta(days=1)
    assert cv.refusals(cf, shape()) == [
        f"convenzione conv-A-B-2026 expired on {expiry}: nothing may flow under it any more"
    ]
    future = write_convenzione(
        tmp_path / "future", parties.a, parties.b, start=TODAY + dt.timedelta(days=3)
    )
    sign_both(future, parties.a, parties.b)
    assert cv.load(future).state() == "not-yet-in-force"


def test_revocation_stops_every_flow_and_is_verified(parties: Parties) -> None:
    now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    cv.revoke(parties.conv, "DISTRETTO_B", parties.b.signing_key, "end of the project", now)
    cf = cv.load(parties.conv)
    assert cf.state() == "revoked"
    assert cv.refusals(cf, shape()) == [
        "convenzione conv-A-B-2026 was revoked by DISTRETTO_B on 2026-12-01: end of the project"
    ]
    # A forged revocation file still stops the flows (fails closed), marked unverified.
    rev = parties.conv.with_name(parties.conv.name + ".revoked")
    rev.write_text(rev.read_text().replace("end of the project", "forged"))
    assert cv.load(parties.conv).revocation.by == "(unverified)"  # type: ignore[union-attr]
    # A document for another party's copy is accepted only if it verifies.
    with pytest.raises(ConvenzioneError, match="does not verify"):
        cv.accept_revocation(parties.conv, {"convenzione": "conv-A-B-2026", "by": "DISTRETTO_B"})


def test_refusals_name_table_field_direction_and_purpose(parties: Parties) -> None:
    cf = cv.load(parties.conv)
    assert cv.refusals(cf, shape(tables={"intervention": ["subject", "amount"]})) == [
        "table 'intervention' may not flow from DISTRETTO_A to DISTRETTO_B under convenzione "
        "conv-A-B-2026 (allowed: case_episode, subject)"
    ]
    assert cv.refusals(cf, shape(tables={"subject": ["subject", "citizenship"]})) == [
        "field(s) 'citizenship' of table 'subject' may not flow under convenzione conv-A-B-2026 "
        "(allowed: birth_year, sex, subject)"
    ]
    assert cv.refusals(cf, shape(sender="DISTRETTO_B", recipient="DISTRETTO_A")) == [
        "convenzione conv-A-B-2026 lets no records flow from DISTRETTO_B to DISTRETTO_A"
    ]
    assert cv.refusals(cf, shape(purpose="ricerca")) == [
        "the package's purpose 'ricerca' is not the purpose of convenzione conv-A-B-2026 "
        "('continuita-presa-in-carico')"
    ]
    assert cv.refusals(cf, shape(recipient="DISTRETTO_Z")) == [
        "the recipient DISTRETTO_Z is not a party of convenzione conv-A-B-2026"
    ]


def test_aggregates_need_their_k(parties: Parties) -> None:
    cf = cv.load(parties.conv)
    agg = shape(sender="DISTRETTO_B", recipient="DISTRETTO_A", kind="aggregates", tables={})
    assert (
        cv.refusals(cf, cv.PackageShape(**{**agg.__dict__, "indicators": {"prese_in_carico": 5}}))
        == []
    )
    assert cv.refusals(
        cf, cv.PackageShape(**{**agg.__dict__, "indicators": {"prese_in_carico": 3}})
    ) == [
        "indicator 'prese_in_carico' was suppressed below 3 people, but convenzione "
        "conv-A-B-2026 requires at least 5"
    ]


def test_schema_errors_name_the_file_and_each_field(tmp_path: Path, parties: Parties) -> None:
    path = write_convenzione(
        tmp_path / "bad",
        parties.a,
        parties.b,
        flows=[
            {
                "from": "DISTRETTO_A",
                "to": "DISTRETTO_A",
                "kind": "records",
                "frequency": "monthly",
                "tables": {"subject": ["subject"]},
            },
            {
                "from": "DISTRETTO_A",
                "to": "DISTRETTO_B",
                "kind": "records",
                "frequency": "hourly",
                "tables": {"subject": ["subject"]},
            },
            {
                "from": "DISTRETTO_A",
                "to": "DISTRETTO_B",
                "kind": "records",
                "frequency": "monthly",
                "tables": {"subject": ["subject", "key_hash"]},
            },
        ],
    )
    text = path.read_text().replace('legal_basis = "', 'legal_basis_typo = "')
    path.write_text(text)
    with pytest.raises(ConvenzioneError) as exc:
        cv.load(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "legal_basis: Field required" in msg
    assert "legal_basis_typo: Extra inputs are not permitted" in msg
    assert "flows.0: a flow goes between two parties, not from DISTRETTO_A to itself" in msg
    assert "flows.1.frequency: Input should be" in msg
    # key_hash is the registry's own: it never flows.
    assert "flows.2: table 'subject' has no exchangeable field 'key_hash'" in msg


def test_cli_validate_list_show(parties: Parties, tmp_path: Path) -> None:
    res = runner.invoke(app, ["convenzioni", "validate", str(parties.conv)])
    assert res.exit_code == 0, res.output
    assert "conv-A-B-2026 — active (signed by DISTRETTO_A, DISTRETTO_B)" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("id = 'x'\n[[parties\n")
    res = runner.invoke(app, ["convenzioni", "validate", str(bad)])
    assert res.exit_code == 20
    assert "not a valid TOML file" in res.output
    res = runner.invoke(app, ["convenzioni", "list", "--home", str(parties.a.path), "--json"])
    assert res.exit_code == 0, res.output
    (listed,) = json.loads(res.output)
    assert listed["id"] == "conv-A-B-2026" and listed["state"] == "active"
    assert listed["signed_by"] == ["DISTRETTO_A", "DISTRETTO_B"]
    res = runner.invoke(
        app, ["convenzioni", "show", "conv-A-B-2026", "--home", str(parties.b.path)]
    )
    assert res.exit_code == 0, res.output
    assert "flow DISTRETTO_A → DISTRETTO_B, records, on_demand" in res.output
    assert "prese_in_carico (k ≥ 5)" in res.output


def test_cli_sign_and_revoke(parties: Parties, tmp_path: Path) -> None:
    path = write_convenzione(tmp_path / "new", parties.a, parties.b, conv_id="conv-new")
    res = runner.invoke(app, ["convenzioni", "sign", str(path), "--home", str(parties.a.path)])
    assert res.exit_code == 0, res.output
    assert "still to sign: DISTRETTO_B" in res.output
    res = runner.invoke(app, ["convenzioni", "sign", str(path), "--home", str(parties.b.path)])
    assert "State: active" in res.output
    res = runner.invoke(
        app,
        ["convenzioni", "revoke", str(path), "--home", str(parties.b.path), "--reason", "ended"],
    )
    assert res.exit_code == 0, res.output
    assert cv.load(path).state() == "revoked"
    assert parties.b.log.find(kind="revoked", convenzione="conv-new")


def test_cli_exchange_init_and_keys(tmp_path: Path) -> None:
    home = tmp_path / "H"
    res = runner.invoke(
        app,
        ["exchange", "init", "--home", str(home), "--party", "DISTRETTO_H", "--domain", "DOM_H"],
    )
    assert res.exit_code == 0, res.output
    assert (home / "keys" / "signing.key").stat().st_mode & 0o777 == 0o600
    res = runner.invoke(app, ["exchange", "keys", "--home", str(home)])
    keys = json.loads(res.output)
    assert keys["code"] == "DISTRETTO_H" and keys["pseudonym_domain"] == "DOM_H"
    assert len(keys["signing_key"]) == 43 and len(keys["encryption_key"]) == 1622
    again = runner.invoke(
        app, ["exchange", "init", "--home", str(home), "--party", "X", "--domain", "D"]
    )
    assert again.exit_code == 20 and "already holds exchange keys" in again.output
    missing = runner.invoke(app, ["exchange", "status", "--home", str(tmp_path / "nowhere")])
    assert missing.exit_code == 20 and "no exchange.toml here" in missing.output
