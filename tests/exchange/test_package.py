"""Packages in one process: build, open, receipts, refusals, replay and loading."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.exchange import crypto
from hub.exchange import package as pk
from hub.exchange.errors import PackageRefused
from hub.exchange.home import init_home
from hub.exchange.receive import Receiver
from hub.exchange.send import extract_records
from hub.registry import Registry
from hub.registry import tables as t
from tests.exchange.conftest import TODAY, Parties, share, sign_both, write_convenzione
from tests.exchange.support import InProcessTestConverter, double_convert, pseudonym, seed
from tests.support.rows import pseudonyms_of

CONV = "conv-A-B-2026"
PERIOD = (dt.date(2026, 1, 1), dt.date(2026, 6, 30))


def episodes(n: int = 3, start: int = 0) -> list[pk.Row]:
    """``n`` case episodes of people ``start``…, already in B's domain."""
    return [
        pk.Row(
            "case_episode",
            f"key{i}",
            {
                "subject": double_convert("DOM_B", pseudonym(i)),
                "area": "ANZIANI",
                "opened_on": dt.date(2025, 3, i % 28 + 1),
                "closed_on": None,
            },
        )
        for i in range(start, start + n)
    ]


_rows = episodes


def _build(parties: Parties, rows: list[pk.Row] | None = None) -> pk.Package:
    cf = parties.a.convenzioni.get(CONV)
    return pk.build(parties.a, cf, recipient="DISTRETTO_B", rows=rows or _rows(), period=PERIOD)


def test_a_package_opens_only_for_its_recipient_and_verifies(parties: Parties) -> None:
    p = _build(parties)
    assert p.headers["Digest"] == crypto.digest_header(p.body)
    _, claims = crypto.jws_unverified(p.headers["Agid-JWT-Signature"])
    assert claims["iss"] == "DISTRETTO_A" and claims["aud"] == "DISTRETTO_B"
    assert claims["jti"] == p.id
    assert {"digest": p.headers["Digest"]} in claims["signed_headers"]
    assert b"ANZIANI" not in p.body  # sealed
    opened = pk.open_package(parties.b, parties.b.convenzioni, p.headers, p.body)
    assert opened.reasons == [] and opened.authenticated
    assert [r.values["area"] for r in opened.rows] == ["ANZIANI"] * 3
    assert opened.manifest is not None
    assert opened.manifest["tables"]["case_episode"] == {
        "rows": 3,
        "tombstones": 0,
        "fields": ["area", "closed_on", "opened_on", "subject"],
    }
    assert opened.manifest["pseudonym_domain"] == "DOM_B"


def test_altered_in_transit_is_refused(parties: Parties) -> None:
    p = _build(parties)
    body = bytearray(p.body)
    body[len(body) // 2] ^= 1
    opened = pk.open_package(parties.b, parties.b.convenzioni, p.headers, bytes(body))
    assert opened.reasons == [
        "the body does not match its Digest header: the package was altered in transit "
        "or truncated; the sender should send it again"
    ]
    # An attacker who also rewrites the Digest header breaks the sender's JWS over it.
    headers = {**p.headers, "Digest": crypto.digest_header(bytes(body))}
    opened = pk.open_package(parties.b, parties.b.convenzioni, headers, bytes(body))
    assert opened.reasons == ["the JWS does not sign this body's Digest"]
    assert not opened.authenticated


def test_a_package_for_another_recipient_is_refused(tmp_path: Path, parties: Parties) -> None:
    c = init_home(tmp_path / "C", party="DISTRETTO_C", pseudonym_domain="DOM_C")
    conv = write_convenzione(
        tmp_path / "ac",
        parties.a,
        c,
        conv_id="conv-A-C",
        flows=[
            {
                "from": "DISTRETTO_A",
                "to": "DISTRETTO_C",
                "kind": "records",
                "frequency": "monthly",
                "tables": {"case_episode": ["subject", "area", "opened_on", "closed_on"]},
            }
        ],
    )
    # write_convenzione names the second party DISTRETTO_B's slot after the home given.
    sign_both(conv, parties.a, c)
    share(conv, parties.a, c, parties.b)
    cf = parties.a.convenzioni.get("conv-A-C")
    p = pk.build(parties.a, cf, recipient="DISTRETTO_C", rows=_rows(), period=PERIOD)
    opened = pk.open_package(parties.b, parties.b.convenzioni, p.headers, p.body)
    assert opened.reasons == [
        "the package is addressed to DISTRETTO_C, not to DISTRETTO_B (wrong recipient)"
    ]


def test_sender_refuses_a_field_the_convenzione_does_not_allow(parties: Parties) -> None:
    rows = [pk.Row("subject", "k", {"subject": "2.x", "citizenship": "ITA"})]
    with pytest.raises(PackageRefused) as e:
        _build(parties, rows)
    assert e.value.errors == [
        "field(s) 'citizenship' of table 'subject' may not flow under convenzione "
        "conv-A-B-2026 (allowed: birth_year, sex, subject)"
    ]
    (entry,) = parties.a.log.find(kind="refused")
    assert entry["direction"] == "out" and "citizenship" in entry["reason"]


def test_recipient_refuses_what_its_convenzione_does_not_allow(
    parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that skips its own check (a bug, or a compromised sender) is stopped anyway."""
    monkeypatch.setattr(pk, "refusals", lambda *a, **k: [])
    p = _build(parties, [pk.Row("intervention", "k", {"subject": "2.x", "amount": "10.00"})])
    monkeypatch.undo()
    receiver = Receiver(parties.b, None)
    status, receipt = receiver.handle(p.headers, p.body)
    assert status == 422 and receipt["status"] == "refused"
    assert receipt["reasons"] == [
        "table 'intervention' may not flow from DISTRETTO_A to DISTRETTO_B under convenzione "
        "conv-A-B-2026 (allowed: case_episode, subject)"
    ]
    pk.verify_receipt(receipt, p, parties.a.convenzioni.get(CONV))


def test_an_expired_convenzione_stops_the_package_at_both_ends(
    tmp_path: Path, parties: Parties
) -> None:
    p = _build(parties)
    # The recipient's copy expires (a later, re-signed version with an earlier expiry).
    conv = write_convenzione(
        tmp_path / "exp",
        parties.a,
        parties.b,
        start=TODAY - dt.timedelta(days=90),
        expiry=TODAY - dt.timedelta(days=1),
    )
    sign_both(conv, parties.a, parties.b)
    share(conv, parties.a, parties.b)
    opened = pk.open_package(parties.b, parties.b.convenzioni, p.headers, p.body)
    assert any("expired on" in r for r in opened.reasons)
    with pytest.raises(PackageRefused, match="outside convenzione"):
        _build(parties)


def test_receive_loads_once_and_a_replay_gets_the_same_receipt(
    parties: Parties, tmp_path: Path
) -> None:
    reg = Registry.open(f"sqlite:///{tmp_path}/b.sqlite")
    receiver = Receiver(parties.b, reg)
    p = _build(parties)
    status, receipt = receiver.handle(p.headers, p.body)
    assert status == 200, receipt
    assert receipt["counts"] | {"run_id": 0} == {
        "received": 3,
        "loaded": 3,
        "unchanged": 0,
        "deleted": 0,
        "quarantined": 0,
        "run_id": 0,
    }
    pk.verify_receipt(receipt, p, parties.a.convenzioni.get(CONV))
    assert receipt["log_head"]["size"] == 1
    status2, again = receiver.handle(p.headers, p.body)
    assert status2 == 200 and again == receipt
    assert reg.count("case_episode") == 3
    with reg.engine.connect() as conn:
        orgs = conn.execute(sa.select(t.case_episodes.c.org).distinct()).scalars().all()
        subjects = set(pseudonyms_of(conn, t.case_episodes))
    assert orgs == ["DISTRETTO_A"]
    assert subjects == {double_convert("DOM_B", pseudonym(i)) for i in range(3)}
    kinds = [e["kind"] for e in parties.b.log.entries()]
    assert kinds == ["received", "replayed"]
    # The same rows in a new package (the sender lost its receipt): nothing duplicated.
    status3, third = receiver.handle(*_headers_body(_build(parties)))
    assert status3 == 200 and third["counts"]["unchanged"] == 3 and third["counts"]["loaded"] == 0
    assert reg.count("case_episode") == 3


def _headers_body(p: pk.Package) -> tuple[dict[str, str], bytes]:
    return p.headers, p.body


def test_bad_values_are_quarantined_and_counted_tombstones_delete(
    parties: Parties, tmp_path: Path
) -> None:
    reg = Registry.open(f"sqlite:///{tmp_path}/b.sqlite")
    receiver = Receiver(parties.b, reg)
    someone = double_convert("DOM_B", pseudonym(9))
    bad = {"subject": someone, "area": "ANZIANI", "opened_on": "not a date", "closed_on": None}
    # A person travels as a v2 pseudonym of the recipient's domain, nothing else.
    not_pseudonym = {"subject": "2.y", "area": "ANZIANI", "opened_on": "2025-01-01"}
    rows = [
        *_rows(2),
        pk.Row("case_episode", "bad", bad),
        pk.Row("case_episode", "bad2", {**not_pseudonym, "closed_on": None}),
    ]
    status, receipt = receiver.handle(*_headers_body(_build(parties, rows)))
    assert status == 200
    c = receipt["counts"]
    assert (c["received"], c["loaded"], c["quarantined"]) == (4, 2, 2)
    q2, q = reg.quarantine_entries()
    assert q["rule"] == q2["rule"] == "exchange.row"
    assert q["reason"] == "opened_on is not a date (YYYY-MM-DD)"
    assert "not a date" not in q["payload"]  # the value itself is never kept
    assert q2["reason"] == "subject is not a pseudonym" and "2.y" not in q2["payload"]
    tomb = [pk.Row("case_episode", "key0", {}, "delete")]
    status, receipt = receiver.handle(*_headers_body(_build(parties, tomb)))
    assert status == 200 and receipt["counts"]["deleted"] == 1
    assert reg.count("case_episode") == 1


def test_extract_sends_converted_pseudonyms_changes_and_tombstones(
    parties: Parties, tmp_path: Path
) -> None:
    reg_a = Registry.open(f"sqlite:///{tmp_path}/a.sqlite")
    seed(reg_a, 5)
    conv = InProcessTestConverter()
    cf = parties.a.convenzioni.get(CONV)
    ex = extract_records(reg_a, cf, parties.a, "DISTRETTO_B", conv)
    assert len(ex.rows) == 10  # 5 subjects + 5 episodes
    assert conv.calls == [{"from": "DOM_A", "to": "DOM_B", "convenzione": CONV, "n": 5}]
    sent = {r.values["subject"] for r in ex.rows}
    assert sent == {double_convert("DOM_B", pseudonym(i)) for i in range(5)}
    assert not sent & {pseudonym(i) for i in range(5)}  # never the sender's pseudonyms
    # Only allowed fields leave: subject rows carry no comune or citizenship.
    assert {k for r in ex.rows if r.table == "subject" for k in r.values} == {
        "subject",
        "birth_year",
        "sex",
    }


def test_retention_at_the_recipient_purges_old_rows(parties: Parties, tmp_path: Path) -> None:
    from hub.exchange.load import purge_expired

    reg = Registry.open(f"sqlite:///{tmp_path}/b.sqlite")
    receiver = Receiver(parties.b, reg)
    assert receiver.handle(*_headers_body(_build(parties)))[0] == 200
    cf = parties.b.convenzioni.get(CONV)
    kw = {
        "sender": "DISTRETTO_A",
        "convenzione": CONV,
        "convenzione_digest": cf.digest,
        "retention": dt.timedelta(days=365),
    }
    assert purge_expired(reg, **kw) == 0  # type: ignore[arg-type]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=366)
    assert purge_expired(reg, now=later, **kw) == 3  # type: ignore[arg-type]
    assert reg.count("case_episode") == 0
    assert reg.runs(limit=1)[0].deleted == 3


@pytest.mark.parametrize(
    "claims",
    [
        {"signed_headers": "digest"},
        {"nbf": "soon"},
        {"exp": None},
        {"aud": ["DISTRETTO_B"]},
        {"jti": {"x": 1}},
    ],
)
def test_malformed_but_signed_headers_are_refused_never_raised(
    parties: Parties, claims: dict[str, object]
) -> None:
    p = _build(parties)
    _, good = crypto.jws_unverified(p.headers["Agid-JWT-Signature"])
    token = crypto.jws_sign(parties.a.signing_key, {"typ": "JWT"}, {**good, **claims})
    headers = {**p.headers, "Agid-JWT-Signature": token}
    opened = pk.open_package(parties.b, parties.b.convenzioni, headers, p.body)
    assert opened.reasons and not opened.authenticated
    status, receipt = Receiver(parties.b, None).handle(headers, p.body)
    assert status in (400, 422) and receipt["status"] == "refused"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Digest": "x"}, {"Agid-JWT-Signature": "a.b.c"}, {"agid-jwt-signature": "...."}],
)
def test_garbage_is_refused_with_a_reason(parties: Parties, headers: dict[str, str]) -> None:
    status, receipt = Receiver(parties.b, None).handle(headers, b"\x00garbage")
    assert status == 400 and receipt["reasons"]


def test_a_registry_failure_answers_503_without_a_receipt_and_the_retry_loads(
    parties: Parties, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from hub.exchange import receive
    from hub.exchange.server import create_app

    reg = Registry.open(f"sqlite:///{tmp_path}/b.sqlite")
    client = TestClient(create_app(parties.b, reg))
    p = _build(parties)

    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("INSERT … '2.secret-pseudonym'", {}, Exception("down"))

    monkeypatch.setattr(receive, "load_records", down)
    r = client.post("/v1/packages", content=p.body, headers=p.headers)
    assert r.status_code == 503
    assert "secret" not in r.text and "OperationalError" in r.json()["error"]
    assert not list((parties.b.path / "inbox").glob("*.json"))
    monkeypatch.undo()
    r = client.post("/v1/packages", content=p.body, headers=p.headers)
    assert r.status_code == 200 and r.json()["counts"]["loaded"] == 3


def test_a_package_never_delivered_before_it_expired_is_set_aside(parties: Parties) -> None:
    from hub.exchange.send import Outbox

    cf = parties.a.convenzioni.get(CONV)
    old = dt.datetime.now(dt.UTC) - pk.VALIDITY - dt.timedelta(hours=1)
    p = pk.build(parties.a, cf, recipient="DISTRETTO_B", rows=_rows(), period=PERIOD, now=old)
    outbox = Outbox(parties.a)
    outbox.put(p, {"x": ["case_episode", "d"]})
    d = outbox.deliver(p.id)  # no endpoint is contacted: it is not valid any more
    assert d.status == "expired"
    assert outbox.pending_for(CONV, "DISTRETTO_B") == []
    # Its rows were never acknowledged, so the next extract sends them again.
    from hub.exchange.send import acknowledged

    assert acknowledged(parties.a, CONV, "DISTRETTO_B") == {}
