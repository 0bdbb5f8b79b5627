"""Disclosure control on hand-made tables: primary, complementary, shared patterns, ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.observatory.disclosure import (
    SUPPRESSED,
    Ledger,
    check_k,
    determined,
    protect,
    protect_release,
)
from hub.observatory.opendata import MARKER, cell_json, cell_text
from hub.observatory.table import ALL, GridBuilder, Table
from tests.support.attacker import Knowledge, published_json, recover

GRID = {
    ("r1", "c1"): 2, ("r1", "c2"): 10, ("r1", "c3"): 7,
    ("r2", "c1"): 8, ("r2", "c2"): 9, ("r2", "c3"): 12,
    ("r3", "c1"): 20, ("r3", "c2"): 6, ("r3", "c3"): 30,
}  # fmt: skip


def _table(
    cells: dict[tuple[str, str], int],
    *,
    tid: str = "t",
    measure: str = "m",
    scope: str = "S|2022",
    **kw: object,
) -> Table:
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    g = GridBuilder(rows, cols, dict(cells))
    g.sums()
    return g.table(
        id=tid,
        title=tid,
        unit="persone",
        scope=scope,
        measure=measure,
        row_dim="r",
        row_label="R",
        col_dim="c",
        col_label="C",
        **kw,
    )


def _attack(*releases: list[object]) -> dict[str, object]:
    kn = Knowledge()
    for rel in releases:
        for pt in rel:
            kn.read_table(published_json(pt))
    assert not kn.conflicts
    return {k: v for k, v in recover(kn).items() if k in kn.unknown}


def test_k_below_the_istat_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 3"):
        check_k(2)
    with pytest.raises(ValueError):
        protect([_table(GRID)], 2)
    assert check_k(3) == 3


def test_the_marker_is_neither_zero_nor_missing() -> None:
    assert SUPPRESSED is not None and SUPPRESSED != 0
    with pytest.raises(TypeError):
        bool(SUPPRESSED)
    assert cell_text(SUPPRESSED) == MARKER and cell_text(0) == "0" and cell_text(None) == ""
    assert cell_json(SUPPRESSED) == MARKER and cell_json(0) == 0 and cell_json(None) is None


def test_primary_only_is_broken_by_the_attacker() -> None:
    """The attacker test can fail: with primary suppression only, the row total gives the
    small cell back."""
    rel = protect_release([_table(GRID)], 5, complementary=False).tables
    assert rel[0].value("r1", "c1") is SUPPRESSED
    assert [v for row in rel[0].cells for v in row].count(SUPPRESSED) == 1
    recovered = _attack(rel)
    assert recovered == {"S|2022|m|c=c1|r=r1": 2}


def test_complementary_suppression_forms_a_safe_pattern() -> None:
    (pt,) = protect([_table(GRID)], 5)
    cells = pt.cells
    assert cells[0][0] is SUPPRESSED
    n = sum(v is SUPPRESSED for row in cells for v in row)
    assert n == 4  # the smallest safe pattern: a rectangle
    assert all(v is not SUPPRESSED for v in (*pt.row_totals, *pt.col_totals, pt.total))
    assert _attack([pt]) == {}
    # The true values are not carried by the protected table.
    assert pt.spec.cells[0][0] is None


def test_zeros_are_published_and_small_totals_suppressed() -> None:
    grid = {("r1", "c1"): 0, ("r1", "c2"): 3, ("r2", "c1"): 9, ("r2", "c2"): 11}
    (pt,) = protect([_table(grid)], 5)
    assert pt.value("r1", "c1") == 0 or pt.value("r1", "c1") is SUPPRESSED
    assert pt.value("r1", "c2") is SUPPRESSED and pt.value("r1") is SUPPRESSED  # total 3 < 5
    assert _attack([pt]) == {}


def test_tables_sharing_a_pattern_share_suppression() -> None:
    people = _table(GRID, tid="people", measure="persone", pattern="p", additive=False)
    euros = _table(
        {k: v * 1000 for k, v in GRID.items()},
        tid="euro",
        measure="euro",
        pattern="p",
        counts_people=False,
    )
    pp, pe = protect([people, euros], 5)
    assert pp.suppressed == pe.suppressed and ("r1", "c1") in pe.suppressed
    assert _attack([pp, pe]) == {}


def test_two_tables_sharing_column_totals() -> None:
    """A second table with the same column totals (same keys): a cell hidden in one must
    not come back through the other."""
    a = _table({("x", "c1"): 3, ("x", "c2"): 40, ("y", "c1"): 50, ("y", "c2"): 60}, tid="a",
               measure="n")  # fmt: skip
    rows_b = {("u", "c1"): 20, ("u", "c2"): 50, ("v", "c1"): 33, ("v", "c2"): 50}
    b = _table(rows_b, tid="b", measure="n")
    b = Table(**{**b.__dict__, "row_dim": "r2"})
    assert a.key(ALL, "c1") == b.key(ALL, "c1")
    rel = protect([a, b], 5)
    assert rel[0].value("x", "c1") is SUPPRESSED
    assert _attack(rel) == {}


def test_earlier_releases_are_remembered(tmp_path: Path) -> None:
    """Release 1: the district table. Release 2: a second table whose rows split one row of
    the first. Without the ledger, differencing across releases recovers a cell."""
    t1 = _table(GRID, tid="t1")
    ledger = Ledger.load(tmp_path / "ledger.json")
    r1 = protect_release([t1], 5, ledger)
    ledger.record(r1, "first")
    assert json.loads((tmp_path / "ledger.json").read_text())["format"] == 1
    assert (tmp_path / "ledger.json").stat().st_mode & 0o077 == 0
    # A second release: row r2 of t1 split in two rows (published relation r2 = r2a + r2b).
    split = {("r2a", "c1"): 4, ("r2a", "c2"): 4, ("r2a", "c3"): 6,
             ("r2b", "c1"): 4, ("r2b", "c2"): 5, ("r2b", "c3"): 6}  # fmt: skip
    t2 = _table(split, tid="t2", measure="m", scope="S|2022")
    t2 = Table(**{**t2.__dict__, "row_dim": "r2x", "fixed": (("part", "r2"),)})
    t2 = Table(
        **{
            **t2.__dict__,
            "relations": tuple(
                (t1.key("r2", c), (t2.key("r2a", c), t2.key("r2b", c))) for c in (*t1.cols, ALL)
            ),
        }
    )
    again = Ledger.load(tmp_path / "ledger.json")
    r2 = protect_release([t2], 5, again)
    assert _attack(r1.tables, r2.tables) == {}
    # The same second release protected without memory of the first is attackable.
    naive = protect_release([t2], 5, Ledger())
    assert _attack(r1.tables, naive.tables) != {}


def test_sticky_suppression_and_revisions(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json")
    r1 = protect_release([_table(GRID)], 5, ledger)
    ledger.record(r1, "v1")
    # Same data again: the same cells are suppressed, with the same keys.
    r2 = protect_release([_table(GRID)], 5, ledger)
    assert r2.tables[0].suppressed == r1.tables[0].suppressed
    assert r2.tables[0].keys == r1.tables[0].keys
    # A value that changed is a new quantity (a revision key).
    changed = {**GRID, ("r3", "c3"): 31}
    r3 = protect_release([_table(changed)], 5, ledger)
    assert r3.tables[0].key("r3", "c3").endswith("#2")
    assert r3.tables[0].key("r1", "c1") == r1.tables[0].key("r1", "c1")


def test_determined_on_small_systems() -> None:
    assert determined([{"a": 1, "b": 1}, {"a": 1}]) == {"a", "b"}
    assert (
        determined([{"a": 1, "b": 1}, {"c": 1, "d": 1}, {"a": 1, "c": 1}, {"b": 1, "d": 1}])
        == set()
    )
    assert determined([{"a": 1, "b": -1}, {"a": 1, "b": 1}]) == {"a", "b"}


def test_configured_k(tmp_path: Path) -> None:
    from hub.config import load_config
    from hub.errors import ConfigError

    cfg = tmp_path / "raccordo.toml"
    cfg.write_text('[hub]\ndistrict = "D"\n')
    assert load_config(cfg).observatory.k == 5
    assert load_config(cfg).ledger_path == tmp_path / "observatory" / "releases.json"
    cfg.write_text('[hub]\ndistrict = "D"\n[observatory]\nk = 7\n')
    assert load_config(cfg).observatory.k == 7
    cfg.write_text('[hub]\ndistrict = "D"\n[observatory]\nk = 2\n')
    with pytest.raises(ConfigError, match=r"observatory\.k"):
        load_config(cfg)
