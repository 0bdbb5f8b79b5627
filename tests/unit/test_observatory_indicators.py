"""Observatory indicators on small hand-made registries (SQLite and PostgreSQL): exact values."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
import sqlalchemy as sa

from hub.observatory.indicators import (
    coverage,
    coverage_ratio,
    interventions,
    overlaps,
    prese_in_carico_table,
    release_tables,
    split_codes,
    third_sector,
)
from hub.observatory.table import ALL, Period
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record

D = dt.date
Y22 = Period.year(2022)
_ids = itertools.count()


def _common(conn: sa.Connection, org: str) -> dict[str, object]:
    return record(conn, org)


def _iv(
    conn: sa.Connection,
    org: str,
    subject: str,
    code: str,
    area: str,
    start: D,
    end: D | None = None,
    amount: str | None = None,
) -> None:
    conn.execute(
        t.interventions.insert().values(
            **_common(conn, org),
            subject=person(conn, subject),
            service_code=code,
            area=area,
            started_on=start,
            ended_on=end,
            amount=Decimal(amount) if amount else None,
        )
    )


def _ns(
    conn: sa.Connection,
    org: str,
    subject: str | None,
    needs: str,
    services: str,
    comune: str,
    on: D,
) -> None:
    conn.execute(
        t.need_signals.insert().values(
            **_common(conn, org),
            subject=person(conn, subject),
            needs=needs,
            services_given=services,
            comune_istat=comune,
            on=on,
            referred_by_social_services=False,
        )
    )


@pytest.fixture
def registry(registry_url: str) -> Registry:
    reg = Registry.open(registry_url)
    reg.upsert_district("DIST", "Distretto di prova", "DIST")
    with reg.engine.begin() as conn:
        conn.execute(
            t.organisations.insert(),
            [
                {"code": "A", "name": "Consorzio A", "kind": "ente_gestore"},
                {"code": "B", "name": "Consorzio B", "kind": "ente_gestore"},
                {"code": "C", "name": "Consorzio C (senza dati)", "kind": "ente_gestore"},
                {"code": "E1", "name": "Caritas", "kind": "ets"},
                {"code": "E2", "name": "Banco", "kind": "ets"},
            ],
        )
        # p1: A, two interventions in FAM (one in 2022, one that started in 2021 and runs on)
        _iv(conn, "A", "p1", "A1.01", "FAM", D(2022, 3, 1), None, "100.40")
        _iv(conn, "A", "p1", "A2.06", "FAM", D(2021, 6, 1), D(2022, 1, 1), "50.20")
        # p1 also in DIS at A; p2 at A in DIS
        _iv(conn, "A", "p1", "A1.16", "DIS", D(2022, 5, 1), D(2022, 5, 31), "10")
        _iv(conn, "A", "p2", "A1.16", "DIS", D(2022, 12, 31))
        # p1 at B too (same district pseudonym): FAM
        _iv(conn, "B", "p1", "A1.01", "FAM", D(2022, 7, 1), None, "1.50")
        # outside 2022: ended in 2021, started in 2023
        _iv(conn, "B", "p3", "A1.01", "FAM", D(2021, 1, 1), D(2021, 12, 31), "999")
        _iv(conn, "B", "p3", "A1.01", "FAM", D(2023, 1, 1), None, "999")
        # A case episode for p4 at B in 2022 (public services, no intervention)
        conn.execute(
            t.case_episodes.insert().values(
                **_common(conn, "B"),
                subject=person(conn, "p4"),
                area="POV",
                opened_on=D(2020, 1, 1),
                closed_on=None,
            )
        )
        # Third Sector: p2 (also public), p5 (ETS only, two contacts, both ETS), anonymous
        _ns(conn, "E1", "p2", "food|housing", "food_parcel", "003106", D(2022, 2, 10))
        _ns(conn, "E1", "p5", "food", "", "003106", D(2022, 2, 20))
        _ns(conn, "E2", "p5", "work|food", "job_orientation|goods", "003008", D(2022, 11, 5))
        _ns(conn, "E2", None, "loneliness", "listening", "003008", D(2022, 11, 6))
        _ns(conn, "E1", "p3", "food", "food_parcel", "003106", D(2021, 12, 31))  # not 2022
        # A "need signal" at a consortium is not Third Sector data
        _ns(conn, "A", "p1", "food", "", "003106", D(2022, 4, 1))
    return reg


def _grid(table: object) -> dict[tuple[str, str], int | None]:
    from hub.observatory.table import Table

    assert isinstance(table, Table)
    return {(r, c): v for r, c, v in table.positions()}


def test_interventions_by_area_district(registry: Registry) -> None:
    n, people, euro = interventions(registry.engine, Y22, by="area")
    assert n.cols == ("A", "B", "C") and n.col_headings == (
        "Consorzio A",
        "Consorzio B",
        "Consorzio C (senza dati)",
    )
    assert n.rows == ("DIS", "FAM")
    assert _grid(n) == {
        ("DIS", "A"): 2, ("DIS", "B"): 0, ("DIS", "C"): 0, ("DIS", ALL): 2,
        ("FAM", "A"): 2, ("FAM", "B"): 1, ("FAM", "C"): 0, ("FAM", ALL): 3,
        (ALL, "A"): 4, (ALL, "B"): 1, (ALL, "C"): 0, (ALL, ALL): 5,
    }  # fmt: skip
    # People: p1 in FAM at A and B counts once in the district's FAM; p1 in DIS and FAM at
    # A counts once for A; p1, p2 in the district.
    assert _grid(people) == {
        ("DIS", "A"): 2, ("DIS", "B"): 0, ("DIS", "C"): 0, ("DIS", ALL): 2,
        ("FAM", "A"): 1, ("FAM", "B"): 1, ("FAM", "C"): 0, ("FAM", ALL): 1,
        (ALL, "A"): 2, (ALL, "B"): 1, (ALL, "C"): 0, (ALL, ALL): 2,
    }  # fmt: skip
    assert not people.additive and n.additive
    # Euros: 100.40 + 50.20 = 150.60 -> 151; 10; 1.50 -> 2; totals rounded on their own.
    g = _grid(euro)
    assert g[("FAM", "A")] == 151 and g[("DIS", "A")] == 10 and g[("FAM", "B")] == 2
    assert g[("FAM", ALL)] == 152  # 152.10
    assert g[(ALL, ALL)] == 162  # 162.10
    assert n.pattern == people.pattern == euro.pattern
    assert n.key("FAM", "A") == "DIST|2022|interventi.n|area=FAM|org=A"


def test_interventions_for_one_org_share_keys_with_the_district(registry: Registry) -> None:
    n_a, people_a, _ = interventions(registry.engine, Y22, org="A", by="area")
    n_d, _, _ = interventions(registry.engine, Y22, by="area")
    assert n_a.cols == ("A",)
    assert n_a.key("FAM", "A") == n_d.key("FAM", "A")
    assert n_a.key("FAM") == n_d.key("FAM", "A")  # the org's row total is the district cell
    assert n_a.key(ALL, "A") == n_d.key(ALL, "A")
    assert people_a.total == 2 and people_a.value("FAM") == 1


def test_interventions_by_service_code_with_area_relations(registry: Registry) -> None:
    n, people, euro = interventions(registry.engine, Y22, by="service")
    assert n.rows == ("DIS/A1.16", "FAM/A1.01", "FAM/A2.06")
    assert _grid(n)[("FAM/A1.01", ALL)] == 2
    assert _grid(people)[("FAM/A1.01", ALL)] == 1
    assert _grid(euro)[("FAM/A2.06", "A")] == 50
    area_n, _, _ = interventions(registry.engine, Y22, by="area")
    rels = dict(n.relations)
    assert rels[area_n.key("FAM", "A")] == (n.key("FAM/A1.01", "A"), n.key("FAM/A2.06", "A"))


def test_third_sector_needs_services_by_comune_and_month(registry: Registry) -> None:
    tables = {tb.id: tb for tb in third_sector(registry.engine, Y22)}
    contacts = tables["ets_contatti_comune_mese"]
    assert contacts.rows == ("003008", "003106") and len(contacts.cols) == 12
    g = _grid(contacts)
    assert g[("003106", "2022-02")] == 2 and g[("003008", "2022-11")] == 2
    assert g[(ALL, ALL)] == 4  # the consortium's "signal" and the 2021 one are not counted
    needs = _grid(tables["ets_bisogni_comune"])
    assert needs[("food", "003106")] == 2 and needs[("food", "003008")] == 1
    assert needs[("food", ALL)] == 3 and needs[("loneliness", ALL)] == 1
    assert needs[(ALL, ALL)] == 4  # contacts with at least one need, not the sum (6)
    services = _grid(tables["ets_servizi_mese"])
    assert services[("food_parcel", "2022-02")] == 1 and services[("goods", "2022-11")] == 1
    assert services[(ALL, "2022-02")] == 1  # one February contact had no service
    assert services[(ALL, ALL)] == 3
    # District values are tied to each entity's share (hidden, for disclosure control).
    hidden = dict(contacts.hidden)
    e1 = third_sector(registry.engine, Y22, org="E1")[0]
    assert hidden[e1.key("003106", "2022-02")] == 2
    assert dict(contacts.relations)[contacts.key()] == (
        e1.key(),
        e1.key().replace("org=E1", "org=E2"),
    )


def test_third_sector_for_one_entity(registry: Registry) -> None:
    tables = {tb.id: tb for tb in third_sector(registry.engine, Y22, org="E2")}
    assert tables["ets_contatti_comune_mese"].total == 2
    assert _grid(tables["ets_bisogni_mese"])[("food", "2022-11")] == 1


def test_overlaps_on_district_pseudonyms(registry: Registry) -> None:
    both, multi = overlaps(registry.engine, Y22)
    # Public in 2022: p1 (A, B), p2 (A), p4 (B, case episode). ETS: p2, p5 (anonymous not).
    assert _grid(both) == {
        ("solo_pubblico", "persone"): 2, ("solo_pubblico", ALL): 2,
        ("pubblico_e_ets", "persone"): 1, ("pubblico_e_ets", ALL): 1,
        ("solo_ets", "persone"): 1, ("solo_ets", ALL): 1,
        (ALL, "persone"): 4, (ALL, ALL): 4,
    }  # fmt: skip
    g = _grid(multi)
    assert g[("A+B", "persone")] == 1 and g[("2+", "persone")] == 1
    assert multi.rows == ("A+B", "2+")  # C has no data in the period: no pair with it


def test_coverage(registry: Registry) -> None:
    cov = coverage(registry.engine, Y22)
    g = _grid(cov)
    assert g[("ente_gestore", "registrate")] == 3 and g[("ente_gestore", "con_dati")] == 2
    assert g[("ets", "registrate")] == 2 and g[("ets", "con_dati")] == 2
    assert coverage_ratio(cov) == pytest.approx(4 / 5)
    assert not cov.sensitive
    g21 = _grid(coverage(registry.engine, Period(D(2021, 12, 1), D(2021, 12, 31))))
    # December 2021: A's intervention running since June, B's p3 and p4, E1's contact.
    assert g21[("ente_gestore", "con_dati")] == 2 and g21[("ets", "con_dati")] == 1


def test_period_that_is_not_a_year(registry: Registry) -> None:
    n, _, _ = interventions(registry.engine, Period(D(2022, 5, 1), D(2022, 5, 31)))
    # In May 2022: A p1 FAM (open since March), A p1 DIS (May), B p1 FAM? started July: no.
    assert _grid(n)[(ALL, ALL)] == 2
    assert n.scope == "DIST|2022-05-01..2022-05-31"
    ids = {tb.id for tb in release_tables(registry.engine, Period(D(2022, 5, 1), D(2022, 5, 31)))}
    assert "prese_in_carico" not in ids and "copertura_fornitori" in ids


def test_prese_in_carico_table(registry: Registry) -> None:
    with registry.engine.begin() as conn:
        conn.execute(
            t.subjects.insert().values(
                **_common(conn, "B"), subject=person(conn, "p4"), birth_year=1950
            )
        )
    tb = prese_in_carico_table(registry.engine, 2022)
    assert tb.rows == ("B",)
    assert tb.value("B", "anziani") == 1 and tb.value("B") == 1 and tb.total == 1


def test_split_codes() -> None:
    assert split_codes("food| housing||food") == ["food", "housing"]
    assert split_codes("") == [] and split_codes(None) == []


def test_refreshed_tables_are_the_live_tables(registry: Registry) -> None:
    from hub.observatory.aggregates import cached, is_fresh, refresh

    live = {
        org: release_tables(registry.engine, Y22, org=org)
        for org in (None, "A", "B", "C", "E1", "E2")
    }
    live21 = release_tables(registry.engine, Period.year(2021))
    stored = refresh(registry.engine)
    assert stored > 0 and is_fresh(registry.engine)
    assert cached(registry.engine, "iv.area", Y22, None) is not None
    for org, tables in live.items():
        assert release_tables(registry.engine, Y22, org=org) == tables, org
    assert release_tables(registry.engine, Period.year(2021)) == live21
    # A sync after the refresh makes the store stale: the functions compute again.
    with registry.engine.begin() as conn:
        conn.execute(
            t.runs.insert().values(
                connector="x",
                connector_type="x",
                org="A",
                mapping="m",
                mapping_version="1",
                started_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                status="succeeded",
            )
        )
        _iv(conn, "A", "p9", "A1.01", "FAM", D(2022, 8, 1))
    assert not is_fresh(registry.engine)
    assert cached(registry.engine, "iv.area", Y22, None) is None
    n, _, _ = interventions(registry.engine, Y22)
    assert n.total == 6
