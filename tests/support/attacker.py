"""An attacker on published tables: recovers suppressed values by linear combinations.

Reads only what was published (the JSON files of one or more open data
exports). Every value is a variable named by its published key (the same key in
two tables or two releases is the same quantity). The attacker writes every
identity a reader can: in each table, every row total = the sum of its cells,
every column total = the sum of its column, the grand total = the sum of the row
totals (also for tables whose totals are not sums: a stronger attacker than
reality), plus the published relations. Published values are substituted; the
system in the suppressed values is reduced exactly with rational arithmetic
(:class:`fractions.Fraction`). A suppressed value is *recovered* when the
reduced system pins it (a reduced row with it alone), and its value is then
computed too.

This is deliberately a separate implementation from the protector's check
(which works modulo a prime) so that the two can disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

MARKER = "*"


@dataclass
class Knowledge:
    known: dict[str, int] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    #: (total, parts): total = sum(parts)
    identities: list[tuple[str, list[str]]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def see(self, key: str, value: Any) -> None:
        if value == MARKER:
            if key not in self.known:
                self.unknown.add(key)
            return
        if value is None:
            return
        v = int(value)
        if key in self.known and self.known[key] != v:
            self.conflicts.append(key)
        self.known[key] = v
        self.unknown.discard(key)

    def read_table(self, data: dict[str, Any]) -> None:
        keys = data["keys"]
        for row_keys, row_vals in zip(keys["cells"], data["cells"], strict=True):
            for k, v in zip(row_keys, row_vals, strict=True):
                self.see(k, v)
        for k, v in zip(keys["row_totals"], data["row_totals"], strict=True):
            self.see(k, v)
        for k, v in zip(keys["col_totals"], data["col_totals"], strict=True):
            self.see(k, v)
        self.see(keys["total"], data["total"])
        for rk, row_keys in zip(keys["row_totals"], keys["cells"], strict=True):
            self.identities.append((rk, list(row_keys)))
        for j, ck in enumerate(keys["col_totals"]):
            self.identities.append((ck, [row[j] for row in keys["cells"]]))
        self.identities.append((keys["total"], list(keys["row_totals"])))
        for rel in data.get("relations", []):
            self.identities.append((rel["total"], list(rel["parts"])))

    def read_exports(self, folders: Iterable[Path]) -> Knowledge:
        for folder in folders:
            index = json.loads((folder / "indice.json").read_text(encoding="utf-8"))
            for t in index["tables"]:
                path = folder / f"{t['id']}.json"
                self.read_table(json.loads(path.read_text(encoding="utf-8")))
        return self


def recover(kn: Knowledge) -> dict[str, Fraction]:
    """Suppressed values the identities determine, with their values."""
    pivots: dict[str, tuple[dict[str, Fraction], Fraction]] = {}
    for total, parts in kn.identities:
        coeffs: dict[str, Fraction] = {}
        const = Fraction(0)  # sum(coeffs * unknowns) = const

        def add(key: str, c: int, coeffs: dict[str, Fraction] = coeffs) -> Fraction:
            if key in kn.known:
                return Fraction(-c * kn.known[key])
            coeffs[key] = coeffs.get(key, Fraction(0)) + c
            return Fraction(0)

        const += add(total, -1)
        for p in parts:
            const += add(p, 1)
        row = {k: c for k, c in coeffs.items() if c}
        if not row:
            continue
        # Reduce by the pivots found so far.
        for pv in [k for k in row if k in pivots]:
            c = row.get(pv, Fraction(0))
            if not c:
                continue
            prow, pconst = pivots[pv]
            for k, d in prow.items():
                nv = row.get(k, Fraction(0)) - c * d
                if nv:
                    row[k] = nv
                else:
                    row.pop(k, None)
            const -= c * pconst
        if not row:
            continue
        lead = sorted(row)[0]
        inv = 1 / row[lead]
        row = {k: d * inv for k, d in row.items()}
        const *= inv
        for pv, (prow, pconst) in list(pivots.items()):
            c = prow.get(lead, Fraction(0))
            if c:
                nrow = dict(prow)
                for k, d in row.items():
                    nv = nrow.get(k, Fraction(0)) - c * d
                    if nv:
                        nrow[k] = nv
                    else:
                        nrow.pop(k, None)
                pivots[pv] = (nrow, pconst - c * const)
        pivots[lead] = (row, const)
    return {pv: const for pv, (row, const) in pivots.items() if len(row) == 1}


def published_json(pt: Any) -> dict[str, Any]:
    """The parts of a protected table the exporter writes and the attacker reads (as in
    ``<table>.json``), for tests that protect tables without writing files."""
    from hub.observatory.opendata import cell_json
    from hub.observatory.table import ALL

    tb = pt.spec
    return {
        "cells": [[cell_json(v) for v in row] for row in pt.cells],
        "row_totals": [cell_json(v) for v in pt.row_totals],
        "col_totals": [cell_json(v) for v in pt.col_totals],
        "total": cell_json(pt.total),
        "keys": {
            "cells": [[pt.key(r, c) for c in tb.cols] for r in tb.rows],
            "row_totals": [pt.key(r) for r in tb.rows],
            "col_totals": [pt.key(ALL, c) for c in tb.cols],
            "total": pt.key(),
        },
        "relations": [{"total": a, "parts": list(b)} for a, b in tb.relations],
    }
