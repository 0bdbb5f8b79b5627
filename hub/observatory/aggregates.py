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
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa

from hub.observatory.rows import own
from hub.observatory.table import Period, Table, table_from_dict, table_to_dict
from hub.registry import tables as t

#: Marker row id (one marker per registry).
_MARKER = 1
#: ``obs_tables.kind`` of the per-organisation fingerprints (year 0): see touched_slices.
_FP = "fp"


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


def refresh(
    engine: sa.Engine,
    years: Iterable[int] | None = None,
    *,
    touched: Collection[tuple[str, int]] | None = None,
) -> int:
    """Recompute the stored tables; returns how many rows the store holds afterwards.

    Without ``touched``: every year with data (or ``years``), from scratch. With
    ``touched`` (the ``(organisation, year)`` slices a sync changed, see
    :func:`touched_slices`): only those years are recomputed, and in them only the
    touched organisations' own computations (their prese-in-carico row, an entity's
    Third Sector tables); the district tables of a touched year are assembled again
    from those and the stored slices of the organisations not touched. Untouched years
    are kept as stored. The result is the same as a full refresh (a test checks it).
    """
    from hub.observatory import indicators as ind
    from hub.observatory.cross import cross_district

    with engine.connect() as conn:
        marker = conn.execute(
            sa.select(t.obs_refresh.c.first_year, t.obs_refresh.c.last_year)
        ).first()
        span = data_years(conn)
        run_id = last_run_id(conn)
    full = touched is None or marker is None or marker[0] is None
    if span is None and years is None:
        with engine.begin() as conn:
            conn.execute(t.obs_refresh.delete())
            conn.execute(t.obs_tables.delete())
        return 0
    if years is not None:
        todo = sorted(set(years))
    elif span is not None:
        todo = list(range(span[0], span[1] + 1))
    else:
        todo = []
    touched_orgs: dict[int, set[str]] = defaultdict(set)
    stored_years: set[int] = set()
    if not full:
        assert touched is not None and marker is not None
        stored_years = set(range(int(marker[0]), int(marker[1]) + 1))
        for org, year in touched:
            touched_orgs[year].add(org)
        # Years that appear or disappear (the span changed) are recomputed / dropped.
        recompute = sorted((set(touched_orgs) & set(todo)) | (set(todo) - stored_years))
    else:
        recompute = todo
    rows: list[dict[str, object]] = []
    for year in recompute:
        period = Period.year(year)
        with engine.connect() as conn:
            orgs = ind.organisations(conn)
            ets = ind.ets_orgs(conn)
        fresh_year = full or year not in stored_years
        keep = set() if fresh_year else set(orgs) - touched_orgs.get(year, set())
        both = ind.interventions_both(engine, period)
        for by in ("area", "service"):
            district = both[by]
            rows.append(_row(year, f"iv.{by}", "*", district))
            for org in orgs:
                if org in district[0].cols:
                    rows.append(_row(year, f"iv.{by}", org, ind.slice_interventions(district, org)))
        ets_kept = _stored(engine, "ets", year, keep & ets)
        ets_share = {
            org: ets_kept[org]
            if org in ets_kept
            else ind.third_sector(engine, period, org=org, use_cache=False)
            for org in sorted(ets)
        }
        ets_tables = ind.third_sector(engine, period, use_cache=False, reuse=ets_share)
        rows.append(_row(year, "ets", "*", ets_tables))
        for org in sorted(ets):
            rows.append(_row(year, "ets", org, ets_share[org]))
        rows.append(_row(year, "ov", "*", ind.overlaps(engine, period, use_cache=False)))
        rows.append(_row(year, "cov", "*", [ind.coverage(engine, period, use_cache=False)]))
        rows.append(_row(year, "xd", "*", cross_district(engine, period, use_cache=False)))
        pic_kept = {o: tb[0] for o, tb in _stored(engine, "pic", year, keep).items()}
        pic = ind.prese_in_carico_table(engine, year, use_cache=False, reuse=pic_kept)
        rows.append(_row(year, "pic", "*", [pic]))
        for org in pic.rows:
            rows.append(_row(year, "pic", org, [ind.slice_prese_in_carico(pic, org)]))
    with engine.begin() as conn:
        if full:
            conn.execute(t.obs_tables.delete())
        else:
            gone = [y for y in stored_years if y not in todo]
            conn.execute(t.obs_tables.delete().where(t.obs_tables.c.year.in_([*recompute, *gone])))
        conn.execute(t.obs_refresh.delete())
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
        # What the next incremental refresh compares against (see touched_slices).
        _store_fingerprints(conn, None if full else {o for o, _ in touched or ()})
        return int(conn.execute(sa.select(sa.func.count()).select_from(t.obs_tables)).scalar() or 0)


def _stored(engine: sa.Engine, kind: str, year: int, orgs: Iterable[str]) -> dict[str, list[Table]]:
    """The stored tables of ``kind`` for ``year`` of each of ``orgs`` (those present)."""
    wanted = sorted(set(orgs))
    if not wanted:
        return {}
    o = t.obs_tables
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(o.c.org, o.c.content).where(
                o.c.kind == kind, o.c.year == year, o.c.org.in_(wanted)
            )
        ).all()
    return {str(org): [table_from_dict(d) for d in json.loads(content)] for org, content in found}


# -- which slices a sync touched ------------------------------------------------------
#: Record tables with the dates that place a row in calendar years: (first, last or None).
def _spans() -> list[tuple[sa.Table, sa.ColumnElement[Any], sa.ColumnElement[Any] | None]]:
    return [
        (t.case_episodes, t.case_episodes.c.opened_on, t.case_episodes.c.closed_on),
        (t.interventions, t.interventions.c.started_on, t.interventions.c.ended_on),
        (t.need_signals, t.need_signals.c.on, t.need_signals.c.on),
        # A status holds from its assessment on: every later year may change.
        (t.assessments, t.assessments.c.assessed_on, None),
    ]


def _year(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.cast(sa.func.extract("year", col), sa.Integer)


def fingerprint(conn: sa.Connection, orgs: Iterable[str]) -> dict[str, dict[str, int]]:
    """For each organisation: how many rows each record table holds per span of years
    (``"case_episode|2021|2023"``; an open end is ``-``), and its subject rows. A row that
    leaves a span (deleted, or its dates moved) lowers that span's count: that is how a
    sync's deletions and moves are found although the rows are gone."""
    wanted = sorted(set(orgs))
    out: dict[str, dict[str, int]] = {o: {} for o in wanted}
    if not wanted:
        return out
    for table, lo, hi in _spans():
        y1 = _year(hi) if hi is not None else sa.literal(-1)
        q = (
            sa.select(table.c.org, _year(lo), y1, sa.func.count())
            .where(table.c.org.in_(wanted))
            .group_by(table.c.org, _year(lo), y1)
        )
        for org, a, b, n in conn.execute(q):
            b_txt = "-" if b is None or int(b) == -1 else str(int(b))
            out[str(org)][f"{table.name}|{int(a)}|{b_txt}"] = int(n)
    su = t.subjects
    for org, n in conn.execute(
        sa.select(su.c.org, sa.func.count()).where(su.c.org.in_(wanted)).group_by(su.c.org)
    ):
        out[str(org)]["subjects"] = int(n)
    return out


def _span_years(key: str, first: int, last: int) -> range:
    if key == "subjects":
        return range(first, last + 1)  # no dates: every year the organisation has
    _, a, b = key.split("|")
    lo = int(a)
    hi = last if b == "-" or key.startswith(t.assessments.name) else int(b)
    return range(max(lo, first), min(hi, last) + 1)


def touched_slices(engine: sa.Engine) -> set[tuple[str, int]] | None:
    """The ``(organisation, year)`` slices changed by the runs since the last refresh
    (None when nothing is stored yet: everything is to compute).

    Derived from those runs and the rows they wrote: each run's organisation; the
    years of every row carrying one of their run ids (new or changed rows: a row's
    ``run_id`` is the run that last wrote it); and the years whose row counts dropped
    against the fingerprint stored at the last refresh (deleted rows, rows whose dates
    moved out). A changed subject row (no dates) touches every year of its organisation.
    """
    with engine.connect() as conn:
        marker = conn.execute(
            sa.select(
                t.obs_refresh.c.last_run_id, t.obs_refresh.c.first_year, t.obs_refresh.c.last_year
            )
        ).first()
        if marker is None or marker[1] is None:
            return None
        since, first, last = int(marker[0]), int(marker[1]), int(marker[2])
        span = data_years(conn)
        if span is not None:
            first, last = min(first, span[0]), max(last, span[1])
        orgs = {
            str(o)
            for (o,) in conn.execute(sa.select(t.runs.c.org).where(t.runs.c.id > since).distinct())
        }
        if not orgs:
            return set()
        out: set[tuple[str, int]] = set()
        for table, lo, hi in _spans():
            y1 = _year(hi) if hi is not None else sa.literal(-1)
            q = (
                sa.select(table.c.org, _year(lo), y1)
                .where(table.c.org.in_(sorted(orgs)), table.c.run_id > since)
                .distinct()
            )
            for org, a, b in conn.execute(q):
                b_txt = "-" if b is None or int(b) == -1 else str(int(b))
                for y in _span_years(f"{table.name}|{int(a)}|{b_txt}", first, last):
                    out.add((str(org), y))
        su = t.subjects
        for (org,) in conn.execute(
            sa.select(su.c.org).where(su.c.org.in_(sorted(orgs)), su.c.run_id > since).distinct()
        ):
            out |= {(str(org), y) for y in range(first, last + 1)}
        before = _stored_fingerprint(conn, orgs)
        now = fingerprint(conn, orgs)
    for org in orgs:
        old, new = before.get(org), now[org]
        if old is None:  # no fingerprint stored: every year of it
            out |= {(org, y) for y in range(first, last + 1)}
            continue
        for key, n in old.items():
            if new.get(key, 0) < n:
                out |= {(org, y) for y in _span_years(key, first, last)}
    return out


def _stored_fingerprint(conn: sa.Connection, orgs: Iterable[str]) -> dict[str, dict[str, int]]:
    o = t.obs_tables
    found = conn.execute(
        sa.select(o.c.org, o.c.content).where(
            o.c.kind == _FP, o.c.year == 0, o.c.org.in_(sorted(set(orgs)))
        )
    ).all()
    return {str(org): json.loads(content) for org, content in found}


def _store_fingerprints(conn: sa.Connection, orgs: set[str] | None) -> None:
    """Store the fingerprint of ``orgs`` (None: every organisation with rows)."""
    if orgs is None:
        wanted: set[str] = set()
        for table in t.RECORD_TABLES.values():
            wanted |= {str(x) for (x,) in conn.execute(sa.select(table.c.org).distinct())}
        conn.execute(t.obs_tables.delete().where(t.obs_tables.c.kind == _FP))
    else:
        wanted = set(orgs)
        if wanted:
            conn.execute(
                t.obs_tables.delete().where(
                    t.obs_tables.c.kind == _FP, t.obs_tables.c.org.in_(sorted(wanted))
                )
            )
    if not wanted:
        return
    conn.execute(
        t.obs_tables.insert(),
        [
            {"year": 0, "kind": _FP, "org": o, "content": json.dumps(v, sort_keys=True)}
            for o, v in fingerprint(conn, wanted).items()
        ],
    )


def refresh_after_sync(engine: sa.Engine) -> int:
    """Refresh only the slices the runs since the last refresh touched (everything when
    nothing was stored yet); returns how many rows the store holds."""
    return refresh(engine, touched=touched_slices(engine))


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
