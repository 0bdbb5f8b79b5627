"""Pre-computed indicator tables: ``refresh(engine)`` after each sync.

Dashboard queries on a registry of millions of interventions cannot scan them
each time (see docs/performance.md). ``refresh`` computes, for every calendar
year with data, the district tables of every indicator (and each
organisation's, which are slices of them or computed alongside), and stores
them as JSON in ``obs_tables`` with a marker in ``obs_refresh`` naming the
last sync run they include. The indicator functions read them when the
period is a calendar year and no sync ran since the refresh; otherwise they
compute from the registry (same code, same results: a test checks it).

The CLI calls ``refresh`` after ``raccordo sync`` and the Airflow DAG after
its sync tasks; ``raccordo observatory refresh`` runs it by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import sqlalchemy as sa

from hub.observatory.rows import own
from hub.observatory.table import Period, Table, table_from_dict, table_to_dict
from hub.registry import tables as t

#: Marker row id (one marker per registry).
_MARKER = 1


def last_run_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(t.runs.c.id))).scalar() or 0)


def data_years(conn: sa.Connection) -> tuple[int, int] | None:
    """First and last calendar year any case episode, intervention or need signal touches."""
    ce, iv, ns = t.case_episodes, t.interventions, t.need_signals
    lo: list[dt.date] = []
    hi: list[dt.date] = []
    for tab, q_lo, q_hi in (
        (
            ce,
            sa.func.min(ce.c.opened_on),
            sa.func.max(sa.func.coalesce(ce.c.closed_on, ce.c.opened_on)),
        ),
        (
            iv,
            sa.func.min(iv.c.started_on),
            sa.func.max(sa.func.coalesce(iv.c.ended_on, iv.c.started_on)),
        ),
        (ns, sa.func.min(ns.c.on), sa.func.max(ns.c.on)),
    ):
        a, b = conn.execute(sa.select(q_lo, q_hi).where(own(tab))).one()
        if a is not None:
            lo.append(a)
            hi.append(b)
    if not lo:
        return None
    # Open episodes and interventions run on: include the current year too.
    last = max(max(hi).year, min(dt.date.today().year, max(hi).year + 1))
    return min(lo).year, last


def refresh(engine: sa.Engine, years: Iterable[int] | None = None) -> int:
    """Recompute the stored tables (every year with data, or ``years``); returns how many
    tables were stored."""
    from hub.observatory import indicators as ind
    from hub.observatory.cross import cross_district

    with engine.begin() as conn:
        conn.execute(t.obs_refresh.delete())
        conn.execute(t.obs_tables.delete())
        span = data_years(conn)
        run_id = last_run_id(conn)
    if span is None and years is None:
        return 0
    todo = sorted(years) if years is not None else list(range(span[0], span[1] + 1))  # type: ignore[index]
    rows: list[dict[str, object]] = []
    for year in todo:
        period = Period.year(year)
        with engine.connect() as conn:
            orgs = ind.organisations(conn)
            ets = ind.ets_orgs(conn)
        both = ind.interventions_both(engine, period)
        for by in ("area", "service"):
            district = both[by]
            rows.append(_row(year, f"iv.{by}", "*", district))
            for org in orgs:
                if org in district[0].cols:
                    rows.append(_row(year, f"iv.{by}", org, ind.slice_interventions(district, org)))
        ets_tables = ind.third_sector(engine, period, use_cache=False)
        rows.append(_row(year, "ets", "*", ets_tables))
        for org in sorted(ets):
            rows.append(
                _row(year, "ets", org, ind.third_sector(engine, period, org=org, use_cache=False))
            )
        rows.append(_row(year, "ov", "*", ind.overlaps(engine, period, use_cache=False)))
        rows.append(_row(year, "cov", "*", [ind.coverage(engine, period, use_cache=False)]))
        rows.append(_row(year, "xd", "*", cross_district(engine, period, use_cache=False)))
        pic = ind.prese_in_carico_table(engine, year, use_cache=False)
        rows.append(_row(year, "pic", "*", [pic]))
        for org in pic.rows:
            rows.append(_row(year, "pic", org, [ind.slice_prese_in_carico(pic, org)]))
    with engine.begin() as conn:
        if rows:
            conn.execute(t.obs_tables.insert(), rows)
        conn.execute(
            t.obs_refresh.insert().values(
                id=_MARKER,
                refreshed_at=dt.datetime.now(dt.UTC),
                last_run_id=run_id,
                first_year=min(todo) if todo else None,
                last_year=max(todo) if todo else None,
            )
        )
    return len(rows)


def _row(year: int, kind: str, org: str, tables: list[Table]) -> dict[str, object]:
    return {
        "year": year,
        "kind": kind,
        "org": org,
        "content": json.dumps([table_to_dict(tb) for tb in tables], separators=(",", ":")),
    }


def cached(engine: sa.Engine, kind: str, period: Period, org: str | None) -> list[Table] | None:
    """The stored tables for a calendar year, if the store is fresh; else None."""
    if period != Period.year(period.start.year):
        return None
    year = period.start.year
    with engine.connect() as conn:
        marker = conn.execute(
            sa.select(
                t.obs_refresh.c.last_run_id, t.obs_refresh.c.first_year, t.obs_refresh.c.last_year
            )
        ).first()
        if marker is None or marker[1] is None or not marker[1] <= year <= marker[2]:
            return None
        if marker[0] != last_run_id(conn):
            return None  # a sync ran since: the store is stale
        content = conn.execute(
            sa.select(t.obs_tables.c.content).where(
                t.obs_tables.c.kind == kind,
                t.obs_tables.c.year == year,
                t.obs_tables.c.org == (org or "*"),
            )
        ).scalar()
    if content is None:
        return None
    return [table_from_dict(d) for d in json.loads(content)]


def is_fresh(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        marker = conn.execute(sa.select(t.obs_refresh.c.last_run_id)).scalar()
        return marker is not None and marker == last_run_id(conn)
