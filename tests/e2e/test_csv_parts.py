"""A changed CSV file is re-read at the cost of its changed parts, with the same result.

The oracle (tests/support/parts.py): the same sequence of file versions synced into two
registries (same keys), one skipping the parts it holds as they are, one reading every
record of every changed file (skipping turned off). After every sync both registries hold
the same rows and quarantine and the runs the same counters; and the first read only the
parts that changed.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from pathlib import Path

import pytest

import connectors.csv_export as csv_export
from hub.demo.people import NAMES_F, SURNAMES, codice_fiscale
from tests.support.parts import assert_skipping_changes_nothing, second_registry_url
from tests.support.workspace import make_workspace

HEADER = [
    "ID_CARTELLA", "TIPO_DOCUMENTO", "CODICE_FISCALE", "COGNOME", "NOME", "ANNO_NASCITA",
    "SESSO", "COMUNE_RESIDENZA_ISTAT", "ID_NUCLEO", "AREA", "DATA_PRESA_IN_CARICO",
    "DATA_CHIUSURA", "COD_INTERVENTO", "DESCRIZIONE_INTERVENTO", "DATA_INIZIO", "DATA_FINE",
    "IMPORTO", "INVALIDITA", "NON_AUTOSUFFICIENTE", "DATA_VALUTAZIONE", "NOTE",
]  # fmt: skip
CONFIG = """
[organisations.CISS]
name = "Consorzio"
[connectors.csv]
type = "csv_export"
org = "CISS"
mapping = "cartella-esempio.toml"
[connectors.csv.config]
path = "{inbox}/*.csv"
encoding = "cp1252"
delimiter = ";"
source_key = ["ID_CARTELLA"]
personal_columns = ["COGNOME", "NOME", "NOTE"]
[connectors.csv.config.identifier_columns.CODICE_FISCALE]
type = "CF"
[connectors.csv.config.identifier_columns.ID_NUCLEO]
type = "LOCAL"
"""

Row = list[str]


def _row(i: int, amount: str = "1.234,56") -> Row:
    rng = random.Random(i)
    name, surname = rng.choice(NAMES_F), rng.choice(SURNAMES)
    birth = dt.date(rng.randint(1930, 2010), rng.randint(1, 12), rng.randint(1, 28))
    cf = codice_fiscale(surname, name, birth, "F", "B019")
    d = (dt.date(2021, 1, 1) + dt.timedelta(days=i % 700)).strftime("%d/%m/%Y")
    return [str(i), "CF", cf, surname, name, str(birth.year), "F", "003024", f"N{i // 3}",
            "ANZIANI", d, "", "SAD", "Assistenza", d, "", amount, "N", "S", d, ""]  # fmt: skip


def _write(inbox: Path, files: dict[str, list[Row]]) -> None:
    for old in inbox.glob("*.csv"):
        if old.name not in files:
            old.unlink()
    for name, rows in files.items():
        text = "\r\n".join(";".join(r) for r in [HEADER, *rows]) + "\r\n"
        path = inbox / name
        if not path.exists() or path.read_text(encoding="cp1252") != text:
            path.write_text(text, encoding="cp1252", newline="")


def _versions() -> Iterable[tuple[str, dict[str, list[Row]]]]:
    """Successive contents of the inbox, each with what it changes."""
    f1 = [_row(i) for i in range(3000)]
    f2 = [_row(i) for i in range(3000, 5000)]
    yield "first read", {"a.csv": f1, "b.csv": f2}
    f1[1500] = _row(1500, "999,99")
    yield "one value changed", {"a.csv": f1, "b.csv": f2}
    before = list(f1)
    f1[700:700] = [_row(i) for i in range(9000, 9003)]
    del f1[2000:2005]
    yield "rows inserted and deleted", {"a.csv": f1, "b.csv": f2}
    f1 = before
    yield "the rows back as they were", {"a.csv": f1, "b.csv": f2}
    cut = _row(9100)[:5]  # a row cut short: skipped, the rest of the file loads
    bad_cf = _row(9101)
    bad_cf[2] = "NOTACODICEFISCAL"  # quarantined
    f1[100:100] = [cut]
    f1[2500:2500] = [bad_cf]
    yield "a cut row and a refused record", {"a.csv": f1, "b.csv": f2}
    f1[1200] = _row(int(f1[1200][0]), "12,00")
    yield (
        "changed elsewhere, the cut row and the refused record still there",
        {
            "a.csv": f1,
            "b.csv": f2,
        },
    )
    f1.remove(cut)
    f1[f1.index(bad_cf)] = _row(9101)
    yield "both mended", {"a.csv": f1, "b.csv": f2}
    yield "a record of a.csv also in b.csv", {"a.csv": f1, "b.csv": [*f2, _row(10, "5,00")]}
    f1[2900] = _row(int(f1[2900][0]), "7,00")
    yield "a.csv changed elsewhere", {"a.csv": f1, "b.csv": [*f2, _row(10, "5,00")]}
    f1.insert(2950, _row(5))
    yield "a record twice in a.csv", {"a.csv": f1, "b.csv": f2}
    f1[1300] = _row(int(f1[1300][0]), "13,00")
    yield "changed elsewhere, the repeat still there", {"a.csv": f1, "b.csv": f2}
    f1.pop(2950)
    f1[3] = _row(3, "3,00")
    yield "the repeat gone, another value changed", {"a.csv": f1, "b.csv": f2}
    f1.insert(20, list(f1[2800]))
    yield "a copy of a record before it", {"a.csv": f1, "b.csv": f2}
    f1[1400] = _row(int(f1[1400][0]), "14,00")
    yield "changed elsewhere, the copy before it still there", {"a.csv": f1, "b.csv": f2}
    del f1[20]
    yield "b.csv gone", {"a.csv": f1}


def _workspace(root: Path, url: str, keys_from: Path | None) -> tuple[Path, Path]:
    inbox = root / "in"
    inbox.mkdir(parents=True)
    ws = make_workspace(
        root / "ws",
        CONFIG.format(inbox=inbox),
        registry_url=url,
        keys_from=keys_from,
        batch_size=700,
    )
    return ws, inbox


def test_skipping_the_parts_held_changes_nothing_but_what_is_read(
    registry_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skipping, skipping_in = _workspace(tmp_path / "skipping", registry_url, None)
    reading, reading_in = _workspace(
        tmp_path / "reading", second_registry_url(registry_url, tmp_path, request), skipping
    )
    inboxes = {skipping: skipping_in, reading: reading_in}

    def check(what: str, skipped_read: int, all_read: int) -> None:
        if what in ("one value changed", "both mended", "the repeat gone, another value changed"):
            # a.csv holds a few parts (1,024 rows each on average): one or two are read.
            assert 1 <= skipped_read <= 2 < all_read, (what, skipped_read, all_read)
        if what == "rows inserted and deleted":
            assert 2 <= skipped_read <= 3 < all_read, (what, skipped_read, all_read)
        if what == "a.csv changed elsewhere":
            # A record of a.csv was loaded from b.csv since: none of a.csv's parts can be
            # trusted to hold what the registry has (a re-read puts a.csv's version back).
            assert skipped_read == all_read, (what, skipped_read, all_read)

    assert_skipping_changes_nothing(
        monkeypatch,
        reader=csv_export,
        connector="csv",
        skipping=skipping,
        reading=reading,
        versions=_versions(),
        write=lambda ws, files: _write(inboxes[ws], files),
        check=check,
    )
