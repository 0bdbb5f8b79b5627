"""Cross-district indicators (people in charge in two districts, transfers of a presa in
carico) on a crafted registry with own and received rows, through disclosure control."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa

from hub.observatory.cross import cross_district
from hub.observatory.disclosure import SUPPRESSED, Ledger, protect_release
from hub.observatory.indicators import release_tables
from hub.observatory.table import ALL, Period
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record

D = dt.date
Y22 = Period.year(2022)
_ids = itertools.count()


def _ce(conn: sa.Connection, org: str, subject: str, opened: D, closed: D | None = None) -> None:
    conn.execute(
        t.case_episodes.insert().values(
            **record(conn, org, connector="cartella" if org == "B" else f"x.{org}"),
            subject=person(conn, subject),
            area="FAM",
            opened_on=opened,
            closed_on=closed,
        )
    )


@pytest.fixture
def registry(registry_url: str) -> Registry:
    """District DB (own consortium B) with episodes received from districts ZZ and YY."""
    reg = Registry.open(registry_url)
    reg.upsert_district("DB", "Distretto B", "DB")
    with reg.engine.begin() as conn:
        conn.execute(
            t.organisations.insert(), [{"code": "B", "name": "Consorzio B", "kind": "ente_gestore"}]
        )
        # In charge in both in 2022: p1..p6 here and at ZZ; p1 and p7 here and at YY.
        for i in range(1, 8):
            _ce(conn, "B", f"p{i}", D(2021, 5, 1))
        for i in range(1, 7):
            _ce(conn, "ZZ", f"p{i}", D(2022, 2, 1), D(2022, 9, 30))
        _ce(conn, "YY", "p1", D(2020, 1, 1))
        _ce(conn, "YY", "p7", D(2022, 11, 1))
        # p8 here in 2022, at ZZ only until 2020: not in both in 2022.
        _ce(conn, "B", "p8", D(2022, 1, 1))
        _ce(conn, "ZZ", "p8", D(2019, 1, 1), D(2020, 12, 31))
        # Someone only at ZZ: no match.
        _ce(conn, "ZZ", "z1", D(2022, 1, 1))
        # Transfers.
        _ce(conn, "ZZ", "t1", D(2020, 1, 1), D(2022, 3, 1))  # t1: ZZ -> here after 19 days
        _ce(conn, "B", "t1", D(2022, 3, 20))
        _ce(conn, "B", "t2", D(2019, 1, 1), D(2022, 5, 1))  # t2: here -> ZZ after 45 days
        _ce(conn, "ZZ", "t2", D(2022, 6, 15))
        _ce(conn, "B", "t3", D(2019, 1, 1), D(2022, 5, 1))  # t3: here -> ZZ after 214 days
        _ce(conn, "ZZ", "t3", D(2022, 12, 1))
        _ce(conn, "ZZ", "t4", D(2020, 1, 1), D(2021, 12, 20))  # t4: ZZ -> here, over new year
        _ce(conn, "B", "t4", D(2022, 1, 10))
        _ce(conn, "B", "t5", D(2019, 1, 1), D(2022, 12, 20))  # t5: here -> ZZ, opened in 2023
        _ce(conn, "ZZ", "t5", D(2023, 1, 5))
        _ce(conn, "B", "t6", D(2019, 1, 1), D(2022, 8, 1))  # t6: ZZ opened before B closed
        _ce(conn, "ZZ", "t6", D(2022, 7, 1))
    return reg


def _grid(table: object) -> dict[tuple[str, str], object]:
    from hub.observatory.table import Table

    assert isinstance(table, Table)
    return {(r, c): v for r, c, v in table.positions()}


def test_people_in_charge_in_two_districts(registry: Registry) -> None:
    both, _ = cross_district(registry.engine, Y22, use_cache=False)
    assert both.rows == ("YY", "ZZ") and both.unit == "persone" and not both.additive
    # ZZ: p1..p6, and t1, t2, t3, t6 (both episodes active in 2022); YY: p1, p7.
    assert _grid(both) == {
        ("YY", "persone"): 2, ("YY", ALL): 2,
        ("ZZ", "persone"): 10, ("ZZ", ALL): 10,
        (ALL, "persone"): 11, (ALL, ALL): 11,
    }  # fmt: skip


def test_transfers_within_n_days(registry: Registry) -> None:
    _, moves = cross_district(registry.engine, Y22, use_cache=False)
    assert _grid(moves) == {
        ("YY", "in_entrata"): 0, ("YY", "in_uscita"): 0, ("YY", ALL): 0,
        ("ZZ", "in_entrata"): 2, ("ZZ", "in_uscita"): 1, ("ZZ", ALL): 3,
        (ALL, "in_entrata"): 2, (ALL, "in_uscita"): 1, (ALL, ALL): 3,
    }  # fmt: skip
    _, moves23 = cross_district(registry.engine, Period.year(2023), use_cache=False)
    assert moves23.value("ZZ", "in_uscita") == 1  # t5, opened at ZZ in January 2023
    _, short = cross_district(registry.engine, Y22, within_days=30, use_cache=False)
    assert short.value("ZZ", "in_uscita") == 0 and short.value("ZZ", "in_entrata") == 2
    _, long = cross_district(registry.engine, Y22, within_days=365, use_cache=False)
    assert long.value("ZZ", "in_uscita") == 2  # t3 too
    assert short.key("ZZ", "in_uscita") != moves.key("ZZ", "in_uscita")  # other quantity


def test_cross_district_tables_go_through_disclosure_control(registry: Registry) -> None:
    tables = release_tables(registry.engine, Y22)
    ids = [tb.id for tb in tables]
    assert "persone_piu_distretti" in ids and "trasferimenti" in ids
    ledger = Ledger()
    release = protect_release(
        [tb for tb in tables if tb.id in ("persone_piu_distretti", "trasferimenti")], 5, ledger
    )
    both, moves = release.tables
    assert both.value("YY", "persone") is SUPPRESSED and both.value("YY") is SUPPRESSED
    # 11 - 10 would give YY's 2 away: one of them is suppressed too.
    assert SUPPRESSED in (both.value("ZZ", "persone"), both.value(ALL, "persone"))
    assert moves.value("ZZ", "in_entrata") is SUPPRESSED and moves.total is SUPPRESSED
    assert moves.value("YY", "in_entrata") == 0  # zeros are published
    ledger.record(release, "test 2022")
    again = protect_release(
        [tb for tb in tables if tb.id in ("persone_piu_distretti", "trasferimenti")], 5, ledger
    )
    assert again.tables[0].value("YY", "persone") is SUPPRESSED  # sticky


def test_nothing_received_no_cross_district_tables(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    reg.upsert_district("DB", "Distretto B", "DB")
    assert cross_district(reg.engine, Y22) == []
    assert not any(tb.id == "trasferimenti" for tb in release_tables(reg.engine, Y22))


def test_stored_cross_district_tables_are_the_live_ones(registry: Registry) -> None:
    from hub.observatory.aggregates import cached, refresh

    live = cross_district(registry.engine, Y22, use_cache=False)
    refresh(registry.engine)
    assert cached(registry.engine, "xd", Y22, None) == live
    assert cross_district(registry.engine, Y22) == live
