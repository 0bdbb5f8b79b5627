"""Any period of whole months from the per-(organisation × month) aggregates: the tables
equal the live computation from the registry, a refresh of the touched months equals a full
refresh, and rows received from another district stay out."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
import sqlalchemy as sa
from pyroaring import BitMap

import hub.observatory.indicators as ind
import hub.observatory.months as mo
from hub.observatory.aggregates import refresh, refresh_after_sync, touched_months
from hub.observatory.table import Period
from hub.registry import Registry
from hub.registry import tables as t
from tests.support.rows import person, record
from tests.support.rows import run as run_of

D = dt.date
ORGS = ("A", "B", "C")
ETS = ("E1", "E2")
AREAS = {"FAM": ["A1.01", "A2.02"], "DIS": ["A1.09"], "ELD": ["C1.02", "A2.14"]}
NEEDS = ["food", "housing", "work", "economic"]
SERVICES = ["food_parcel", "listening", "clothing"]
COMUNI = ["003106", "003024", "003001"]

QUARTER = Period(D(2023, 4, 1), D(2023, 6, 30))
CUSTOM = Period(D(2022, 11, 1), D(2023, 2, 28))  # across a year end
PERIODS = [QUARTER, CUSTOM, Period(D(2023, 1, 1), D(2023, 1, 31)), Period.year(2022)]


def _day(rng: random.Random) -> dt.date:
    return D(2022, 1, 1) + dt.timedelta(days=rng.randrange(2 * 365))


def _fill(conn: sa.Connection, rng: random.Random, rows: int, connector: str = "c") -> None:
    """People known to one or two organisations, interventions crossing month and year
    ends (some open), episodes, assessments, Third Sector contacts (some anonymous)."""
    for org in (*ORGS, *ETS):
        run_of(conn, f"{connector}.{org}", org)
    people = [f"p{i}" for i in range(rows // 3)]
    for i in range(rows):
        who = rng.choice(people)
        org = ORGS[int(who[1:]) % len(ORGS)] if rng.random() < 0.7 else rng.choice(ORGS)
        area = rng.choice(list(AREAS))
        start = _day(rng)
        end = None if rng.random() < 0.25 else start + dt.timedelta(days=rng.randrange(200))
        conn.execute(
            t.interventions.insert().values(
                **record(conn, org, connector=f"{connector}.{org}"), subject=person(conn, who),
                service_code=rng.choice(AREAS[area]), area=area, started_on=start, ended_on=end,
                amount=None if i % 7 == 0 else rng.randrange(1, 90_000) / 100,
            )
        )  # fmt: skip
        if i % 3 == 0:
            opened = _day(rng)
            conn.execute(
                t.case_episodes.insert().values(
                    **record(conn, org, connector=f"{connector}.{org}"), subject=person(conn, who),
                    area=area, opened_on=opened,
                    closed_on=None if i % 2 else opened + dt.timedelta(days=rng.randrange(400)),
                )
            )  # fmt: skip
        if i % 5 == 0:
            conn.execute(
                t.assessments.insert().values(
                    **record(conn, org, connector=f"{connector}.{org}"), subject=person(conn, who),
                    assessed_on=_day(rng), disability=rng.random() < 0.5,
                )
            )  # fmt: skip
        if i % 2 == 0:
            e = rng.choice(ETS)
            conn.execute(
                t.need_signals.insert().values(
                    **record(conn, e, connector=f"{connector}.{e}"),
                    subject=person(conn, who) if rng.random() < 0.6 else None,
                    needs="|".join(rng.sample(NEEDS, rng.randint(1, 2))),
                    services_given="|".join(rng.sample(SERVICES, rng.randint(0, 2))),
                    comune_istat=rng.choice(COMUNI), on=_day(rng),
                    referred_by_social_services=False,
                )
            )  # fmt: skip


@pytest.fixture
def registry(registry_url: str) -> Registry:
    reg = Registry.open(registry_url)
    reg.upsert_district("DIST", "Distretto", "DIST")
    with reg.engine.begin() as conn:
        conn.execute(
            t.organisations.insert(),
            [{"code": o, "name": f"Consorzio {o}", "kind": "ente_gestore"} for o in ORGS]
            + [{"code": e, "name": f"Ente {e}", "kind": "ets"} for e in ETS],
        )
        _fill(conn, random.Random(5), 240)
        # Rows received from another district: never in the district's own tables.
        _fill(conn, random.Random(6), 30, connector="x.OTHER")
    return reg


def _all_tables(engine: sa.Engine, period: Period, use_cache: bool) -> list[Any]:
    out: list[Any] = []
    for by in ("area", "service"):
        out += ind.interventions(engine, period, by=by, use_cache=use_cache)
        out += ind.interventions(engine, period, by=by, org="B", use_cache=use_cache)
    out += ind.third_sector(engine, period, use_cache=use_cache)
    out += ind.third_sector(engine, period, org="E2", use_cache=use_cache)
    out += ind.overlaps(engine, period, use_cache=use_cache)
    out.append(ind.coverage(engine, period, use_cache=use_cache))
    return out


def _no_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every live computation fail: what passes is answered from the months."""

    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("computed from the registry")

    for name in ("_iv_counts", "_supplied", "_ce_in_period", "_ns_in_period"):
        monkeypatch.setattr(ind, name, boom)


@pytest.mark.parametrize("period", PERIODS, ids=lambda p: p.label)
def test_months_equal_the_live_computation(
    registry: Registry, period: Period, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = registry.engine
    live = _all_tables(engine, period, use_cache=False)
    refresh(engine)
    assert ind.monthly_span(engine, period, None) is not None
    with monkeypatch.context() as m:
        _no_live(m)
        from_months = _all_tables(engine, period, use_cache=True)
    assert from_months == live
    assert live[0].total and live[1].total  # the crafted data do fill the tables


def test_periods_not_of_whole_months_and_stale_stores_stay_live(registry: Registry) -> None:
    engine = registry.engine
    refresh(engine)
    odd = Period(D(2023, 4, 10), D(2023, 6, 30))
    assert ind.monthly_span(engine, odd, None) is None
    assert ind.interventions(engine, odd) == ind.interventions(engine, odd, use_cache=False)
    assert ind.monthly_span(engine, Period(D(2031, 1, 1), D(2031, 3, 31)), None) is None
    with engine.begin() as conn:
        run_of(conn, "c.new", "A")  # a sync ran since the refresh
    assert ind.monthly_span(engine, QUARTER, None) is None


def test_received_rows_are_not_in_the_bitmaps(registry: Registry) -> None:
    engine = registry.engine
    refresh(engine)
    with engine.connect() as conn:
        received = {
            int(s)
            for tab in (t.interventions, t.case_episodes, t.need_signals)
            for (s,) in conn.execute(
                sa.select(tab.c.subject)
                .join(t.runs, t.runs.c.id == tab.c.run_id)
                .where(t.runs.c.connector.like("x.%"), tab.c.subject.is_not(None))
            )
        }
        own = {
            int(s)
            for tab in (t.interventions, t.case_episodes, t.need_signals)
            for (s,) in conn.execute(
                sa.select(tab.c.subject)
                .join(t.runs, t.runs.c.id == tab.c.run_id)
                .where(t.runs.c.connector.like("c.%"), tab.c.subject.is_not(None))
            )
        }
        stored = mo.union(
            BitMap.deserialize(bytes(p))
            for (p,) in conn.execute(
                sa.select(t.obs_months.c.people).where(t.obs_months.c.people.is_not(None))
            )
        )
    assert received - own  # some received people are not the district's own
    assert set(stored) == own


def _store(engine: sa.Engine) -> tuple[Any, ...]:
    """Both stores and the years the marker says they cover."""
    o, m, r = t.obs_tables, t.obs_months, t.obs_refresh
    with engine.connect() as conn:
        span = tuple(conn.execute(sa.select(r.c.first_year, r.c.last_year, r.c.last_run_id)).one())
        tables = sorted(
            tuple(r) for r in conn.execute(sa.select(o.c.kind, o.c.year, o.c.org, o.c.content))
        )
        months = sorted(
            (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8] or b""))
            for r in conn.execute(
                sa.select(
                    m.c.kind, m.c.org, m.c.month, m.c.key, m.c.n, m.c.cents, m.c.carry_n,
                    m.c.carry_cents, m.c.people,
                )
            )
        )  # fmt: skip
    return span, tables, months


def test_a_refresh_of_the_touched_months_equals_a_full_one(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = registry.engine
    refresh(engine)
    span_before = _store(engine)[0]
    with engine.begin() as conn:  # a sync of B: one change, one move, one deletion, one new
        run = run_of(conn, "c.B-second", "B")
        iv = t.interventions
        ids = [
            int(i)
            for (i,) in conn.execute(
                sa.select(iv.c.id).where(iv.c.org == "B", own_run(iv)).order_by(iv.c.id)
            )
        ]
        conn.execute(iv.update().where(iv.c.id == ids[0]).values(amount=1234.5, run_id=run))
        conn.execute(
            iv.update()
            .where(iv.c.id == ids[1])
            .values(started_on=D(2023, 5, 20), ended_on=D(2023, 8, 2), run_id=run)
        )
        conn.execute(iv.delete().where(iv.c.id == ids[2]))
        conn.execute(
            iv.insert().values(
                **record(conn, "B", run_id=run), subject=person(conn, "p1"),
                service_code="A1.09", area="DIS", started_on=D(2023, 3, 3), ended_on=None,
                amount=7,
            )
        )  # fmt: skip
        # And one reaching a year the store does not hold yet (a new last year).
        conn.execute(
            iv.insert().values(
                **record(conn, "B", run_id=run), subject=person(conn, "p2"),
                service_code="A1.01", area="FAM", started_on=D(2023, 12, 1),
                ended_on=D(span_before[1] + 1, 2, 1), amount=3,
            )
        )  # fmt: skip
    work = touched_months(engine)
    assert work is not None
    assert {o for found in work.months.values() for o, _ in found} == {"B"}
    assert set(work.months) == {"interventions"}
    assert not work.pic and not work.xd  # no episode, subject or assessment changed
    computed: list[tuple[str, str]] = []
    ranges: list[tuple[str, int]] = []
    real = mo.compute

    def spy(conn: sa.Connection, org: str, table: str, lo: int, hi: int) -> Any:
        computed.append((org, table))
        ranges.append((org, lo))
        return real(conn, org, table, lo, hi)

    monkeypatch.setattr(mo, "compute", spy)
    refresh_after_sync(engine)
    assert _store(engine)[0][1] == span_before[1] + 1  # the store grew by a year
    # B's interventions; and, for the new year only, every organisation's months.
    assert ("B", "interventions") in computed
    assert {org for org, _ in computed} == {*ORGS, *ETS}
    new_year = (span_before[1] + 1) * 12
    assert all(lo >= new_year for org, lo in ranges if org != "B")
    incremental = _store(engine)
    monkeypatch.undo()
    refresh(engine)
    assert _store(engine) == incremental
    # And the months still answer like the registry after the change.
    assert ind.interventions(engine, QUARTER) == ind.interventions(engine, QUARTER, use_cache=False)


def own_run(table: sa.Table) -> sa.ColumnElement[bool]:
    return table.c.run_id.in_(sa.select(t.runs.c.id).where(t.runs.c.connector.like("c.%")))


def test_month_arithmetic() -> None:
    assert mo.yyyymm(mo.index(D(2023, 12, 31))) == 202312
    assert mo.from_yyyymm(202301) == mo.index(D(2023, 1, 5))
    assert mo.whole_months(Period(D(2024, 2, 1), D(2024, 2, 29))) == (
        mo.index(D(2024, 2, 1)),
        mo.index(D(2024, 2, 1)),
    )
    assert mo.whole_months(Period(D(2024, 2, 1), D(2024, 2, 28))) is None
    assert mo.runs_of([5, 1, 2, 3, 7, 8]) == [(1, 3), (5, 5), (7, 8)]


def test_refresh_of_year_slices_still_equals_a_full_one(registry: Registry) -> None:
    """``Hub.refresh(touched=...)`` passes ``(organisation, year)`` slices: everything of
    those is recomputed, and the store equals a full refresh's."""
    engine = registry.engine
    refresh(engine)
    with engine.begin() as conn:
        run = run_of(conn, "c.A-again", "A")
        ce = t.case_episodes
        first = conn.execute(
            sa.select(sa.func.min(ce.c.id)).where(ce.c.org == "A", own_run(ce))
        ).scalar()
        conn.execute(ce.update().where(ce.c.id == first).values(closed_on=None, run_id=run))
    slices = {("A", y) for y in range(2022, 2025)}
    refresh(engine, touched=slices)
    incremental = _store(engine)
    refresh(engine)
    assert _store(engine) == incremental
