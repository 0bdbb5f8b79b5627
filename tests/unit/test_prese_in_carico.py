"""The prese-in-carico definitions, on hand-made registry rows (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import itertools

import sqlalchemy as sa

from hub.observatory.prese_in_carico import (
    PreseInCaricoRow,
    _statuses_in_window,
    prese_in_carico,
    render,
)
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record

D = dt.date
_ids = itertools.count()


def _common(conn: sa.Connection, org: str) -> dict[str, object]:
    return record(conn, org)


def _person(
    conn: sa.Connection,
    org: str,
    subject: str,
    birth_year: int | None,
    household: str | None,
    episodes: list[tuple[D, D | None]],
    assessments: list[tuple[D, bool | None, bool | None]] = (),
) -> None:  # type: ignore[assignment]
    conn.execute(
        t.subjects.insert().values(
            **_common(conn, org),
            subject=person(conn, subject),
            birth_year=birth_year,
            household=person(conn, household),
        )
    )
    for opened, closed in episodes:
        conn.execute(
            t.case_episodes.insert().values(
                **_common(conn, org),
                subject=person(conn, subject),
                area="FAM",
                opened_on=opened,
                closed_on=closed,
            )
        )
    for on, dis, nss in assessments:
        conn.execute(
            t.assessments.insert().values(
                **_common(conn, org),
                subject=person(conn, subject),
                assessed_on=on,
                disability=dis,
                non_self_sufficient=nss,
            )
        )


def test_groups_reference_date_households_and_changes_of_group(registry_url: str) -> None:
    reg = Registry.open(registry_url)
    with reg.engine.begin() as conn:
        # minore (2022-2010 = 12), no assessment: minori non disabili; household H1
        _person(conn, "A", "p-minore", 2010, "H1", [(D(2022, 3, 1), None)])
        # sibling in the same household, disabled since 2020
        _person(
            conn,
            "A",
            "p-minore-dis",
            2012,
            "H1",
            [(D(2021, 5, 1), D(2022, 2, 1))],
            [(D(2020, 1, 10), True, None)],
        )
        # adult (40), opened after 31 October: not counted in 2022
        _person(conn, "A", "p-late", 1982, "H2", [(D(2022, 11, 5), None)])
        # adult closed before the year: not counted
        _person(conn, "A", "p-closed", 1982, None, [(D(2020, 1, 5), D(2021, 12, 31))])
        # older person (80) assessed non self-sufficient in June: two groups, one person
        _person(
            conn,
            "A",
            "p-anziano",
            1942,
            None,
            [(D(2019, 1, 1), None)],
            [(D(2018, 5, 1), False, False), (D(2022, 6, 1), None, True)],
        )
        # older person already non self-sufficient: one group
        _person(
            conn,
            "A",
            "p-nsa",
            1940,
            None,
            [(D(2022, 1, 1), D(2022, 12, 31))],
            [(D(2015, 5, 1), None, True)],
        )
        # the same person known to consortium B too (district counts them once)
        _person(conn, "B", "p-nsa", 1940, None, [(D(2022, 2, 1), None)])
        # unknown birth year: in the total, in no group
        _person(conn, "B", "p-noage", None, None, [(D(2022, 2, 1), None)])
    (a,) = prese_in_carico(reg.engine, [2022], org="A")
    assert a == PreseInCaricoRow(
        year=2022,
        minori_non_disabili=1,
        minori_disabili=1,
        adulti_non_disabili=0,
        adulti_disabili=0,
        anziani=1,
        anziani_non_autosufficienti=2,
        utenti=4,
        nuclei=3,
        eta_ignota=0,
    )
    (district,) = prese_in_carico(reg.engine, [2022])
    assert district.utenti == 5  # p-nsa once, plus p-noage
    assert district.anziani_non_autosufficienti == 2
    assert district.eta_ignota == 1
    (y2021,) = prese_in_carico(reg.engine, [2021], org="A")
    # 2021: p-minore-dis (11, disabled), p-closed (39), p-anziano (79, not yet NSA)
    assert (
        y2021.minori_disabili,
        y2021.adulti_non_disabili,
        y2021.anziani,
        y2021.anziani_non_autosufficienti,
        y2021.utenti,
    ) == (1, 1, 1, 0, 3)
    reg.close()


def test_status_timeline() -> None:
    start, ref = D(2022, 1, 1), D(2022, 10, 31)
    assert _statuses_in_window([], start, ref) == {(False, False)}
    assert _statuses_in_window([(D(2022, 6, 1), None, None, True)], start, ref) == {
        (False, False),
        (False, True),
    }
    # assessed on 1 January: the earlier status was never held in the window
    assert _statuses_in_window([(D(2022, 1, 1), None, None, True)], start, ref) == {(False, True)}
    # expired before the window: back to "neither"
    assert _statuses_in_window([(D(2021, 1, 1), D(2021, 12, 31), True, None)], start, ref) == {
        (False, False)
    }
    # after the reference date: not counted
    assert _statuses_in_window([(D(2022, 11, 1), None, True, None)], start, ref) == {(False, False)}


def test_render_formats() -> None:
    rows = [PreseInCaricoRow(2020, 411, 108, 1190, 324, 249, 273, 2555, 1681)]
    table = render(rows)
    assert "Minori non disabili" in table.splitlines()[0]
    assert table.splitlines()[2].split("|")[-1].strip() == "1681"
    assert render(rows, "csv").splitlines()[1] == "2020,411,108,1190,324,249,273,2555,1681"
    assert '"utenti": 2555' in render(rows, "json")
