"""Aggregate packages: the observatory's disclosure control with the open-data ledger,
suppressed cells as their own value, snapshot-replace and withdrawal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.exchange import package as pk
from hub.exchange.errors import PackageRefused
from hub.exchange.receive import Receiver
from hub.exchange.send import Outbox, send_aggregates
from hub.observatory.aggregates import refresh
from hub.observatory.disclosure import Ledger
from hub.observatory.table import Period
from hub.registry import Registry
from tests.exchange.conftest import Parties
from tests.exchange.support import seed

CONV = "conv-A-B-2026"
YEAR = Period.year(2024)


def _table(cells: list[list[Any]], k: int = 5, **kw: Any) -> dict[str, Any]:
    return {
        "id": "prese_in_carico",
        "unit": "persone",
        "k": k,
        "withdrawn": False,
        "rows": ["r1", "r2"],
        "cols": ["c1"],
        "cells": cells,
        "row_totals": [row[0] for row in cells],
        "col_totals": [None],
        "total": None,
        **kw,
    }


def _build(parties: Parties, table: dict[str, Any]) -> pk.Package:
    cf = parties.b.convenzioni.get(CONV)
    return pk.build(
        parties.b,
        cf,
        recipient="DISTRETTO_A",
        aggregates={"prese_in_carico": table},
        period=(YEAR.start, YEAR.end),
    )


def test_a_suppressed_cell_is_a_value_of_its_own_and_zeros_travel(parties: Parties) -> None:
    p = _build(parties, _table([["*"], [0]]))
    status, receipt = Receiver(parties.a, None).handle(p.headers, p.body)
    assert status == 200, receipt
    (snap,) = (parties.a.path / "received" / CONV / "DISTRETTO_B").glob("*.json")
    assert snap.name == "prese_in_carico.2024-01-01.2024-12-31.json"
    assert json.loads(snap.read_text())["table"]["cells"] == [["*"], [0]]


def test_an_unsuppressed_small_count_is_refused_at_both_ends(
    parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PackageRefused) as e:
        _build(parties, _table([[2], [7]]))
    assert e.value.errors == [
        "table 'prese_in_carico' shows a count below 5 that should have been suppressed"
    ]
    monkeypatch.setattr(pk, "_disclosure", lambda *a, **k: [])
    p = _build(parties, _table([[2], [7]]))
    monkeypatch.undo()
    status, receipt = Receiver(parties.a, None).handle(p.headers, p.body)
    assert status == 422
    assert receipt["reasons"] == [
        "table 'prese_in_carico' shows a count below 5 that should have been suppressed"
    ]
    with pytest.raises(PackageRefused, match="suppressed below 3 people"):
        _build(parties, _table([["*"], [7]], k=3))


def test_snapshot_replace_and_withdrawal(parties: Parties) -> None:
    receiver = Receiver(parties.a, None)
    folder = parties.a.path / "received" / CONV / "DISTRETTO_B"
    for table in (
        _table([[9], [7]]),
        _table([[10], [7]]),
        {"id": "prese_in_carico", "k": 5, "withdrawn": True, "cells": []},
    ):
        p = _build(parties, table)
        assert receiver.handle(p.headers, p.body)[0] == 200
    (snap,) = folder.glob("*.json")
    assert json.loads(snap.read_text())["table"]["withdrawn"] is True


def test_send_aggregates_uses_disclosure_control_and_records_the_ledger(
    parties: Parties, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg_b = Registry.open(f"sqlite:///{tmp_path}/b.sqlite")
    seed(reg_b, 40)
    refresh(reg_b.engine)
    ledger_path = tmp_path / "ledger.json"
    ledger = Ledger.load(ledger_path)
    sent: list[pk.Package] = []

    def deliver(self: Outbox, package_id: str, **_: Any) -> Any:
        sent.append(self.load(package_id)[0])
        return None

    monkeypatch.setattr(Outbox, "deliver", deliver)
    send_aggregates(parties.b, reg_b, CONV, "DISTRETTO_A", YEAR, ledger)
    (p,) = sent
    opened = pk.open_package(parties.a, parties.a.convenzioni, p.headers, p.body)
    assert opened.reasons == []
    table = opened.aggregates["prese_in_carico"]
    assert table["k"] == 5 and table["total"] == 40
    values = [v for row in table["cells"] for v in row if v not in (None, "*")]
    assert all(v == 0 or v >= 5 for v in values)
    recorded = json.loads(ledger_path.read_text())
    labels = [r["label"] for r in recorded["releases"]]
    assert labels == ["exchange conv-A-B-2026 → DISTRETTO_A 2024-01-01–2024-12-31"]
