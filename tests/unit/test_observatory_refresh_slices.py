"""Refreshing only the (organisation × year) slices a sync touched: the slices not touched
are not recomputed, and the store equals a full refresh's."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

import hub.observatory.indicators as ind
import hub.observatory.months as months_module
import hub.observatory.prese_in_carico as pic_module
from hub.observatory.aggregates import refresh, refresh_after_sync, touched_slices
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record

D = dt.date
_ids = itertools.count()
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _common(conn: sa.Connection, org: str, run_id: int | None = None) -> dict[str, object]:
    return record(conn, org, connector=f"c.{org}", run_id=run_id)


def _run(conn: sa.Connection, org: str) -> int:
    return int(
        conn.execute(
            t.runs.insert().values(
                connector=f"c.{org}", connector_type="test", org=org, mapping="m",
                mapping_version="1", started_at=NOW, status="succeeded",
            ).returning(t.runs.c.id)
        ).scalar_one()
    )  # fmt: skip


def _iv(conn: sa.Connection, org: str, subject: str, start: D, end: D | None) -> int:
    return int(
        conn.execute(
            t.interventions.insert()
            .values(
                **_common(conn, org), subject=person(conn, subject), service_code="A1.01",
                area="FAM", started_on=start, ended_on=end, amount=Decimal("10"),
            )
            .returning(t.interventions.c.id)
        ).scalar_one()
    )  # fmt: skip


def _ce(conn: sa.Connection, org: str, subject: str, opened: D, closed: D | None) -> int:
    return int(
        conn.execute(
            t.case_episodes.insert()
            .values(
                **_common(conn, org),
                subject=person(conn, subject),
                area="FAM",
                opened_on=opened,
                closed_on=closed,
            )
            .returning(t.case_episodes.c.id)
        ).scalar_one()
    )


@pytest.fixture
def registry(registry_url: str) -> Registry:
    """Consortia A and B, entity E1, data in 2020-2023 (the store also holds 2024)."""
    reg = Registry.open(registry_url)
    reg.upsert_district("DIST", "Distretto", "DIST")
    with reg.engine.begin() as conn:
        conn.execute(
            t.organisations.insert(),
            [
                {"code": "A", "name": "Consorzio A", "kind": "ente_gestore"},
                {"code": "B", "name": "Consorzio B", "kind": "ente_gestore"},
                {"code": "E1", "name": "Caritas", "kind": "ets"},
            ],
        )
        _run(conn, "A")
        for y in range(2020, 2024):
            for org in ("A", "B"):
                for i in range(6):
                    s = f"{org}{y}{i}"
                    conn.execute(
                        t.subjects.insert().values(
                            **_common(conn, org), subject=person(conn, s), birth_year=1950 + i
                        )
                    )
                    _ce(conn, org, s, D(y, 2, 1), D(y, 11, 30))
                    _iv(conn, org, s, D(y, 3, 1), D(y, 4, 1))
            conn.execute(
                t.need_signals.insert().values(
                    **_common(conn, "E1"), subject=person(conn, f"A{y}0"), needs="food",
                    services_given="", comune_istat="003106", on=D(y, 5, 1),
                    referred_by_social_services=False,
                )
            )  # fmt: skip
    return reg


def _store(reg: Registry) -> list[tuple[Any, ...]]:
    o = t.obs_tables
    with reg.engine.connect() as conn:
        return sorted(
            tuple(r) for r in conn.execute(sa.select(o.c.kind, o.c.year, o.c.org, o.c.content))
        )


class Spy:
    """Records the (year, organisation) of every computation a refresh runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pic: list[tuple[int, str | None]] = []
        self.ets: list[tuple[int, str | None]] = []
        self.ets_from_months: list[bool] = []
        self.iv: list[int] = []
        self.months: list[tuple[str, str, tuple[int, int]]] = []
        real_pic: Callable[..., Any] = pic_module.prese_in_carico
        real_ets: Callable[..., Any] = ind._third_sector
        real_iv: Callable[..., Any] = ind.interventions_both

        def pic(engine: sa.Engine, years: Any, *, org: str | None = None, **kw: Any) -> Any:
            years = list(years)
            self.pic += [(y, org) for y in years]
            return real_pic(engine, years, org=org, **kw)

        def ets(engine: sa.Engine, period: Any, org: str | None, *args: Any) -> Any:
            self.ets.append((period.start.year, org))
            self.ets_from_months.append(bool(args) and args[0] is not None)
            return real_ets(engine, period, org, *args)

        def iv(engine: sa.Engine, period: Any, **kw: Any) -> Any:
            self.iv.append(period.start.year)
            return real_iv(engine, period, **kw)

        real_compute: Callable[..., Any] = months_module.compute

        def compute(conn: Any, org: str, table: str, lo: int, hi: int) -> Any:
            self.months.append((org, table, (lo, hi)))
            return real_compute(conn, org, table, lo, hi)

        monkeypatch.setattr(months_module, "compute", compute)
        monkeypatch.setattr(pic_module, "prese_in_carico", pic)
        monkeypatch.setattr(ind, "_third_sector", ets)
        monkeypatch.setattr(ind, "interventions_both", iv)


def test_a_sync_recomputes_only_the_slices_it_touched(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    refresh(registry.engine)
    engine = registry.engine
    with engine.begin() as conn:  # A's sync: one change, one move, one deletion
        run = _run(conn, "A")
        iv, ce = t.interventions, t.case_episodes
        changed = conn.execute(
            sa.select(iv.c.id).where(iv.c.org == "A", iv.c.started_on == D(2022, 3, 1))
        ).scalar()
        conn.execute(iv.update().where(iv.c.id == changed).values(amount=99, run_id=run))
        moved = conn.execute(
            sa.select(iv.c.id).where(iv.c.org == "A", iv.c.started_on == D(2020, 3, 1))
        ).scalar()
        conn.execute(
            iv.update()
            .where(iv.c.id == moved)
            .values(started_on=D(2022, 6, 1), ended_on=D(2022, 7, 1), run_id=run)
        )
        gone = conn.execute(
            sa.select(ce.c.id).where(ce.c.org == "A", ce.c.opened_on == D(2021, 2, 1))
        ).scalar()
        conn.execute(ce.delete().where(ce.c.id == gone))
    touched = touched_slices(engine)
    # 2020: the moved row left it; 2021: the deleted episode; 2022: changed and moved in.
    assert touched == {("A", 2020), ("A", 2021), ("A", 2022)}

    spy = Spy(monkeypatch)
    refresh_after_sync(engine)
    # Interventions tables: the years whose interventions changed (2021 lost an episode only).
    assert sorted(set(spy.iv)) == [2020, 2022]
    assert {org for _, org in spy.pic} == {"A", None}  # B's rows are reused
    # Only case episodes, subjects and assessments feed the prese in carico: the
    # interventions changed in 2020 and 2022 do not recompute them; the deleted episode
    # of 2021 does.
    assert {y for y, _ in spy.pic} == {2021}
    # Only A's months are recomputed from the registry, and only those touched.
    assert {org for org, _, _ in spy.months} == {"A"}
    assert {(table, lo, hi) for _, table, (lo, hi) in spy.months} == {
        ("interventions", 2020 * 12 + 2, 2020 * 12 + 3),  # the moved row's old months
        ("interventions", 2022 * 12 + 2, 2022 * 12 + 3),  # the changed row (Mar-Apr)
        ("interventions", 2022 * 12 + 5, 2022 * 12 + 6),  # the moved row's new months
        ("case_episodes", 2021 * 12 + 1, 2021 * 12 + 10),  # the deleted episode's
    }
    # No need signal changed: the Third Sector tables are kept as stored.
    assert spy.ets == []
    incremental = _store(registry)
    monkeypatch.undo()
    refresh(engine)
    assert _store(registry) == incremental  # the same as a full refresh
    assert touched_slices(engine) == set()  # nothing since


def test_a_third_sector_sync_and_a_new_year(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = registry.engine
    refresh(engine)
    with engine.begin() as conn:
        run = _run(conn, "E1")
        conn.execute(
            t.need_signals.insert().values(
                **_common(conn, "E1", run), subject=None, needs="work", services_given="",
                comune_istat="003106", on=D(2023, 9, 1), referred_by_social_services=False,
            )
        )  # fmt: skip
        run_b = _run(conn, "B")
        c = _common(conn, "B", run_b)
        conn.execute(
            t.case_episodes.insert().values(
                **c,
                subject=person(conn, "B-new"),
                area="FAM",
                opened_on=D(2025, 1, 1),
                closed_on=None,
            )
        )
    touched = touched_slices(engine)
    assert touched is not None
    assert ("E1", 2023) in touched and ("B", 2025) in touched
    assert not any(y < 2023 for _, y in touched)
    spy = Spy(monkeypatch)
    refresh_after_sync(engine)
    # E1's new contact: its tables and the district's, assembled from the stored months.
    assert {2023} <= {y for y, _ in spy.ets} and all(spy.ets_from_months)
    # B's episode opens 2025, a year new to the store: every organisation's months of it
    # (open rows run into it); of A, nothing else.
    assert {org for org, _, _ in spy.months} == {"A", "B", "E1"}
    assert all(lo >= 2025 * 12 for org, _, (lo, _) in spy.months if org == "A")
    monkeypatch.undo()
    incremental = _store(registry)
    refresh(engine)
    assert _store(registry) == incremental


def test_without_a_stored_refresh_everything_is_computed(registry: Registry) -> None:
    assert touched_slices(registry.engine) is None
    n = refresh_after_sync(registry.engine)
    assert n == len(_store(registry)) and n > 0
