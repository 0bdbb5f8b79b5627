"""Open data export: every published table as CSV and JSON, after disclosure control.

Written into one folder per release::

    OUT/
      LEGGIMI.md                 data dictionary (Italian): columns, marker, k, definitions
      dizionario.csv             the same, one line per file and column
      indice.json                the release: district, period, k, tables
      <table id>.csv             grid: codice, heading, one column per column code, totale
      <table id>.json            the same with codes, headings, keys and identities

Only tables about people (or contacts, interventions, amounts of people) are
exported; tables about organisations stay in the dashboard.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hub.observatory.disclosure import (
    SUPPRESSED,
    Ledger,
    ProtectedTable,
    Value,
    protect_release,
)
from hub.observatory.indicators import release_tables
from hub.observatory.notes import dimension_name, italian_note, with_service_names
from hub.observatory.table import ALL, Period

#: How a suppressed value is written in CSV and JSON files.
MARKER = "*"
TOTAL = "totale"


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    files: list[Path]
    tables: int
    suppressed: int


def cell_text(v: Value) -> str:
    if v is SUPPRESSED:
        return MARKER
    return "" if v is None else str(v)


def cell_json(v: Value) -> int | str | None:
    if v is SUPPRESSED:
        return MARKER
    return v if isinstance(v, int) else None


def export_opendata(
    engine: sa.Engine,
    out: Path,
    period: Period,
    *,
    org: str | None = None,
    k: int = 5,
    ledger: Ledger | None = None,
) -> ExportResult:
    tables = [
        with_service_names(tb) for tb in release_tables(engine, period, org=org) if tb.sensitive
    ]
    ledger = ledger if ledger is not None else Ledger()
    release = protect_release(tables, k, ledger)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for pt in release.tables:
        files.append(_write_csv(out / f"{pt.spec.id}.csv", pt))
        files.append(_write_json(out / f"{pt.spec.id}.json", pt))
    scope = release.tables[0].spec.scope if release.tables else ""
    index = {
        "district": scope.split("|")[0],
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "org": org,
        "k": k,
        "suppressed_marker": MARKER,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tables": [
            {"id": pt.spec.id, "title": pt.spec.title, "csv": f"{pt.spec.id}.csv"}
            for pt in release.tables
        ],
    }
    (out / "indice.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    files.append(out / "indice.json")
    files += _write_dictionary(out, release.tables, k, period, org)
    ledger.record(release, f"opendata {period.label} {org or 'distretto'}")
    return ExportResult(
        out, files, len(release.tables), sum(len(p.suppressed) for p in release.tables)
    )


def _grid(pt: ProtectedTable) -> tuple[list[str], list[list[str]]]:
    tb = pt.spec
    header = ["codice", tb.row_label or "voce", *tb.col_headings, "Totale"]
    lines = []
    for r, h in zip(tb.rows, tb.row_headings, strict=True):
        lines.append([r, h, *(cell_text(pt.value(r, c)) for c in tb.cols), cell_text(pt.value(r))])
    lines.append(
        [TOTAL, "Totale", *(cell_text(pt.value(ALL, c)) for c in tb.cols), cell_text(pt.value())]
    )
    return header, lines


def _write_csv(path: Path, pt: ProtectedTable) -> Path:
    header, lines = _grid(pt)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(lines)
    return path


def _write_json(path: Path, pt: ProtectedTable) -> Path:
    tb = pt.spec
    data: dict[str, Any] = {
        "id": tb.id,
        "title": tb.title,
        "unit": tb.unit,
        "scope": tb.scope,
        "measure": tb.measure,
        "additive": tb.additive,
        "k": pt.k,
        "suppressed_marker": MARKER,
        "row_dim": tb.row_dim,
        "row_label": tb.row_label,
        "col_dim": tb.col_dim,
        "col_label": tb.col_label,
        "rows": [{"code": r, "heading": h} for r, h in zip(tb.rows, tb.row_headings, strict=True)],
        "cols": [{"code": c, "heading": h} for c, h in zip(tb.cols, tb.col_headings, strict=True)],
        "cells": [[cell_json(v) for v in row] for row in pt.cells],
        "row_totals": [cell_json(v) for v in pt.row_totals],
        "col_totals": [cell_json(v) for v in pt.col_totals],
        "total": cell_json(pt.total),
        # Identity of each value across tables and releases.
        "keys": {
            "cells": [[pt.key(r, c) for c in tb.cols] for r in tb.rows],
            "row_totals": [pt.key(r) for r in tb.rows],
            "col_totals": [pt.key(ALL, c) for c in tb.cols],
            "total": pt.key(),
        },
        # Published identities beyond the table's own totals (total key = sum of part keys).
        "relations": [{"total": tot, "parts": list(parts)} for tot, parts in tb.relations],
        "notes": italian_note(tb.notes),
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


DICTIONARY_INTRO = """\
# Dati aperti dell'osservatorio del distretto {district}

Periodo: {start} – {end}{org}. Ogni tabella è in due file: `<tabella>.csv` (griglia) e
`<tabella>.json` (la stessa griglia con codici, intestazioni e le chiavi che identificano ogni
valore tra tabelle e rilasci). `indice.json` elenca le tabelle.

## Controllo della divulgazione

- Soglia **k = {k}**: i conteggi di persone o contatti compresi tra 1 e {k1} non sono pubblicati.
- Il simbolo **`{marker}`** indica un valore **soppresso** (riservato): è diverso da `0` (zero,
  pubblicato) e da una cella vuota (dato mancante o non applicabile).
- Soppressione complementare: altri valori sono soppressi perché quelli riservati non si possano
  ricalcolare dai totali, dalle altre tabelle di questo rilascio o dai rilasci precedenti.
- Numero di interventi, persone e importi della stessa griglia hanno le stesse celle soppresse.

## Colonne dei file CSV

| colonna | significato |
|---|---|
| `codice` | codice della riga: area ISTAT, `area/codice prestazione SIUSS`, comune ISTAT, \
codice del bisogno o del servizio, codice dell'ente; `totale` nell'ultima riga |
| seconda colonna | descrizione della riga |
| colonne successive | una per colonna della tabella (ente, mese `AAAA-MM`, comune, \
misura); intestazione leggibile, codice nel file JSON |
| `Totale` | totale della riga |

## Campi dei file JSON

I nomi dei campi sono codici (in inglese, come nel resto del formato); i valori testuali sono in
italiano.

| campo | significato |
|---|---|
| `id`, `title`, `unit` | identificativo della tabella, titolo, unità di misura |
| `scope`, `measure` | distretto e periodo; la grandezza contata |
| `additive` | `true` se i totali sono somme delle celle |
| `k`, `suppressed_marker` | soglia del controllo della divulgazione; simbolo del valore soppresso |
| `row_dim`, `row_label`, `rows` | dimensione delle righe, sua intestazione, codici e intestazioni |
| `col_dim`, `col_label`, `cols` | lo stesso per le colonne |
| `cells`, `row_totals`, `col_totals`, `total` | valori, totali di riga e di colonna, totale |
| `keys` | chiave di ogni valore, la stessa in ogni tabella e rilascio che lo pubblica |
| `relations` | altre identità pubblicate: il valore di `total` è la somma di quelli di `parts` |
| `notes` | nota sulla tabella |

## Tabelle

| file | titolo | unità | i totali sono somme? | note |
|---|---|---|---|---|
{tables}

## Definizioni

- Un intervento è nel periodo se è iniziato entro la fine del periodo e non è terminato prima
  dell'inizio; l'importo è quello intero dell'intervento, arrotondato all'euro per cella.
- Le persone sono pseudonimi del dominio del distretto: chi è seguito da due enti conta una volta
  nei totali del distretto (gli identificativi locali degli enti non sono collegabili tra enti).
- Un contatto del Terzo Settore è nel periodo se la sua data è nel periodo; un contatto che cita
  più bisogni o servizi conta sotto ciascuno.
- Prese in carico: persone con una presa in carico attiva tra il 1° gennaio e il 31 ottobre.
"""


def _write_dictionary(
    out: Path, tables: Sequence[ProtectedTable], k: int, period: Period, org: str | None
) -> list[Path]:
    district = tables[0].spec.scope.split("|")[0] if tables else ""
    rows = "\n".join(
        f"| `{p.spec.id}.csv` | {p.spec.title} | {p.spec.unit} | "
        f"{'sì' if p.spec.additive else 'no'} | {italian_note(p.spec.notes)} |"
        for p in tables
    )
    text = DICTIONARY_INTRO.format(
        district=district,
        start=period.start.isoformat(),
        end=period.end.isoformat(),
        org=f", ente {org}" if org else "",
        k=k,
        k1=k - 1,
        marker=MARKER,
        tables=rows,
    )
    readme = out / "LEGGIMI.md"
    readme.write_text(text, encoding="utf-8")
    dictionary = out / "dizionario.csv"
    with dictionary.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "colonna", "significato"])
        for p in tables:
            tb = p.spec
            name = f"{tb.id}.csv"
            w.writerow(
                [
                    name,
                    "codice",
                    f"codice della riga ({dimension_name(tb.row_dim)}); 'totale' = totale",
                ]
            )
            w.writerow([name, tb.row_label or "voce", "descrizione della riga"])
            for c, h in zip(tb.cols, tb.col_headings, strict=True):
                w.writerow([name, h, f"{tb.unit}, {dimension_name(tb.col_dim)} = {c}"])
            w.writerow([name, "Totale", f"{tb.unit}, totale della riga"])
        w.writerow(["*", MARKER, f"valore soppresso (controllo della divulgazione, k = {k})"])
        w.writerow(["*", "(vuoto)", "dato mancante o non applicabile"])
    return [readme, dictionary]
