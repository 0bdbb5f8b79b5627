"""Per-(organisation × month × key) aggregates: any period of whole months without a scan.

Distinct people cannot be added up (a person with interventions in March and in April
is one person in the quarter), so each stored month keeps the *set* of the subjects
active in it, as a roaring bitmap of integer person ids (storage v2: a subject is the
id of its row in ``pseudonyms``). The people of any set of months and organisations is
the cardinality of the union of their bitmaps; a person followed by two organisations
is one bit in each, so district totals are unions of the organisations' bitmaps. That
is what makes a refresh after a sync cheap: a sync of one organisation recomputes only
that organisation's months it touched, and the district's tables are assembled again
from the bitmaps, without scanning the registry.

Counts and amounts are additive once each row is counted in one month only: ``n`` and
``cents`` count the rows *starting* in the month, ``carry_n`` and ``carry_cents`` those
started before it and still running on its first day. The rows of a period of months
``m1..m2`` (a row is in the period when it overlaps it) are then
``carry(m1) + n(m1) + … + n(m2)``.

Kinds (``obs_months.kind``), each from one record table, only the district's own rows
(:func:`hub.observatory.rows.own`):

* ``iv`` interventions, key ``area/service_code``: counts, amounts (cents), people active;
* ``ce`` case episodes (key ``""``): counts, people active;
* ``ns`` need signals dated in the month (key ``""``): counts, people (signals without a
  subject are counted, not in the bitmap);
* ``nsk`` need signals dated in the month, key ``comune␟needs␟services``: counts (the
  Third Sector tables' grouping);
* ``as`` assessments dated in the month (key ``""``): counts (data-provider coverage).

Months are stored from January of the first year to December of the last year the
observatory covers (``obs_refresh.first_year``/``last_year``); an open row (no end date)
runs to the last stored month.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pyroaring import BitMap

from hub.observatory.rows import own
from hub.observatory.table import Period
from hub.registry import tables as t

IV, CE, NS, NSK, AS = "iv", "ce", "ns", "nsk", "as"
KINDS = (IV, CE, NS, NSK, AS)
#: The record table each kind is computed from.
SOURCE: dict[str, str] = {
    IV: t.interventions.name,
    CE: t.case_episodes.name,
    NS: t.need_signals.name,
    NSK: t.need_signals.name,
    AS: t.assessments.name,
}
#: Separator of the parts of an ``nsk`` key (a control character: never in a code).
SEP = "\x1f"
_CHUNK = 2_000


# -- months as integers -----------------------------------------------------------------
def index(d: dt.date) -> int:
    """A date's month as a running index (``year·12 + month − 1``)."""
    return d.year * 12 + d.month - 1


def yyyymm(i: int) -> int:
    """A month index as stored (``YYYYMM``)."""
    return (i // 12) * 100 + i % 12 + 1


def from_yyyymm(v: int) -> int:
    return (v // 100) * 12 + v % 100 - 1


def first_day(i: int) -> dt.date:
    return dt.date(i // 12, i % 12 + 1, 1)


def last_day(i: int) -> dt.date:
    y, m = i // 12, i % 12 + 1
    return dt.date(y, m, calendar.monthrange(y, m)[1])


def whole_months(period: Period) -> tuple[int, int] | None:
    """The first and last month index of a period made of whole months, else None."""
    if period.start.day != 1 or period.end != last_day(index(period.end)):
        return None
    return index(period.start), index(period.end)


def runs_of(months: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous runs ``(lo, hi)`` of a set of month indices, in order."""
    out: list[tuple[int, int]] = []
    for m in sorted(set(months)):
        if out and m == out[-1][1] + 1:
            out[-1] = (out[-1][0], m)
        else:
            out.append((m, m))
    return out


def month_sql(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A date column's month as ``YYYYMM``, computed by the database (no date objects
    built in Python for millions of rows)."""
    return sa.cast(
        sa.func.extract("year", col) * sa.literal_column("100") + sa.func.extract("month", col),
        sa.Integer,
    )


def _cents_sql(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """An amount (2 decimals) in whole cents, by the database."""
    return sa.cast(sa.func.round(col * sa.literal_column("100")), sa.BigInteger)


# -- computing an organisation's months --------------------------------------------------
@dataclass
class _Intervals:
    """Accumulates the rows of one (kind, org, key) over months ``lo..hi``."""

    size: int
    carry_n: int = 0
    carry_c: int = 0
    start_n: list[int] = field(default_factory=list)
    start_c: list[int] = field(default_factory=list)
    end_n: list[int] = field(default_factory=list)
    end_c: list[int] = field(default_factory=list)
    #: (first, last or None when it runs to ``hi``) offsets -> subjects.
    groups: dict[tuple[int, int | None], list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("start_n", "start_c", "end_n", "end_c"):
            setattr(self, name, [0] * self.size)

    def add(self, s: int, e: int | None, subject: int, cents: int) -> None:
        """A row active from offset ``s`` (negative: before ``lo``) to ``e`` (None: open
        or past ``hi``)."""
        if s < 0:
            self.carry_n += 1
            self.carry_c += cents
        else:
            self.start_n[s] += 1
            self.start_c[s] += cents
        if e is not None:
            self.end_n[e] += 1
            self.end_c[e] += cents
        self.groups.setdefault((max(s, 0), e), []).append(subject)

    def months(self) -> Iterator[tuple[int, int, int, int, int, BitMap]]:
        """``(offset, n, cents, carry_n, carry_cents, people)`` of every active month."""
        starting: dict[int, list[tuple[int | None, BitMap]]] = defaultdict(list)
        for (s, e), subjects in self.groups.items():
            starting[s].append((e, BitMap(subjects)))
        running = BitMap()  # rows with no end inside the range never leave
        active: list[tuple[int, BitMap]] = []
        carry_n, carry_c = self.carry_n, self.carry_c
        for i in range(self.size):
            for e, bm in starting.get(i, ()):
                if e is None:
                    running |= bm
                else:
                    active.append((e, bm))
            active = [(e, bm) for e, bm in active if e >= i]
            n, c = self.start_n[i], self.start_c[i]
            if n or carry_n:
                yield i, n, c, carry_n, carry_c, BitMap.union(running, *(bm for _, bm in active))
            carry_n += n - self.end_n[i]
            carry_c += c - self.end_c[i]


def _interval_rows(
    kind: str,
    org: str,
    items: Iterable[tuple[str, int, int, int | None, int | None]],
    lo: int,
    hi: int,
) -> list[dict[str, Any]]:
    """Rows of ``obs_months`` from ``(key, subject, first YYYYMM, last YYYYMM or None,
    cents or None)`` items."""
    acc: dict[str, _Intervals] = {}
    size = hi - lo + 1
    for key, subject, start, end, cents in items:
        s = (start // 100) * 12 + start % 100 - 1 - lo
        e = None if end is None else (end // 100) * 12 + end % 100 - 1 - lo
        if s >= size or (e is not None and e < 0):
            continue
        if e is not None and e >= size:
            e = None
        box = acc.get(key)
        if box is None:
            box = acc[key] = _Intervals(size)
        box.add(s, e, int(subject), int(cents or 0))
    out = []
    for key, box in acc.items():
        for i, n, c, cn, cc, people in box.months():
            out.append(_row(kind, org, lo + i, key, n, c, cn, cc, people))
    return out


def _row(
    kind: str,
    org: str,
    month: int,
    key: str,
    n: int,
    cents: int = 0,
    carry_n: int = 0,
    carry_cents: int = 0,
    people: BitMap | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "org": org,
        "month": yyyymm(month),
        "key": key,
        "n": n,
        "cents": cents,
        "carry_n": carry_n,
        "carry_cents": carry_cents,
        "people": None if people is None else people.serialize(),
    }


def compute(
    conn: sa.Connection, org: str, table: str, lo: int, hi: int
) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The kinds computed from record ``table`` and their rows for ``org``, months
    ``lo..hi`` (one scan of the organisation's rows of that table overlapping them)."""
    start, end = first_day(lo), last_day(hi)
    if table == t.interventions.name:
        iv = t.interventions
        q = sa.select(
            iv.c.area, iv.c.service_code, iv.c.subject, month_sql(iv.c.started_on),
            month_sql(iv.c.ended_on), _cents_sql(iv.c.amount),
        ).where(
            own(iv), iv.c.org == org, iv.c.started_on <= end,
            sa.or_(iv.c.ended_on.is_(None), iv.c.ended_on >= start),
        )  # fmt: skip
        items = ((f"{a}/{c}", s, b, e, m) for a, c, s, b, e, m in conn.execute(q).all())
        return (IV,), _interval_rows(IV, org, items, lo, hi)
    if table == t.case_episodes.name:
        ce = t.case_episodes
        q2 = sa.select(ce.c.subject, month_sql(ce.c.opened_on), month_sql(ce.c.closed_on)).where(
            own(ce), ce.c.org == org, ce.c.opened_on <= end,
            sa.or_(ce.c.closed_on.is_(None), ce.c.closed_on >= start),
        )  # fmt: skip
        items2 = (("", s, b, e, None) for s, b, e in conn.execute(q2).all())
        return (CE,), _interval_rows(CE, org, items2, lo, hi)
    if table == t.need_signals.name:
        ns = t.need_signals
        q3 = sa.select(
            ns.c.on, ns.c.subject, ns.c.comune_istat, ns.c.needs, ns.c.services_given
        ).where(own(ns), ns.c.org == org, ns.c.on >= start, ns.c.on <= end)
        count: dict[int, int] = defaultdict(int)
        people: dict[int, list[int]] = defaultdict(list)
        keyed: dict[tuple[int, str], int] = defaultdict(int)
        for on, subject, comune, needs, services in conn.execute(q3):
            m = index(on)
            count[m] += 1
            if subject is not None:
                people[m].append(int(subject))
            keyed[(m, SEP.join((str(comune), str(needs or ""), str(services or ""))))] += 1
        rows = [_row(NS, org, m, "", k, people=BitMap(people.get(m, ()))) for m, k in count.items()]
        rows += [_row(NSK, org, m, key, k) for (m, key), k in keyed.items()]
        return (NS, NSK), rows
    if table == t.assessments.name:
        a = t.assessments
        q4 = (
            sa.select(a.c.assessed_on)
            .where(own(a), a.c.org == org, a.c.assessed_on >= start, a.c.assessed_on <= end)
            .order_by(a.c.assessed_on)
        )
        per: dict[int, int] = defaultdict(int)
        for (on,) in conn.execute(q4):
            per[index(on)] += 1
        return (AS,), [_row(AS, org, m, "", k) for m, k in per.items()]
    raise ValueError(f"no monthly aggregates from table {table!r}")


#: The record tables the kinds come from, each scanned once per organisation and range.
TABLES = tuple(dict.fromkeys(SOURCE.values()))


def replace(conn: sa.Connection, org: str, table: str, lo: int, hi: int) -> int:
    """Recompute ``org``'s months ``lo..hi`` of the kinds from ``table``; returns rows written."""
    kinds, rows = compute(conn, org, table, lo, hi)
    m = t.obs_months
    conn.execute(
        m.delete().where(
            m.c.kind.in_(kinds),
            m.c.org == org,
            m.c.month >= yyyymm(lo),
            m.c.month <= yyyymm(hi),
        )
    )
    for k in range(0, len(rows), _CHUNK):
        conn.execute(m.insert(), rows[k : k + _CHUNK])
    return len(rows)


def organisations_with_rows(conn: sa.Connection) -> list[str]:
    """Every organisation with rows in a record table the kinds come from."""
    found: set[str] = set()
    for name in TABLES:
        tab = _table(name)
        found |= {str(o) for (o,) in conn.execute(sa.select(tab.c.org).distinct())}
    return sorted(found)


def _table(name: str) -> sa.Table:
    return next(tb for tb in t.RECORD_TABLES.values() if tb.name == name)


def rebuild(conn: sa.Connection, lo: int, hi: int) -> int:
    """Every organisation's months ``lo..hi`` from scratch (the store emptied first)."""
    conn.execute(t.obs_months.delete())
    n = 0
    for org in organisations_with_rows(conn):
        for table in TABLES:
            n += replace(conn, org, table, lo, hi)
    return n


def update(conn: sa.Connection, touched: dict[str, set[tuple[str, int]]], lo: int, hi: int) -> int:
    """Recompute the touched ``(org, month)`` of each record table (months ``lo..hi`` only),
    and drop the months outside ``lo..hi``; returns rows written."""
    m = t.obs_months
    conn.execute(m.delete().where(sa.or_(m.c.month < yyyymm(lo), m.c.month > yyyymm(hi))))
    n = 0
    for table, slices in touched.items():
        per_org: dict[str, set[int]] = defaultdict(set)
        for org, month in slices:
            if lo <= month <= hi:
                per_org[org].add(month)
        for org, months in sorted(per_org.items()):
            for a, b in runs_of(months):
                n += replace(conn, org, table, a, b)
    return n


# -- reading ------------------------------------------------------------------------------
@dataclass
class Sums:
    """A kind over months ``m1..m2``, per ``(org, key)``: rows in the period, their amount
    in cents, and the people (None for kinds without a bitmap)."""

    n: dict[tuple[str, str], int] = field(default_factory=dict)
    cents: dict[tuple[str, str], int] = field(default_factory=dict)
    people: dict[tuple[str, str], BitMap] = field(default_factory=dict)


#: Reads kept while a refresh assembles its year tables (see :func:`memo`).
_MEMO: ContextVar[dict[tuple[Any, ...], Sums] | None] = ContextVar("obs_months_memo", default=None)


@contextmanager
def memo() -> Iterator[None]:
    """Keep what :func:`read` returns inside the block: a refresh assembling several tables
    of the same months (interventions, then overlaps) reads each kind once. Only for a
    block during which the store does not change."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def read(
    conn: sa.Connection,
    kind: str,
    m1: int,
    m2: int,
    *,
    orgs: Collection[str] | None = None,
    with_people: bool = True,
) -> Sums:
    """Add up ``kind`` over months ``m1..m2`` (of ``orgs``, or every organisation). The
    result is shared inside a :func:`memo` block: do not change it."""
    kept = _MEMO.get()
    key = (kind, m1, m2, None if orgs is None else tuple(sorted(orgs)), with_people)
    if kept is not None and key in kept:
        return kept[key]
    out = _read(conn, kind, m1, m2, orgs, with_people)
    if kept is not None:
        kept[key] = out
    return out


def _read(
    conn: sa.Connection,
    kind: str,
    m1: int,
    m2: int,
    orgs: Collection[str] | None,
    with_people: bool,
) -> Sums:
    m = t.obs_months
    people_col: sa.ColumnElement[Any] = m.c.people if with_people else sa.null()
    q = sa.select(
        m.c.org, m.c.key, m.c.month, m.c.n, m.c.cents, m.c.carry_n, m.c.carry_cents, people_col
    ).where(m.c.kind == kind, m.c.month >= yyyymm(m1), m.c.month <= yyyymm(m2))
    if orgs is not None:
        q = q.where(m.c.org.in_(sorted(orgs)))
    first = yyyymm(m1)
    out = Sums()
    parts: dict[tuple[str, str], list[BitMap]] = defaultdict(list)
    for org, key, month, n, cents, carry_n, carry_cents, people in conn.execute(q).all():
        k = (str(org), str(key))
        if month == first:
            n, cents = n + carry_n, cents + carry_cents
        out.n[k] = out.n.get(k, 0) + int(n)
        out.cents[k] = out.cents.get(k, 0) + int(cents)
        if people is not None:
            parts[k].append(BitMap.deserialize(bytes(people)))
    out.people = {k: BitMap.union(*v) for k, v in parts.items()}
    return out


def read_dated(
    conn: sa.Connection, kind: str, m1: int, m2: int, orgs: Collection[str]
) -> list[tuple[str, int, str, int]]:
    """``(org, YYYYMM, key, n)`` of a dated kind (its rows start in their month) over
    months ``m1..m2`` of ``orgs``."""
    m = t.obs_months
    q = sa.select(m.c.org, m.c.month, m.c.key, m.c.n).where(
        m.c.kind == kind,
        m.c.month >= yyyymm(m1),
        m.c.month <= yyyymm(m2),
        m.c.org.in_(sorted(orgs)),
    )
    return [(str(o), int(mm), str(k), int(n)) for o, mm, k, n in conn.execute(q)]


def covers(conn: sa.Connection, m1: int, m2: int) -> bool:
    """The stored months include ``m1..m2`` and no sync ran since they were computed."""
    marker = conn.execute(
        sa.select(
            t.obs_refresh.c.last_run_id, t.obs_refresh.c.first_year, t.obs_refresh.c.last_year
        )
    ).first()
    if marker is None or marker[1] is None:
        return False
    if not (int(marker[1]) * 12 <= m1 and m2 <= int(marker[2]) * 12 + 11):
        return False
    last = conn.execute(sa.select(sa.func.max(t.runs.c.id))).scalar()
    return int(marker[0]) == int(last or 0)


def union(bitmaps: Iterable[BitMap]) -> BitMap:
    items = list(bitmaps)
    return BitMap.union(*items) if items else BitMap()
