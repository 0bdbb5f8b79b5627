"""The benchmarks of ``bench/`` still run, at a tiny size, and print what docs/performance.md
says they print.

Their figures are not checked (speed is measured by running them, never in tests); what is
checked is that a benchmark someone runs to reproduce a figure does not fail first, and that
``bench/ingest.py --json`` ends with the one JSON object issue 11 defines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_ingest_json_last_line_has_every_figure_for_both_formats() -> None:
    out = _run("ingest.py", "--records", "1500", "--quick", "--json")
    last = json.loads(out.strip().splitlines()[-1])
    assert set(last) == {"csv", "xml"}
    for kind, figures in last.items():
        assert figures["records"] == 1500, kind
        for name in (
            "floor_rps",
            "raccordo_rps",
            "peak_rss_mib",
            "bytes_per_record",
            "reread_one_peak_rss_mib",
        ):
            assert figures[name] > 0, (kind, name)
        for name in ("ratio_cpu", "ratio_wall", "reread_same_ratio_cpu", "reread_one_ratio_cpu"):
            assert 0 < figures[name] < 100, (kind, name)
    # The re-read with one record changed changes one record of each format.
    assert out.count("one record changed: read 1,500, loaded 1 in") == 2
    # The human part names the goals and each stage's CPU.
    assert out.count("CPU by stage: extract") == 2
    assert "goal: raccordo at 60% of the floor" in out
    assert "goal: raccordo at 50% of the floor" in out


def test_xml_extract_passes_run() -> None:
    out = _run("xml_extract.py", "--records", "1500", "--rounds", "1")
    assert "iter_flow" in out


def test_observatory_quick_run_prints_the_period_tables() -> None:
    out = _run("observatory.py", "--subjects", "1000", "--db", "sqlite", "--no-live")
    assert "Q2 2023" in out and "Nov 2022 – Feb 2023" in out
    assert "nan" not in out  # the live column is left empty, not "nan ms"


def test_pseudonyms_remote_equals_embedded() -> None:
    out = _run("pseudonyms.py", "--ids", "1000", "--batch", "500")
    assert "remote == embedded: yes" in out


def test_exchange_end_to_end_runs() -> None:
    out = _run("exchange.py", "--records", "1000")
    assert "end to end:" in out


@pytest.mark.parametrize("kind", ["csv", "xml"])
def test_the_columnar_reference_writes_the_rows_a_sync_writes(kind: str, tmp_path: Path) -> None:
    """The columnar loop is a reference for the pipeline only if it does the same work: the
    same rows in the same tables, from the same generated records."""
    sys.path.insert(0, str(BENCH))
    try:
        import ingest  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    source = tmp_path / "src" / f"source.{kind}"
    source.parent.mkdir()
    (ingest.write_csv if kind == "csv" else ingest.write_xml)(source, 1500)
    synced = ingest.run_raccordo(kind, source, tmp_path / "raccordo")
    columnar = ingest.run_columnar(kind, source, tmp_path / "columnar")
    assert synced["rows"] == columnar["rows"]
    assert columnar["rows"]["source_records"] == 1500
    assert columnar["refused"] == 0 and columnar["duty_cpu_seconds"] > 0
    assert (columnar["schema_cpu_seconds"] > 0) == (kind == "xml")
