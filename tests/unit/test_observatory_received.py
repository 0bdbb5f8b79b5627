"""Rows received from another district (connector ``x.<sender>``, org = the sender) never
count in the district's own tables: a registry with own and received rows."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import sqlalchemy as sa

from hub.observatory.aggregates import data_years, refresh
from hub.observatory.indicators import (
    coverage,
    interventions,
    latest_year,
    overlaps,
    prese_in_carico_table,
    release_tables,
    third_sector,
)
from hub.observatory.prese_in_carico import prese_in_carico
from hub.observatory.table import ALL, Period
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record

D = dt.date
Y22 = Period.year(2022)
_ids = itertools.count()


def _common(conn: sa.Connection, org: str, connector: str) -> dict[str, object]:
    return record(conn, org, connector=connector)


def _person(conn: sa.Connection, org: str, connector: str, subject: str, year: int) -> None:
    """A person in charge in 2022 with one intervention, one assessment, one need signal."""
    conn.execute(
        t.subjects.insert().values(
            **_common(conn, org, connector),
            subject=person(conn, subject),
            birth_year=year,
            residence_comune_istat="003106",
        )
    )
    conn.execute(
        t.case_episodes.insert().values(
            **_common(conn, org, connector),
            subject=person(conn, subject),
            area="FAM",
            opened_on=D(2022, 2, 1),
        )
    )
    conn.execute(
        t.interventions.insert().values(
            **_common(conn, org, connector),
            subject=person(conn, subject),
            service_code="A1.01",
            area="FAM",
            started_on=D(2022, 3, 1),
        )
    )
    conn.execute(
        t.assessments.insert().values(
            **_common(conn, org, connector),
            subject=person(conn, subject),
            assessed_on=D(2022, 1, 5),
            disability=True,
        )
    )


@pytest.fixture
def registry(registry_url: str) -> Registry:
    """District DB: consortium B (30 own people) and 40 people received from district ZZ
    (10 of them also B's own people, pseudonyms already in this district's domain), plus
    one received Third Sector contact and received rows in a year B has no data for."""
    reg = Registry.open(registry_url)
    reg.upsert_district("DB", "Distretto B", "DB")
    with reg.engine.begin() as conn:
        conn.execute(
            t.organisations.insert(),
            [
                {"code": "B", "name": "Consorzio B", "kind": "ente_gestore"},
                {"code": "E1", "name": "Caritas", "kind": "ets"},
            ],
        )
        for i in range(30):
            _person(conn, "B", "cartella", f"own{i}", 1980)
        for i in range(40):
            subject = f"own{i}" if i < 10 else f"rx{i}"
            _person(conn, "ZZ", "x.ZZ", subject, 1950)
        conn.execute(
            t.need_signals.insert().values(
                **_common(conn, "ZZ", "x.ZZ"),
                subject=person(conn, "rx11"),
                needs="food",
                services_given="",
                comune_istat="003106",
                on=D(2022, 4, 1),
                referred_by_social_services=False,
            )
        )
        conn.execute(
            t.case_episodes.insert().values(
                **_common(conn, "ZZ", "x.ZZ"), subject=person(conn, "rx12"), area="FAM",
                opened_on=D(2015, 1, 1), closed_on=D(2015, 6, 1),
            )
        )  # fmt: skip
    return reg


def test_received_rows_are_not_the_districts_prese_in_carico(registry: Registry) -> None:
    (row,) = prese_in_carico(registry.engine, [2022])
    assert row.utenti == 30  # not 70, not 60
    assert row.adulti_disabili == 30 and row.anziani == 0 and row.anziani_non_autosufficienti == 0
    tb = prese_in_carico_table(registry.engine, 2022, use_cache=False)
    assert tb.rows == ("B",) and tb.total == 30


def test_received_rows_are_not_the_districts_interventions(registry: Registry) -> None:
    n, people, _ = interventions(registry.engine, Y22, use_cache=False)
    assert n.cols == ("B",) and n.total == 30
    assert people.total == 30 and people.value("FAM", ALL) == 30


def test_received_rows_are_not_in_overlaps_third_sector_or_coverage(registry: Registry) -> None:
    both, multi = overlaps(registry.engine, Y22, use_cache=False)
    assert both.total == 30 and multi.rows == ("2+",)
    contacts = third_sector(registry.engine, Y22, use_cache=False)[0]
    assert contacts.total == 0
    cov = coverage(registry.engine, Y22, use_cache=False)
    assert cov.value("ente_gestore", "con_dati") == 1 and cov.value("ets", "con_dati") == 0


def test_received_rows_do_not_widen_the_years(registry: Registry) -> None:
    with registry.engine.connect() as conn:
        span = data_years(conn)
    assert span is not None and span[0] == 2022
    assert latest_year(registry.engine) == 2022


def test_stored_tables_match_and_exclude_received_rows(registry: Registry) -> None:
    live = release_tables(registry.engine, Y22)
    refresh(registry.engine)
    assert release_tables(registry.engine, Y22) == live
    pic = next(tb for tb in live if tb.id == "prese_in_carico")
    assert pic.total == 30


def test_the_dashboard_counts_own_rows_only(registry: Registry) -> None:
    from hub.web.dashboard import default_year, people_in_charge_by_comune, signals_by_comune

    assert people_in_charge_by_comune(registry.engine, 2022) == {"003106": 30}
    assert signals_by_comune(registry.engine, 2022) == {}
    assert default_year(registry.engine) == 2021  # own data stop in March 2022
