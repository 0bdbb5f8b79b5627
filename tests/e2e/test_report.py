"""`raccordo export report`: a restituzione for a comune and for an organisation, HTML + PDF."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.observatory.report import find_chromium
from tests.support.leakscan import assert_no_leaks, scan_paths

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_report")]
RACCORDO = [sys.executable, "-m", "hub"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = Path(tmp_path_factory.mktemp("report")) / "demo"
    out = subprocess.run(
        [*RACCORDO, "demo", "--no-serve", "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return ws


def _report(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *RACCORDO,
            "export",
            "report",
            *args,
            "--year",
            "2022",
            "--config",
            str(ws / "raccordo.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_comune_and_organisation_reports(demo: Path) -> None:
    r = _report(demo, "--comune", "003106")
    assert r.returncode == 0, r.stdout + r.stderr
    html = (demo / "reports" / "restituzione-comune-003106-2022.html").read_text()
    assert "Restituzione dei dati 2022: Novara" in html
    assert 'class="highlight"' in html and "CC-BY-4.0" in html
    r = _report(demo, "--org", "ETS-CARITAS")
    assert r.returncode == 0, r.stdout + r.stderr
    org_html = (demo / "reports" / "restituzione-org-ETS-CARITAS-2022.html").read_text()
    # Small cells are suppressed with the marker, never shown as their value.
    cells = re.findall(r"<td>([^<]*)</td>", org_html)
    assert "&lt;5" in cells
    small = [c for c in cells if c.isdigit() and 0 < int(c) < 5]
    assert small == [], f"cells below k published: {small}"
    # Both releases are in the ledger, for the next release's consistency.
    ledger = json.loads((demo / "observatory" / "releases.json").read_text())
    labels = [rel["label"] for rel in ledger["releases"]]
    assert "report comune-003106 2022" in labels and "report org-ETS-CARITAS 2022" in labels
    if find_chromium():
        for name in ("comune-003106", "org-ETS-CARITAS"):
            pdf = demo / "reports" / f"restituzione-{name}-2022.pdf"
            assert pdf.read_bytes()[:5] == b"%PDF-"
    assert_no_leaks(scan_paths([demo / "reports"]))


def test_a_report_needs_exactly_one_subject(demo: Path) -> None:
    r = _report(demo)
    assert r.returncode != 0 and "--comune ISTAT or --org CODE" in r.stderr
    r = _report(demo, "--comune", "015146")  # Milano: not in the district
    assert r.returncode != 0 and "not a comune of the district" in r.stderr
