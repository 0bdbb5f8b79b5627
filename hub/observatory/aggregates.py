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
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hub.observatory import months as mo
from hub.observatory.rows import own, received
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


@dataclass
class Touched:
    """What the runs since the last refresh changed.

    ``months``: per record table, the ``(organisation, month index)`` whose monthly
    aggregates must be recomputed; ``pic``: the ``(organisation, year)`` prese-in-carico
    rows to recompute (case episodes, subjects and assessments feed them); ``xd``: the
    years whose cross-district tables to recompute (case episodes, own or received).
    """

    months: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    pic: set[tuple[str, int]] = field(default_factory=set)
    xd: set[int] = field(default_factory=set)
    #: The fingerprints of the touched organisations, computed while finding what changed
    #: (stored again by the refresh, so it need not compute them twice).
    fingerprints: dict[str, dict[str, int]] | None = None
    #: The registry's first and last year with data, found at the same time.
    data_span: tuple[int, int] | None = None

    def slices(self) -> set[tuple[str, int]]:
        """The ``(organisation, year)`` slices touched."""
        return {(o, m // 12) for found in self.months.values() for o, m in found} | self.pic

    def years(self) -> set[int]:
        return {y for _, y in self.slices()} | self.xd

    def years_of(self, *tables: str) -> set[int]:
        """The years of the touched months of ``tables``."""
        return {m // 12 for name in tables for _, m in self.months.get(name, ())}

    @classmethod
    def of_slices(cls, slices: Iterable[tuple[str, int]]) -> Touched:
        """Everything of each ``(organisation, year)`` (the form ``Hub.refresh`` takes)."""
        out = cls()
        for org, year in slices:
            for table in mo.TABLES:
                out.months.setdefault(table, set()).update((org, year * 12 + k) for k in range(12))
            out.pic.add((org, year))
            out.xd.add(year)
        return out


def refresh(
    engine: sa.Engine,
    years: Iterable[int] | None = None,
    *,
    touched: Touched | Collection[tuple[str, int]] | None = None,
) -> int:
    """Recompute the stored aggregates; returns how many year tables the store holds.

    Without ``touched``: every month and year with data (or of ``years``), from scratch.
    With ``touched`` (what the runs since the last refresh changed, see
    :func:`touched_months`; or ``(organisation, year)`` slices): only the touched
    organisations' touched months of the monthly aggregates are recomputed from the
    registry; the year tables of every touched year are assembled again from the monthly
    aggregates (no scan), except the prese in carico (the touched organisations' rows and
    the district's, computed live) and the cross-district tables (live, for the years whose
    case episodes changed). Untouched years are kept as stored. The result is the same as a
    full refresh (a test checks it).
    """
    from hub.observatory import indicators as ind
    from hub.observatory.cross import cross_district

    with engine.connect() as conn:
        marker = conn.execute(
            sa.select(t.obs_refresh.c.first_year, t.obs_refresh.c.last_year)
        ).first()
        known = touched.data_span if isinstance(touched, Touched) else None
        span = known or data_years(conn)
        run_id = last_run_id(conn)
    full = touched is None or marker is None or marker[0] is None
    if span is None and years is None:
        with engine.begin() as conn:
            conn.execute(t.obs_refresh.delete())
            conn.execute(t.obs_tables.delete())
            conn.execute(t.obs_months.delete())
        return 0
    if years is not None:
        todo = sorted(set(years))
    elif span is not None:
        todo = list(range(span[0], span[1] + 1))
    else:
        todo = []
    lo, hi = (min(todo) * 12, max(todo) * 12 + 11) if todo else (0, -1)
    stored_years: set[int] = set()
    work = Touched()
    if not full:
        assert touched is not None and marker is not None
        work = touched if isinstance(touched, Touched) else Touched.of_slices(touched)
        stored_years = set(range(int(marker[0]), int(marker[1]) + 1))
    new_years = set(todo) - stored_years
    # Months of years new to the store: every organisation (open rows run into them).
    with engine.begin() as conn:
        if full:
            mo.rebuild(conn, lo, hi)
        else:
            months = {k: set(v) for k, v in work.months.items()}
            if new_years:
                every = mo.organisations_with_rows(conn)
                fresh = [m for y in sorted(new_years) for m in range(y * 12, y * 12 + 12)]
                for table in mo.TABLES:
                    months.setdefault(table, set()).update((o, m) for o in every for m in fresh)
            mo.update(conn, months, lo, hi)
    recompute = list(todo) if full else sorted((work.years() & set(todo)) | new_years)
    pic_orgs: dict[int, set[str]] = defaultdict(set)
    for org, year in work.pic:
        pic_orgs[year].add(org)
    # Which year tables each touched table feeds (all of them in a year new to the store).
    iv_, ce_, ns_, as_ = (
        x.name for x in (t.interventions, t.case_episodes, t.need_signals, t.assessments)
    )
    feeds = {
        "iv": work.years_of(iv_),
        "ets": work.years_of(ns_),
        "ov": work.years_of(iv_, ce_, ns_),
        "cov": work.years_of(iv_, ce_, ns_, as_),
    }
    rows: list[dict[str, object]] = []
    replaced: list[tuple[int, str]] = []  # (year, kind) rows deleted before the insert
    for year in recompute:
        # The store does not change while a year's tables are assembled: each kind is
        # read once (interventions and overlaps both read the interventions' months).
        with mo.memo():
            period = Period.year(year)
            with engine.connect() as conn:
                orgs = ind.organisations(conn)
                ets = ind.ets_orgs(conn)
            fresh_year = full or year in new_years
            redo = {k for k, ys in feeds.items() if fresh_year or year in ys}
            if "iv" in redo:
                both = ind.interventions_both(engine, period, monthly=True)
                for by in ("area", "service"):
                    district = both[by]
                    rows.append(_row(year, f"iv.{by}", "*", district))
                    for org in orgs:
                        if org in district[0].cols:
                            rows.append(
                                _row(year, f"iv.{by}", org, ind.slice_interventions(district, org))
                            )
                replaced += [(year, "iv.area"), (year, "iv.service")]
            if "ets" in redo:
                ets_share = {
                    org: ind.third_sector(engine, period, org=org, use_cache=False, monthly=True)
                    for org in sorted(ets)
                }
                ets_tables = ind.third_sector(
                    engine, period, use_cache=False, reuse=ets_share, monthly=True
                )
                rows.append(_row(year, "ets", "*", ets_tables))
                for org in sorted(ets):
                    rows.append(_row(year, "ets", org, ets_share[org]))
                replaced.append((year, "ets"))
            if "ov" in redo:
                ov = ind.overlaps(engine, period, use_cache=False, monthly=True)
                rows.append(_row(year, "ov", "*", ov))
                replaced.append((year, "ov"))
            if "cov" in redo:
                cov = ind.coverage(engine, period, use_cache=False, monthly=True)
                rows.append(_row(year, "cov", "*", [cov]))
                replaced.append((year, "cov"))
            if fresh_year or year in work.xd:
                rows.append(_row(year, "xd", "*", cross_district(engine, period, use_cache=False)))
                replaced.append((year, "xd"))
            if fresh_year or year in pic_orgs:
                keep = set() if fresh_year else set(orgs) - pic_orgs[year]
                pic_kept = {o: tb[0] for o, tb in _stored(engine, "pic", year, keep).items()}
                pic = ind.prese_in_carico_table(engine, year, use_cache=False, reuse=pic_kept)
                rows.append(_row(year, "pic", "*", [pic]))
                for org in pic.rows:
                    rows.append(_row(year, "pic", org, [ind.slice_prese_in_carico(pic, org)]))
                replaced.append((year, "pic"))
    with engine.begin() as conn:
        o = t.obs_tables
        if full:
            conn.execute(o.delete())
        else:
            gone = [y for y in stored_years if y not in todo]
            if gone:
                conn.execute(o.delete().where(o.c.year.in_(gone)))
            by_kind: dict[str, list[int]] = defaultdict(list)
            for year, kind in replaced:
                by_kind[kind].append(year)
            for kind, ys in by_kind.items():
                conn.execute(o.delete().where(o.c.kind == kind, o.c.year.in_(ys)))
        conn.execute(t.obs_refresh.delete())
        if rows:
            conn.execute(o.insert(), rows)
        conn.execute(
            t.obs_refresh.insert().values(
                id=_MARKER,
                refreshed_at=dt.datetime.now(dt.UTC),
                last_run_id=run_id,
                first_year=min(todo) if todo else None,
                last_year=max(todo) if todo else None,
            )
        )
        # What the next incremental refresh compares against (see touched_months).
        touched_orgs = _orgs_of(work) | set(work.fingerprints or ())
        _store_fingerprints(conn, None if full else touched_orgs, work.fingerprints)
        return int(conn.execute(sa.select(sa.func.count()).select_from(o)).scalar() or 0)


def _orgs_of(work: Touched) -> set[str]:
    return {o for found in work.months.values() for o, _ in found} | {o for o, _ in work.pic}


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


# -- what a sync touched -------------------------------------------------------------------
#: Record tables with the dates that place a row in months: (first, last or None).
def _spans() -> list[tuple[sa.Table, sa.ColumnElement[Any], sa.ColumnElement[Any] | None]]:
    return [
        (t.case_episodes, t.case_episodes.c.opened_on, t.case_episodes.c.closed_on),
        (t.interventions, t.interventions.c.started_on, t.interventions.c.ended_on),
        (t.need_signals, t.need_signals.c.on, t.need_signals.c.on),
        # A status holds from its assessment on: the prese in carico of every later year.
        (t.assessments, t.assessments.c.assessed_on, None),
    ]


_month = mo.month_sql


def fingerprint(conn: sa.Connection, orgs: Iterable[str]) -> dict[str, dict[str, int]]:
    """For each organisation: how many rows each record table holds per span of months
    (``"case_episodes|202101|202311"``, ``YYYYMM``; an open end is ``-``; rows received
    from another district under ``"x|case_episodes|…"``), and its subject rows. A row that
    leaves a span (deleted, or its dates moved) lowers that span's count: that is how a
    sync's deletions and moves are found although the rows are gone."""
    return _scan(conn, orgs, None)[0]


def _scan(
    conn: sa.Connection, orgs: Iterable[str], since: int | None
) -> tuple[dict[str, dict[str, int]], list[tuple[str, str]]]:
    """The fingerprints of ``orgs`` and, with ``since``, the ``(org, span key)`` of the rows
    written by runs after it: one pass over each record table's rows of ``orgs``."""
    wanted = sorted(set(orgs))
    out: dict[str, dict[str, int]] = {o: {} for o in wanted}
    written: list[tuple[str, str]] = []
    if not wanted:
        return out, written
    is_new = (
        (lambda tb: sa.literal(0))
        if since is None
        else (lambda tb: sa.case((tb.c.run_id > since, 1), else_=0))
    )
    for table, lo, hi in _spans():
        m0 = _month(lo)
        m1 = _month(hi) if hi is not None else sa.literal(-1)
        x = sa.case((received(table), 1), else_=0)
        new = is_new(table)
        q = (
            sa.select(table.c.org, m0, m1, x, new, sa.func.count())
            .where(table.c.org.in_(wanted))
            .group_by(table.c.org, m0, m1, x, new)
        )
        for org, a, b, rx, rn, n in conn.execute(q):
            key = ("x|" if rx else "") + _span_key(table.name, a, b)
            prints = out[str(org)]
            prints[key] = prints.get(key, 0) + int(n)
            if rn:
                written.append((str(org), key))
    su = t.subjects
    new = is_new(su)
    for org, rn, n in conn.execute(
        sa.select(su.c.org, new, sa.func.count())
        .where(su.c.org.in_(wanted))
        .group_by(su.c.org, new)
    ):
        prints = out[str(org)]
        prints["subjects"] = prints.get("subjects", 0) + int(n)
        if rn:
            written.append((str(org), "subjects"))
    return out, written


def _span_of(prints: Iterable[dict[str, int]]) -> tuple[int, int] | None:
    """:func:`data_years` from fingerprints: the own case episodes, interventions and need
    signals, from the first start to the last end (or start)."""
    lo: int | None = None
    hi: int | None = None
    dated = (t.case_episodes.name, t.interventions.name, t.need_signals.name)
    for fp in prints:
        for key in fp:
            parts = key.split("|")
            if len(parts) != 3 or parts[0] not in dated:
                continue
            a = int(parts[1]) // 100
            b = a if parts[2] == "-" else int(parts[2]) // 100
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is None or hi is None:
        return None
    return lo, max(hi, min(dt.date.today().year, hi + 1))


def _span_key(table: str, a: Any, b: Any) -> str:
    b_txt = "-" if b is None or int(b) == -1 else str(int(b))
    return f"{table}|{int(a)}|{b_txt}"


def _mark(work: Touched, org: str, key: str, first: int, last: int) -> None:
    """Add what the rows of one fingerprint span (``key``) reach to ``work``."""
    lo_m, hi_m = first * 12, last * 12 + 11
    if key == "subjects":  # no dates: every year of the organisation's prese in carico
        work.pic |= {(org, y) for y in range(first, last + 1)}
        return
    if key.startswith("x|"):  # received rows: only the cross-district tables use them
        table, a, b = key[2:].split("|")
        if table == t.case_episodes.name:
            end = last if b == "-" else int(b) // 100
            work.xd |= set(range(max(int(a) // 100, first), min(end, last) + 1))
        return
    table, a, b = key.split("|")
    start = mo.from_yyyymm(int(a))
    dated_once = table == t.assessments.name
    end = start if dated_once else (hi_m if b == "-" else mo.from_yyyymm(int(b)))
    months = range(max(start, lo_m), min(end, hi_m) + 1)
    work.months.setdefault(table, set()).update((org, m) for m in months)
    years = range(max(start // 12, first), min(end // 12, last) + 1)
    if table == t.case_episodes.name:
        work.pic |= {(org, y) for y in years}
        work.xd |= set(years)
    elif dated_once:  # a status holds from its date on
        work.pic |= {(org, y) for y in range(max(start // 12, first), last + 1)}


def touched_months(engine: sa.Engine) -> Touched | None:
    """What the runs since the last refresh changed (None when nothing is stored yet:
    everything is to compute).

    Derived from those runs and the rows they wrote: the months of every row carrying one
    of their run ids (new or changed rows: a row's ``run_id`` is the run that last wrote
    it); and the months of every span whose row count dropped against the fingerprint
    stored at the last refresh (deleted rows, rows whose dates moved out). A changed
    subject row (no dates) touches every prese-in-carico year of its organisation.
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
        orgs = {
            str(o)
            for (o,) in conn.execute(sa.select(t.runs.c.org).where(t.runs.c.id > since).distinct())
        }
        if not orgs:
            return Touched()
        now, written = _scan(conn, orgs, since)
        stored = _stored_fingerprint(conn, None)
    before = {o: fp for o, fp in stored.items() if o in orgs}
    # The data span without scanning the registry: the fingerprints of the organisations
    # not touched (as stored) and of the touched ones (as now).
    span = _span_of([*(fp for o, fp in stored.items() if o not in orgs), *now.values()])
    if span is not None:
        first, last = min(first, span[0]), max(last, span[1])
    work = Touched(data_span=span, fingerprints=now)
    for org, key in written:
        _mark(work, org, key, first, last)
    for org in orgs:
        old, new = before.get(org), now[org]
        if old is None:  # no fingerprint stored: everything of it
            whole = Touched.of_slices((org, y) for y in range(first, last + 1))
            for name, found in whole.months.items():
                work.months.setdefault(name, set()).update(found)
            work.pic |= whole.pic
            work.xd |= whole.xd
            continue
        for key, n in old.items():
            if new.get(key, 0) < n:
                _mark(work, org, key, first, last)
    return work


def touched_slices(engine: sa.Engine) -> set[tuple[str, int]] | None:
    """The ``(organisation, year)`` slices changed by the runs since the last refresh
    (None when nothing is stored yet); :func:`touched_months` has the detail."""
    work = touched_months(engine)
    return None if work is None else work.slices()


def _stored_fingerprint(
    conn: sa.Connection, orgs: Iterable[str] | None
) -> dict[str, dict[str, int]]:
    """The fingerprints stored at the last refresh (of ``orgs``, or of every organisation)."""
    o = t.obs_tables
    q = sa.select(o.c.org, o.c.content).where(o.c.kind == _FP, o.c.year == 0)
    if orgs is not None:
        q = q.where(o.c.org.in_(sorted(set(orgs))))
    found = conn.execute(q).all()
    return {str(org): json.loads(content) for org, content in found}


def _store_fingerprints(
    conn: sa.Connection,
    orgs: set[str] | None,
    known: dict[str, dict[str, int]] | None = None,
) -> None:
    """Store the fingerprint of ``orgs`` (None: every organisation with rows); ``known``
    holds fingerprints already computed since the last sync run (not computed again)."""
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
    prints = {o: v for o, v in (known or {}).items() if o in wanted}
    prints.update(fingerprint(conn, wanted - set(prints)))
    conn.execute(
        t.obs_tables.insert(),
        [
            {"year": 0, "kind": _FP, "org": o, "content": json.dumps(v, sort_keys=True)}
            for o, v in sorted(prints.items())
        ],
    )


def refresh_after_sync(engine: sa.Engine) -> int:
    """Refresh only the slices the runs since the last refresh touched (everything when
    nothing was stored yet); returns how many rows the store holds."""
    return refresh(engine, touched=touched_months(engine))


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
