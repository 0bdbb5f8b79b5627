"""Aggregate packages: indicator tables through the observatory's disclosure control.

The tables are the observatory's own (:func:`hub.observatory.indicators.release_tables`),
protected by :func:`hub.observatory.disclosure.protect_release` with the **same ledger**
as the open-data export, and the release is recorded in it: differencing across
everything the district ever published or sent (open data, reports, packages) stays
covered by complementary suppression.

A table travels whole for its period (snapshot-replace: the recipient keeps the last
one received per convenzione, sender, indicator and period). A cell is an integer
(zeros explicit), ``"*"`` (suppressed: a first-class value, distinct from 0) or
``null`` (missing: not applicable). A table sent with ``"withdrawn": true`` replaces
an earlier one with nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from hub.observatory.disclosure import SUPPRESSED, Ledger, ProtectedTable, Value, protect_release
from hub.observatory.indicators import release_tables
from hub.observatory.table import Period

MARKER = "*"
#: Units whose cells are amounts, not counts of people or events: not thresholded alone
#: (they share the suppression pattern of the counts of the same grid).
AMOUNT_UNITS = frozenset({"euro"})


def _cell(v: Value) -> int | str | None:
    if v is SUPPRESSED:
        return MARKER
    return v if isinstance(v, int) else None


def table_json(pt: ProtectedTable) -> dict[str, Any]:
    tb = pt.spec
    return {
        "id": tb.id,
        "title": tb.title,
        "unit": tb.unit,
        "k": pt.k,
        "withdrawn": False,
        "rows": list(tb.rows),
        "cols": list(tb.cols),
        "cells": [[_cell(v) for v in row] for row in pt.cells],
        "row_totals": [_cell(v) for v in pt.row_totals],
        "col_totals": [_cell(v) for v in pt.col_totals],
        "total": _cell(pt.total),
    }


def protected_tables(
    engine: sa.Engine,
    period: Period,
    indicators: Mapping[str, int],
    ledger: Ledger,
    *,
    label: str,
    withdraw: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """The indicator tables a package carries, protected and recorded in the ledger."""
    wanted = {n: k for n, k in indicators.items() if n not in withdraw}
    tables = [tb for tb in release_tables(engine, period) if tb.id in wanted]
    out: dict[str, dict[str, Any]] = {}
    if tables:
        k = max(wanted[tb.id] for tb in tables)
        release = protect_release(tables, k, ledger)
        ledger.record(release, label)
        out = {pt.spec.id: table_json(pt) for pt in release.tables}
    for name in withdraw:
        out[name] = {"id": name, "k": indicators[name], "withdrawn": True, "cells": []}
    return out


def disclosure_problems(name: str, table: Mapping[str, Any], k: int) -> list[str]:
    """Why a table may not flow: a count between 1 and k−1 shown, or a malformed cell."""
    if table.get("withdrawn"):
        return []
    problems: list[str] = []
    if int(table.get("k", 0)) < k:
        problems.append(f"table {name!r} was protected with k={table.get('k')}, below {k}")
    amounts = table.get("unit") in AMOUNT_UNITS
    values: list[Any] = [v for row in table.get("cells", []) for v in row]
    values += list(table.get("row_totals", [])) + list(table.get("col_totals", []))
    values.append(table.get("total"))
    for v in values:
        if v is None or v == MARKER:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"table {name!r} has a cell that is not a count, '*' or empty")
            break
        if not amounts and 0 < v < k:
            problems.append(
                f"table {name!r} shows a count below {k} that should have been suppressed"
            )
            break
    return problems
