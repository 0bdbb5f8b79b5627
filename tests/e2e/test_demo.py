"""`raccordo demo --no-serve` on a fresh workspace: the acceptance of issue 3's demo district."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.demo.district import SEED_TABLE, build_sources
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths

pytestmark = pytest.mark.slow

RACCORDO = [sys.executable, "-m", "hub"]

EXPECTED_CSV = [
    "anno,Minori non disabili,Minori disabili,Adulti non disabili,Adulti disabili,"
    "Anziani,Anziani non autosuff.,Totale utenti,Totale nuclei"
] + [",".join(str(v) for v in (year, *row)) for year, row in SEED_TABLE.items()]


def _report(ws: Path) -> subprocess.CompletedProcess[str]:
    """`raccordo report prese-in-carico` for CISS Borgomanero, 2020-2022, as CSV."""
    years = [a for y in SEED_TABLE for a in ("--year", str(y))]
    return subprocess.run(
        [
            *RACCORDO,
            "report",
            "prese-in-carico",
            "--org",
            "CISS-BORGO",
            "--format",
            "csv",
            *years,
            "--config",
            str(ws / "raccordo.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_reproduces_the_ciss_borgomanero_table_and_leaks_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "demo"
    out = subprocess.run(
        [*RACCORDO, "demo", "--no-serve", "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The printed table, exactly, for 2020-2022.
    for year, row in SEED_TABLE.items():
        cells = [str(year), *(str(v) for v in row)]
        assert any(
            line.split() == " ".join(cells).split()
            for line in out.stdout.replace("|", " ").splitlines()
        ), (year, out.stdout)
    report = _report(ws)
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines() == EXPECTED_CSV

    # A second demo run reads nothing new and changes nothing.
    again = subprocess.run(
        [*RACCORDO, "demo", "--no-serve", "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr
    report2 = _report(ws)
    assert report2.stdout == report.stdout

    # Invalid codes went to quarantine, with reasons.
    q = subprocess.run(
        [
            *RACCORDO,
            "quarantine",
            "list",
            "--json",
            "--limit",
            "1000",
            "--config",
            str(ws / "raccordo.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert q.returncode == 0
    assert q.stdout.count('"cf_check_char"') >= 4 + 3 + 3
    assert '"unmapped_code"' in q.stdout

    # No clear identifier or name outside the sources folder (which stands for the consortia's
    # own systems): registry, keys, logs, command output.
    truth = build_sources(tmp_path / "again")  # deterministic: the same people
    outputs = tmp_path / "outputs.txt"
    outputs.write_text(out.stdout + out.stderr + report.stdout + q.stdout + q.stderr)
    hub_written = [p for p in ws.iterdir() if p.name != "sources"] + [outputs]
    leaks = scan_paths(hub_written, names=truth.names, values=truth.identifiers)
    leaks += scan_database(
        f"sqlite:///{ws / 'registry.sqlite'}", names=truth.names, values=truth.identifiers
    )
    assert_no_leaks(leaks)
