"""The observatory on the demo district: indicator values, the attacker test, the export.

The demo district (``hub/demo``) is loaded through the real connectors, plus two
Third Sector entities whose contact sheets go through the real pipeline too
(``csv_export`` + ``mappings/ets-export.toml``, see tests/support/ets_demo.py).
Every table the hub publishes is exported with ``raccordo export opendata`` for
several releases (district and single organisations, two years) sharing one
ledger; an attacker then reads all of them together.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console

from hub.config import load_config
from hub.demo import run_demo
from hub.demo.district import SEED_TABLE, build_sources
from hub.observatory.indicators import (
    ets_orgs,
    interventions,
    overlaps,
    prese_in_carico_table,
    release_tables,
    third_sector,
)
from hub.observatory.table import Period
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.attacker import MARKER, Knowledge, published_json, recover
from tests.support.ets_demo import ETS, write_ets_sources
from tests.support.leakscan import assert_no_leaks, scan_paths

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("observatory_demo")]

RACCORDO = [sys.executable, "-m", "hub"]
K = 5
#: Releases, in order: (year, org or None).
RELEASES = [
    (2022, None),
    (2021, None),
    (2022, "CISS-BORGO"),
    (2022, "CBV"),
    (2022, "CARITAS-NO"),
    (2022, "BANCO-ALIM"),
    (2021, "CARITAS-NO"),
]


@dataclass
class Demo:
    ws: Path
    engine: sa.Engine
    exports: list[Path]
    #: JSON folders of the restituzione reports (releases too).
    reports: list[Path]
    identifiers: set[str]
    names: set[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    ws = tmp_path_factory.mktemp("obs") / "demo"
    run_demo(ws, serve=False, console=Console(file=io.StringIO()))
    truth = build_sources(tmp_path_factory.mktemp("truth"))
    connectors, planted = write_ets_sources(ws, truth.identifiers)
    cfg = load_config(ws / "raccordo.toml")
    registry = Registry.open(cfg.registry_url)
    pipeline = Pipeline(cfg, registry, open_keyring(cfg))
    for name in connectors:
        for s in pipeline.sync(name):
            assert s.status == "succeeded" and s.quarantined == 0 and s.loaded == s.read > 0
    exports = []
    for year, org in RELEASES:
        out = ws / "opendata" / f"{year}-{org or 'distretto'}"
        args = ["export", "opendata", "--config", str(ws / "raccordo.toml")]
        args += ["--year", str(year), "--out", str(out)] + (["--org", org] if org else [])
        res = subprocess.run([*RACCORDO, *args], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "values suppressed" in res.stdout
        exports.append(out)
    # Restituzione reports are releases too: two comuni and one Third Sector entity.
    reports = []
    for subject in (["--comune", "003106"], ["--comune", "003024"], ["--org", "CARITAS-NO"]):
        out = ws / "reports"
        args = ["export", "report", "--config", str(ws / "raccordo.toml"), "--year", "2022"]
        res = subprocess.run(
            [*RACCORDO, *args, "--out", str(out), *subject],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        slug = subject[0].lstrip("-") + "-" + subject[1]
        reports.append(out / f"restituzione-{slug}-2022")
    return Demo(
        ws,
        registry.engine,
        exports,
        reports,
        truth.identifiers | {p for p in planted if any(ch.isdigit() for ch in p)},
        truth.names | {p for p in planted if not any(ch.isdigit() for ch in p)},
    )


def test_the_seed_table_through_the_observatory(demo: Demo) -> None:
    for year, row in SEED_TABLE.items():
        tb = prese_in_carico_table(demo.engine, year)
        groups = [tb.value("CISS-BORGO", c) for c in tb.cols[:6]]
        assert (*groups, tb.value("CISS-BORGO")) == row[:7]
        assert tb.value("CISS-BORGO", "eta_ignota") == 0


def test_indicator_totals_agree_with_plain_queries(demo: Demo) -> None:
    period = Period.year(2022)
    n, people, _ = interventions(demo.engine, period)
    iv = t.interventions
    in_2022 = sa.and_(
        iv.c.started_on <= period.end,
        sa.or_(iv.c.ended_on.is_(None), iv.c.ended_on >= period.start),
    )
    with demo.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(in_2022)).scalar_one()
        subjects = conn.execute(
            sa.select(sa.func.count(sa.distinct(iv.c.subject))).where(in_2022)
        ).scalar_one()
    assert n.total == count > 0 and people.total == subjects
    assert sum(v or 0 for v in n.col_totals) == n.total
    by_service, _, _ = interventions(demo.engine, period, by="service")
    assert by_service.total == n.total and by_service.col_totals == n.col_totals

    contacts = third_sector(demo.engine, period)[0]
    with demo.engine.connect() as conn:
        every_ets = sorted(ets_orgs(conn))  # the demo's own ETS and the test's
    assert set(ETS) < set(every_ets)
    per_entity = [third_sector(demo.engine, period, org=o)[0].total for o in every_ets]
    assert contacts.total == sum(v or 0 for v in per_entity) > 0

    both, _ = overlaps(demo.engine, period)
    # Some contacts were people the consortia follow (same codice fiscale): found through
    # the district pseudonyms.
    assert (both.value("pubblico_e_ets") or 0) > 0
    assert (both.value("solo_ets") or 0) > 0
    ns = t.need_signals
    with demo.engine.connect() as conn:
        ets_people = conn.execute(
            sa.select(sa.func.count(sa.distinct(ns.c.subject))).where(
                ns.c.org.in_(every_ets), ns.c.on >= period.start, ns.c.on <= period.end
            )
        ).scalar_one()
    assert (both.value("pubblico_e_ets") or 0) + (both.value("solo_ets") or 0) == ets_people


def _published(demo: Demo) -> list[tuple[Path, dict[str, object]]]:
    """Every table released: the open-data exports and the restituzione reports."""
    out = []
    for folder in [*demo.exports, *demo.reports]:
        index = json.loads((folder / "indice.json").read_text(encoding="utf-8"))
        assert index["k"] == K and index["suppressed_marker"] == MARKER
        for entry in index["tables"]:
            path = folder / f"{entry['id']}.json"
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
    return out


def _true_values(demo: Demo) -> dict[str, int | None]:
    """Every quantity the hub could publish for these releases, with its true value (the
    district tables and each organisation's), by key."""
    values: dict[str, int | None] = {}
    orgs = [None, "CISS-BORGO", "CBV", "COT", *ETS]
    for year in sorted({y for y, _ in RELEASES}):
        for org in orgs:
            for tb in release_tables(demo.engine, Period.year(year), org=org):
                for r, c, v in tb.positions():
                    values[tb.key(r, c)] = v
    return values


def test_attacker_recovers_no_suppressed_value(demo: Demo) -> None:
    kn = Knowledge()
    for _, data in _published(demo):
        kn.read_table(data)
    assert not kn.conflicts
    assert len(kn.unknown) > 100  # the demo releases do suppress (else this proves nothing)
    recovered = recover(kn)
    assert {k: v for k, v in recovered.items() if k in kn.unknown} == {}
    # Quantities never shown (an entity's share of a district cell) that the identities
    # pin down must not be small either.
    truth = _true_values(demo)
    small = {
        k: truth[k]
        for k in recovered
        if k not in kn.known and (truth.get(k) or 0) > 0 and (truth[k] or 0) < K
    }
    assert small == {}


def test_the_same_releases_with_primary_suppression_only_are_attackable(demo: Demo) -> None:
    from hub.observatory.disclosure import Ledger, protect_release

    kn = Knowledge()
    ledger = Ledger()
    for year, org in RELEASES:
        tables = [tb for tb in release_tables(demo.engine, Period.year(year), org=org)]
        sensitive = [tb for tb in tables if tb.sensitive]
        rel = protect_release(sensitive, K, ledger, complementary=False)
        ledger.record(rel, "primary only")
        for pt in rel.tables:
            kn.read_table(published_json(pt))
    recovered = {k: v for k, v in recover(kn).items() if k in kn.unknown}
    assert recovered, "the attacker should break primary-only suppression on the demo"
    truth = _true_values(demo)
    for k, v in recovered.items():
        if ("|interventi.n|" in k or "|ets.contatti|" in k) and truth.get(k) is not None:
            assert v == Fraction(truth[k] or 0), k  # additive tables: exact recovery


def test_export_has_no_cell_below_k_and_no_identifier(demo: Demo) -> None:
    checked = 0
    for path, data in _published(demo):
        if data["unit"] == "euro":
            continue  # amounts: suppressed with the people behind them (same pattern)
        grid = data["cells"]
        assert isinstance(grid, list)
        values = [v for row in grid for v in row]
        values += [*data["row_totals"], *data["col_totals"], data["total"]]  # type: ignore[misc]
        for v in values:
            assert v == MARKER or v is None or v == 0 or v >= K, (path.name, v)
            checked += 1
        if path.parent in demo.reports:
            continue  # reports have no CSV (their HTML is checked in test_report.py)
        csv_text = path.with_suffix(".csv").read_text(encoding="utf-8")
        for line in csv_text.splitlines()[1:]:
            for cell in line.split(",")[2:]:
                if cell.isdigit() and data["unit"] != "euro":
                    assert int(cell) == 0 or int(cell) >= K, (path.name, line)
    assert checked > 1000
    for folder in demo.exports:
        assert (folder / "LEGGIMI.md").read_text(encoding="utf-8").count(f"k = {K}") >= 1
        assert (folder / "dizionario.csv").exists()
    leaks = scan_paths(
        [*demo.exports, demo.ws / "reports", demo.ws / "observatory"],
        names=demo.names,
        values=demo.identifiers,
    )
    assert_no_leaks(leaks)


def test_pre_computed_tables_equal_the_live_ones(demo: Demo) -> None:
    from hub.observatory.aggregates import is_fresh, refresh

    targets = [(2022, None), (2022, "CBV"), (2022, "CARITAS-NO"), (2021, "COT")]
    live = {k: release_tables(demo.engine, Period.year(k[0]), org=k[1]) for k in targets}
    assert refresh(demo.engine) > 0 and is_fresh(demo.engine)
    for (year, org), tables in live.items():
        assert release_tables(demo.engine, Period.year(year), org=org) == tables, (year, org)
