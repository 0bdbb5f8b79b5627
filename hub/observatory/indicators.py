"""Observatory indicators: pure functions of the registry, returning :class:`Table`.

Every function takes an engine (or connection source), a :class:`Period` and
optionally one organisation (``org``); without it the table covers the whole
district, with one column per organisation and the district in the totals.
Definitions are in docs/indicators.md; the important ones:

* an **intervention is in the period** when it started on or before the end of
  the period and has not ended before its start (``started_on <= end`` and
  ``ended_on`` empty or ``>= start``); its whole amount counts (no pro rata);
* **people** are distinct subject pseudonyms. CF/STP/ENI pseudonyms are in the
  district domain, so a person known to two organisations is one person in the
  district totals; LOCAL ids are pseudonymised in each organisation's own
  namespace and never match across organisations (such a person counts once
  per organisation: a known over-count, never an under-count);
* a **need signal is in the period** when its date ``on`` is in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import combinations
from typing import Any

import sqlalchemy as sa
from pyroaring import BitMap

from hub.observatory import months as mo
from hub.observatory.rows import own
from hub.observatory.table import ALL, GridBuilder, Period, Table, column_of, row_of
from hub.registry import tables as t
from hub.schema import OrganisationKind

#: ISTAT aree di utenza (headings shown in tables).
AREA_HEADINGS = {
    "FAM": "Famiglia e minori",
    "DIS": "Disabili",
    "ADD": "Dipendenze",
    "ELD": "Anziani",
    "IMMNOM": "Immigrati, Rom, Sinti e Caminanti",
    "POV": "Povertà e disagio adulti",
    "MULBEN": "Multiutenza",
}

NEED_HEADINGS = {
    "economic": "Economico",
    "housing": "Abitativo",
    "work": "Lavoro",
    "food": "Alimentare",
    "health": "Salute",
    "loneliness": "Solitudine",
    "family": "Familiare",
    "legal": "Legale",
    "other": "Altro",
}

SERVICE_HEADINGS = {
    "food_parcel": "Pacco alimentare",
    "clothing": "Vestiario",
    "listening": "Ascolto",
    "housing_support": "Supporto abitativo",
    "job_orientation": "Orientamento al lavoro",
    "legal_help": "Aiuto legale",
    "educational": "Educativo",
    "goods": "Beni",
    "transport": "Trasporto",
    "other": "Altro",
}

#: Separator of the closed-list codes in need_signals.needs / services_given.
CODE_SEPARATOR = "|"


# -- helpers ------------------------------------------------------------------------
def district_code(conn: sa.Connection) -> str:
    code = conn.execute(sa.select(t.districts.c.code).order_by(t.districts.c.code)).scalar()
    return str(code) if code else "DISTRETTO"


def scope_of(conn: sa.Connection, period: Period) -> str:
    return f"{district_code(conn)}|{period.label}"


def organisations(conn: sa.Connection) -> dict[str, tuple[str, str]]:
    """Registered organisations: code -> (name, kind)."""
    o = t.organisations
    return {
        str(code): (str(name), str(kind))
        for code, name, kind in conn.execute(sa.select(o.c.code, o.c.name, o.c.kind))
    }


def ets_orgs(conn: sa.Connection) -> set[str]:
    return {c for c, (_, kind) in organisations(conn).items() if kind == OrganisationKind.ETS}


def split_codes(value: str | None) -> list[str]:
    """The codes of a ``needs`` / ``services_given`` cell (``"food|housing"``), deduplicated."""
    return list(_codes(value or ""))


@lru_cache(maxsize=8192)
def _codes(value: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in value.split(CODE_SEPARATOR):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def _iv_in_period(period: Period) -> sa.ColumnElement[bool]:
    iv = t.interventions
    return sa.and_(
        own(iv),
        iv.c.started_on <= period.end,
        sa.or_(iv.c.ended_on.is_(None), iv.c.ended_on >= period.start),
    )


def _ce_in_period(period: Period) -> sa.ColumnElement[bool]:
    ce = t.case_episodes
    return sa.and_(
        own(ce),
        ce.c.opened_on <= period.end,
        sa.or_(ce.c.closed_on.is_(None), ce.c.closed_on >= period.start),
    )


def _ns_in_period(period: Period) -> sa.ColumnElement[bool]:
    ns = t.need_signals
    return sa.and_(own(ns), ns.c.on >= period.start, ns.c.on <= period.end)


def _euros(value: Any) -> int:
    return int(Decimal(value or 0).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def monthly_span(
    engine: sa.Engine, period: Period, monthly: bool | None, use_cache: bool = True
) -> tuple[int, int] | None:
    """The months ``m1..m2`` to answer ``period`` from the monthly aggregates
    (:mod:`hub.observatory.months`), or None to compute it from the registry.

    ``monthly``: True trusts the stored months (a refresh assembling its tables); False
    computes live; None (the default) uses them when the period is made of whole months,
    the store covers it and no sync ran since the refresh, and ``use_cache`` is set.
    """
    if monthly is False or (monthly is None and not use_cache):
        return None
    span = mo.whole_months(period)
    if span is None or monthly:
        return span
    with engine.connect() as conn:
        return span if mo.covers(conn, *span) else None


def _org_headings(conn: sa.Connection, codes: Iterable[str]) -> list[str]:
    names = organisations(conn)
    return [names.get(c, (c, ""))[0] for c in codes]


# -- interventions ------------------------------------------------------------------
def interventions(
    engine: sa.Engine,
    period: Period,
    *,
    org: str | None = None,
    by: str = "area",
    use_cache: bool = True,
) -> list[Table]:
    """Interventions in the period by ISTAT area (``by="area"``) or by area and SIUSS
    prestazione code (``by="service"``), × organisation.

    Three tables sharing one suppression pattern: number of interventions,
    distinct people, amounts (whole euros).
    """
    if by not in ("area", "service"):
        raise ValueError("by must be 'area' or 'service'")
    if use_cache:
        from hub.observatory.aggregates import cached

        hit = cached(engine, f"iv.{by}", period, org)
        if hit is not None:
            return hit
    span = monthly_span(engine, period, None, use_cache)
    if span is not None:
        with engine.connect() as conn:
            counts = _iv_counts_monthly(conn, *span)[by]
        district = _interventions(engine, period, by, counts)
    else:
        district = _interventions(engine, period, by)
    return district if org is None else slice_interventions(district, org)


def slice_interventions(district: list[Table], org: str) -> list[Table]:
    """One organisation's interventions tables, cut from the district's (same keys)."""
    from dataclasses import replace

    n = district[0]
    if org not in n.cols:
        return [
            replace(
                tb,
                rows=(),
                row_headings=(),
                cols=(org,),
                col_headings=(org,),
                cells=(),
                row_totals=(),
                col_totals=(0,),
                total=0,
                fixed=(*tb.fixed, ("org", org)),
                pattern=(tb.pattern or "").rsplit("|", 1)[0] + f"|{org}",
                relations=(),
                hidden=(),
            )
            for tb in district
        ]
    j = n.cols.index(org)
    rows = [r for r, row in zip(n.rows, n.cells, strict=True) if row[j]]
    out = [column_of(tb, org, rows) for tb in district]
    if n.row_dim == "area_code":
        out = [_with_area_relations(tb) for tb in out]
    return out


@dataclass
class _IvCounts:
    n: dict[tuple[str, str], int] = field(default_factory=dict)
    euro: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    people: dict[tuple[str, str], int] = field(default_factory=dict)
    people_row: dict[str, int] = field(default_factory=dict)
    people_col: dict[str, int] = field(default_factory=dict)
    people_total: int = 0


def _iv_counts(conn: sa.Connection, period: Period) -> dict[str, _IvCounts]:
    """Counts for both groupings (area; area/code) from one pass over the period's
    distinct (organisation, area, code, subject) rows: one scan instead of eight."""
    iv = t.interventions
    q = (
        sa.select(
            iv.c.org, iv.c.area, iv.c.service_code, iv.c.subject, sa.func.count(),
            sa.func.sum(iv.c.amount),
        )
        .where(_iv_in_period(period))
        .group_by(iv.c.org, iv.c.area, iv.c.service_code, iv.c.subject)
    )  # fmt: skip
    out = {"area": _IvCounts(), "service": _IvCounts()}
    cells: dict[str, dict[tuple[str, str], set[str]]] = {b: defaultdict(set) for b in out}
    rows: dict[str, dict[str, set[str]]] = {b: defaultdict(set) for b in out}
    cols: dict[str, set[str]] = defaultdict(set)
    everyone: set[str] = set()
    for org, area, code, subject, count, amount in conn.execute(q):
        o = str(org)
        for by, r in (("area", str(area)), ("service", f"{area}/{code}")):
            c = out[by]
            k = (r, o)
            c.n[k] = c.n.get(k, 0) + int(count)
            c.euro[k] = c.euro.get(k, Decimal(0)) + Decimal(amount or 0)
            cells[by][k].add(subject)
            rows[by][r].add(subject)
        cols[o].add(subject)
        everyone.add(subject)
    for by, c in out.items():
        c.people = {k: len(v) for k, v in cells[by].items()}
        c.people_row = {k: len(v) for k, v in rows[by].items()}
        c.people_col = {k: len(v) for k, v in cols.items()}
        c.people_total = len(everyone)
    return out


def _iv_counts_monthly(conn: sa.Connection, m1: int, m2: int) -> dict[str, _IvCounts]:
    """The counts of :func:`_iv_counts` from the monthly aggregates of months ``m1..m2``:
    numbers and amounts added up, people as unions of the months' bitmaps."""
    sums = mo.read(conn, mo.IV, m1, m2)
    out = {"area": _IvCounts(), "service": _IvCounts()}
    cols: dict[str, list[BitMap]] = defaultdict(list)
    for by, c in out.items():
        cells: dict[tuple[str, str], list[BitMap]] = defaultdict(list)
        for (o, key), n in sums.n.items():
            r = key.split("/", 1)[0] if by == "area" else key
            k = (r, o)
            c.n[k] = c.n.get(k, 0) + n
            c.euro[k] = c.euro.get(k, Decimal(0)) + Decimal(sums.cents[(o, key)]) / 100
            cells[k].append(sums.people[(o, key)])
            if by == "area":
                cols[o].append(sums.people[(o, key)])
        merged = {k: mo.union(v) for k, v in cells.items()}
        rows: dict[str, list[BitMap]] = defaultdict(list)
        for (r, _), bm in merged.items():
            rows[r].append(bm)
        c.people = {k: len(v) for k, v in merged.items()}
        c.people_row = {r: len(mo.union(v)) for r, v in rows.items()}
    by_org = {o: mo.union(v) for o, v in cols.items()}
    total = len(mo.union(by_org.values()))
    for c in out.values():
        c.people_col = {o: len(v) for o, v in by_org.items()}
        c.people_total = total
    return out


def interventions_both(
    engine: sa.Engine, period: Period, *, monthly: bool = False
) -> dict[str, list[Table]]:
    """The district tables by area and by SIUSS code, from one pass over the registry
    (``monthly``: from the stored monthly aggregates, which must cover the period)."""
    span = monthly_span(engine, period, monthly) if monthly else None
    with engine.connect() as conn:
        counts = _iv_counts_monthly(conn, *span) if span else _iv_counts(conn, period)
    return {by: _interventions(engine, period, by, counts[by]) for by in counts}


def _interventions(
    engine: sa.Engine, period: Period, by: str, counts: _IvCounts | None = None
) -> list[Table]:
    """The district tables (number, people, euros) for one grouping."""
    with engine.connect() as conn:
        scope = scope_of(conn, period)
        c = counts if counts is not None else _iv_counts(conn, period)[by]
        n, euro, people = c.n, c.euro, c.people
        people_row, people_col, people_total = c.people_row, c.people_col, c.people_total
        orgs = organisations(conn)
        cols = sorted(
            {o for _, o in n}
            | {c for c, (_, kind) in orgs.items() if kind == OrganisationKind.ENTE_GESTORE}
        )
        col_headings = _org_headings(conn, cols)
    rows = sorted({r for r, _ in n})
    if by == "area":
        row_headings = [AREA_HEADINGS.get(r, r) for r in rows]
    else:
        row_headings = [
            f"{AREA_HEADINGS.get(r.split('/')[0], r.split('/')[0])} · {r.split('/')[1]}"
            for r in rows
        ]
    fixed: tuple[tuple[str, str], ...] = ()
    pattern = f"interventi.{by}|{scope}|{ALL}"
    row_dim = "area" if by == "area" else "area_code"
    row_label = "Area di utenza" if by == "area" else "Area di utenza · codice prestazione SIUSS"
    what = "per area di utenza" if by == "area" else "per prestazione SIUSS"
    common: dict[str, Any] = {
        "scope": scope,
        "row_dim": row_dim,
        "row_label": row_label,
        "col_dim": "org",
        "col_label": "Ente",
        "pattern": pattern,
        "fixed": fixed,
    }

    out = []
    # Number of interventions (additive).
    g = GridBuilder(rows, cols, dict(n))
    g.sums()
    tn = g.table(
        id=f"interventi_{by}_numero",
        title=f"Interventi {what} ({period.label})",
        unit="interventi",
        measure="interventi.n",
        row_headings=row_headings,
        col_headings=col_headings,
        counts_people=False,
        **common,
    )
    # Amounts in whole euros: cells and totals rounded separately.
    ge = GridBuilder(rows, cols, {k: _euros(v) for k, v in euro.items()})
    ge.row_totals = {
        r: _euros(sum((v for (rr, _), v in euro.items() if rr == r), Decimal(0))) for r in rows
    }
    ge.col_totals = {
        c: _euros(sum((v for (_, cc), v in euro.items() if cc == c), Decimal(0))) for c in cols
    }
    ge.total = _euros(sum(euro.values(), Decimal(0)))
    te = ge.table(
        id=f"interventi_{by}_importi",
        title=f"Importi degli interventi {what}, euro ({period.label})",
        unit="euro",
        measure="interventi.euro",
        row_headings=row_headings,
        col_headings=col_headings,
        counts_people=False,
        notes="Whole amount of each intervention in the period, rounded to the euro per cell.",
        **common,
    )
    # Distinct people (not additive: a person can have interventions in two areas).
    gp = GridBuilder(rows, cols, dict(people), people_row, people_col, people_total)
    tp = gp.table(
        id=f"interventi_{by}_persone",
        title=f"Persone con interventi {what} ({period.label})",
        unit="persone",
        measure="interventi.persone",
        row_headings=row_headings,
        col_headings=col_headings,
        additive=False,
        **common,
    )
    if by == "service":
        tn, te, tp = (_with_area_relations(x) for x in (tn, te, tp))
    out = [tn, tp, te]
    return out


def _with_area_relations(table: Table) -> Table:
    """Area cells (of the by-area table) = sum of the area's code rows: a published identity."""
    by_area: dict[str, list[str]] = defaultdict(list)
    for r in table.rows:
        by_area[r.split("/")[0]].append(r)
    rels: list[tuple[str, tuple[str, ...]]] = []
    fixed = dict(table.fixed)
    from hub.observatory.table import key_of

    for area, rows in by_area.items():
        for c in (*table.cols, ALL):
            dims = {**fixed, "area": area}
            if c != ALL:
                dims[table.col_dim] = c
            rels.append(
                (key_of(table.scope, table.measure, dims), tuple(table.key(r, c) for r in rows))
            )
    from dataclasses import replace

    return replace(table, relations=tuple(rels))


# -- Third Sector needs and services -----------------------------------------------
def third_sector(
    engine: sa.Engine,
    period: Period,
    *,
    org: str | None = None,
    use_cache: bool = True,
    reuse: Mapping[str, list[Table]] | None = None,
    monthly: bool | None = None,
) -> list[Table]:
    """Need signals of Third Sector organisations in the period.

    * contacts (signals) by comune × month (additive);
    * signals citing each need, by comune and by month;
    * signals with each service given, by comune and by month.

    A signal citing two needs counts under both (need tables are not additive).
    Anonymous contacts (no subject) count like the others.
    """
    if use_cache:
        from hub.observatory.aggregates import cached

        hit = cached(engine, "ets", period, org)
        if hit is not None:
            return hit
    span = monthly_span(engine, period, monthly, use_cache)
    with engine.connect() as conn:
        ets = sorted(ets_orgs(conn))
        # From the months: every entity's rows in one read, split here.
        by_org: dict[str, list[_NsRow]] | None = None
        if span is not None:
            by_org = defaultdict(list)
            for o, m, key, k in mo.read_dated(conn, mo.NSK, *span, [org] if org else ets):
                comune, needs, services = key.split(mo.SEP)
                by_org[o].append((comune, m, needs, services, k))
    if by_org is not None and org is not None:
        return _third_sector(engine, period, org, span, by_org.get(org, []))
    if by_org is not None:
        every = [r for o in ets for r in by_org.get(o, [])]
        tables = _third_sector(engine, period, None, span, every)
    else:
        tables = _third_sector(engine, period, org)
    if org is not None:
        return tables
    # ``reuse``: entities' tables already computed for this period (an incremental
    # refresh passes the stored ones of the entities a sync did not touch).
    shares = {
        o: list(reuse[o])
        if reuse and o in reuse
        else _third_sector(engine, period, o, span, None if by_org is None else by_org.get(o, []))
        for o in ets
    }
    return [_with_shares(tb, [shares[o][i] for o in ets]) for i, tb in enumerate(tables)]


def _with_shares(district: Table, shares: list[Table]) -> Table:
    """Each district value = the sum of the entities' values: a true identity a reader
    of per-entity tables could use, with the entities' values (hidden here)."""
    from dataclasses import replace

    rels: list[tuple[str, tuple[str, ...]]] = []
    hidden: dict[str, int | None] = {}
    for r, c, _ in district.positions():
        parts = []
        for sh in shares:
            key = sh.key(r, c)
            parts.append(key)
            try:
                hidden[key] = sh.value(r, c)
            except ValueError:  # row or column the entity has no data for
                hidden[key] = 0
        rels.append((district.key(r, c), tuple(parts)))
    return replace(district, relations=(*district.relations, *rels), hidden=tuple(hidden.items()))


#: A Third Sector grouping: comune, month (``YYYYMM``), needs, services, contacts.
_NsRow = tuple[str, int, str, str, int]


def _third_sector(
    engine: sa.Engine,
    period: Period,
    org: str | None,
    span: tuple[int, int] | None = None,
    given: list[_NsRow] | None = None,
) -> list[Table]:
    """The tables of one entity (or of every entity, without the shares), from the
    registry or, with ``span``, from the monthly aggregates of those months (``given``:
    their rows, already read)."""
    ns = t.need_signals
    with engine.connect() as conn:
        scope = scope_of(conn, period)
        ets = ets_orgs(conn)
        rows: list[_NsRow] = []
        if given is not None:
            rows = given
        elif span is not None:
            wanted = [org] if org else sorted(ets)
            for _, m, key, k in mo.read_dated(conn, mo.NSK, *span, wanted):
                comune, needs, services = key.split(mo.SEP)
                rows.append((comune, m, needs, services, k))
        else:
            month = sa.func.extract("year", ns.c.on) * 100 + sa.func.extract("month", ns.c.on)
            q = (
                sa.select(
                    ns.c.comune_istat, month, ns.c.needs, ns.c.services_given, sa.func.count()
                )
                .where(_ns_in_period(period))
                .group_by(ns.c.comune_istat, month, ns.c.needs, ns.c.services_given)
            )
            if org:
                q = q.where(ns.c.org == org)
            else:
                q = q.where(ns.c.org.in_(sorted(ets)) if ets else sa.false())
            rows = [
                (str(c), int(m), str(nd or ""), str(sv or ""), int(k))
                for c, m, nd, sv, k in conn.execute(q)
            ]
    months = period.months()
    comuni = sorted({r[0] for r in rows})
    fixed = (("org", org),) if org else ()
    base: dict[str, Any] = {"scope": scope, "fixed": fixed}

    def mlabel(m: int) -> str:
        return f"{m // 100:04d}-{m % 100:02d}"

    contacts = GridBuilder(comuni, months)
    for c, m, _, _, k in rows:
        contacts.cells[(c, mlabel(m))] = contacts.cells.get((c, mlabel(m)), 0) + k
    contacts.sums()
    out = [
        contacts.table(
            id="ets_contatti_comune_mese",
            title=f"Contatti del Terzo Settore per comune e mese ({period.label})",
            unit="contatti",
            measure="ets.contatti",
            row_dim="comune",
            row_label="Comune (ISTAT)",
            col_dim="mese",
            col_label="Mese",
            pattern=f"ets.contatti|{scope}|{org or ALL}",
            **base,
        )
    ]
    for fno, headings, name, label in (
        (2, NEED_HEADINGS, "bisogni", "Bisogno"),
        (3, SERVICE_HEADINGS, "servizi", "Servizio dato"),
    ):
        # Contacts per (comune, month, codes text) of this field: fewer groups than rows
        # (a row is one needs × services combination).
        grouped: dict[tuple[str, int, str], int] = defaultdict(int)
        for r in rows:
            grouped[(r[0], r[1], r[2] if fno == 2 else r[3])] += r[4]
        codes = sorted({code for (_, _, text) in grouped for code in _codes(text)})
        for dim, dim_values, dim_label in (
            ("comune", comuni, "Comune (ISTAT)"),
            ("mese", months, "Mese"),
        ):
            g = GridBuilder(codes, list(dim_values))
            row_tot: dict[str, int] = defaultdict(int)
            col_tot: dict[str, int] = defaultdict(int)
            total = 0
            for (comune, ym, text), k in grouped.items():
                col = comune if dim == "comune" else mlabel(ym)
                its = _codes(text)
                for code in its:
                    g.cells[(code, col)] = g.cells.get((code, col), 0) + k
                    row_tot[code] += k
                if its:
                    col_tot[col] += k
                    total += k
            g.row_totals, g.col_totals = dict(row_tot), dict(col_tot)
            g.total = total
            out.append(
                g.table(
                    id=f"ets_{name}_{dim}",
                    title=f"Contatti del Terzo Settore per {label.lower()} e {dim} "
                    f"({period.label})",
                    unit="contatti",
                    measure=f"ets.{name}",
                    row_dim=name,
                    row_label=label,
                    row_headings=[headings.get(c, c) for c in codes],
                    col_dim=dim,
                    col_label=dim_label,
                    additive=False,
                    pattern=f"ets.{name}.{dim}|{scope}|{org or ALL}",
                    notes="A contact citing several codes counts under each; totals count "
                    "contacts with at least one code.",
                    **base,
                )
            )
    return out


# -- overlaps -----------------------------------------------------------------------
def overlaps(
    engine: sa.Engine, period: Period, *, use_cache: bool = True, monthly: bool | None = None
) -> list[Table]:
    """People followed in the period by public services and/or the Third Sector, and by
    more than one consortium, counted on district-domain pseudonyms.

    *Public services*: subjects with a case episode active in the period or an
    intervention in the period, at an organisation that is not a Third Sector
    entity. *Third Sector*: subjects of need signals dated in the period at an
    ETS. Anonymous contacts cannot be matched and are not counted here.
    """
    if use_cache:
        from hub.observatory.aggregates import cached

        hit = cached(engine, "ov", period, None)
        if hit is not None:
            return hit
    span = monthly_span(engine, period, monthly, use_cache)
    ce, iv, ns = t.case_episodes, t.interventions, t.need_signals
    with engine.connect() as conn:
        scope = scope_of(conn, period)
        orgs = organisations(conn)
        ets = {c for c, (_, k) in orgs.items() if k == OrganisationKind.ETS}
        by_org: dict[str, BitMap] = {}
        if span is not None:
            parts: dict[str, list[BitMap]] = defaultdict(list)
            for kind in (mo.CE, mo.IV):
                for (o, _), bm in mo.read(conn, kind, *span).people.items():
                    if o not in ets:
                        parts[o].append(bm)
            by_org = {o: mo.union(v) for o, v in parts.items()}
            third = mo.union(mo.read(conn, mo.NS, *span, orgs=ets).people.values())
        else:
            public_q = sa.union(
                sa.select(ce.c.subject, ce.c.org).where(_ce_in_period(period)),
                sa.select(iv.c.subject, iv.c.org).where(_iv_in_period(period)),
            ).subquery()
            found: dict[str, list[int]] = defaultdict(list)
            for subject, o in conn.execute(sa.select(public_q.c.subject, public_q.c.org)):
                if o not in ets:
                    found[str(o)].append(int(subject))
            by_org = {o: BitMap(v) for o, v in found.items()}
            third = BitMap(
                int(s)
                for (s,) in conn.execute(
                    sa.select(ns.c.subject)
                    .where(_ns_in_period(period), ns.c.subject.is_not(None))
                    .where(ns.c.org.in_(sorted(ets)) if ets else sa.false())
                    .distinct()
                )
            )
    return _overlaps(scope, orgs, by_org, third, period)


def _overlaps(
    scope: str,
    orgs: Mapping[str, tuple[str, str]],
    by_org: Mapping[str, BitMap],
    third: BitMap,
    period: Period,
) -> list[Table]:
    """The two overlap tables from each public organisation's people and the Third
    Sector's (sets of person ids: intersections and unions)."""
    by_org = {o: bm for o, bm in by_org.items() if bm}
    pub = mo.union(by_org.values())
    kinds = ["solo_pubblico", "pubblico_e_ets", "solo_ets"]
    g = GridBuilder(kinds, ["persone"])
    g.cells = {
        ("solo_pubblico", "persone"): len(pub - third),
        ("pubblico_e_ets", "persone"): len(pub & third),
        ("solo_ets", "persone"): len(third - pub),
    }
    g.sums()
    t1 = g.table(
        id="sovrapposizioni_pubblico_ets",
        title=f"Persone seguite dai servizi pubblici e dal Terzo Settore ({period.label})",
        unit="persone",
        scope=scope,
        measure="persone.seguite",
        row_dim="seguite_da",
        row_label="Seguite da",
        row_headings=[
            "Solo servizi pubblici",
            "Servizi pubblici e Terzo Settore",
            "Solo Terzo Settore",
        ],
        col_dim="misura",
        col_label="",
        col_headings=["Persone"],
        pattern=f"sovrapposizioni|{scope}",
    )
    consortia = sorted(by_org)
    pairs = [f"{a}+{b}" for a, b in combinations(consortia, 2)]
    gc = GridBuilder([*pairs, "2+"], ["persone"])
    both = []
    for a, b in combinations(consortia, 2):
        common = by_org[a] & by_org[b]
        both.append(common)
        gc.cells[(f"{a}+{b}", "persone")] = len(common)
    gc.cells[("2+", "persone")] = len(mo.union(both))
    gc.row_totals = {r: gc.cells[(r, "persone")] for r in gc.rows}
    gc.col_totals = {"persone": gc.cells[("2+", "persone")]}
    gc.total = gc.cells[("2+", "persone")]
    names = {c: orgs.get(c, (c, ""))[0] for c in consortia}
    t2 = gc.table(
        id="sovrapposizioni_consorzi",
        title=f"Persone seguite da più enti pubblici ({period.label})",
        unit="persone",
        scope=scope,
        measure="persone.multiente",
        row_dim="enti",
        row_label="Enti",
        row_headings=[
            *(f"{names[a]} e {names[b]}" for a, b in combinations(consortia, 2)),
            "Due o più enti",
        ],
        col_dim="misura",
        col_label="",
        col_headings=["Persone"],
        additive=False,
        pattern=f"multiente|{scope}",
    )
    return [t1, t2]


# -- coverage -----------------------------------------------------------------------
def coverage(
    engine: sa.Engine, period: Period, *, use_cache: bool = True, monthly: bool | None = None
) -> Table:
    """Organisations that supplied data in the period / organisations registered, by kind.

    An organisation *supplied data in the period* when the registry holds at
    least one of its records dated in the period (a case episode or an
    intervention in the period, an assessment or a need signal dated in it).
    """
    if use_cache:
        from hub.observatory.aggregates import cached

        hit = cached(engine, "cov", period, None)
        if hit:
            return hit[0]
    span = monthly_span(engine, period, monthly, use_cache)
    with engine.connect() as conn:
        scope = scope_of(conn, period)
        orgs = organisations(conn)
        if span is not None:
            # A month is stored only when a row is active (or dated) in it.
            m = t.obs_months
            supplied = {
                str(o)
                for (o,) in conn.execute(
                    sa.select(m.c.org)
                    .where(
                        m.c.kind.in_([mo.CE, mo.IV, mo.AS, mo.NS]),
                        m.c.month >= mo.yyyymm(span[0]),
                        m.c.month <= mo.yyyymm(span[1]),
                    )
                    .distinct()
                )
            }
        else:
            supplied = _supplied(conn, period)
    return _coverage(scope, period, orgs, supplied)


def _supplied(conn: sa.Connection, period: Period) -> set[str]:
    """Organisations with a record dated in the period (from the registry)."""
    ce, iv, asmt, ns = t.case_episodes, t.interventions, t.assessments, t.need_signals
    q = sa.union(
        sa.select(ce.c.org).where(_ce_in_period(period)),
        sa.select(iv.c.org).where(_iv_in_period(period)),
        sa.select(asmt.c.org).where(
            own(asmt), asmt.c.assessed_on >= period.start, asmt.c.assessed_on <= period.end
        ),
        sa.select(ns.c.org).where(_ns_in_period(period)),
    )
    return {str(o) for (o,) in conn.execute(q)}


def _coverage(
    scope: str, period: Period, orgs: Mapping[str, tuple[str, str]], supplied: set[str]
) -> Table:
    kinds = [k.value for k in OrganisationKind if k != OrganisationKind.DISTRICT]
    g = GridBuilder(kinds, ["registrate", "con_dati"])
    for code, (_, kind) in orgs.items():
        if kind not in kinds:
            continue
        g.cells[(kind, "registrate")] = g.cells.get((kind, "registrate"), 0) + 1
        if code in supplied:
            g.cells[(kind, "con_dati")] = g.cells.get((kind, "con_dati"), 0) + 1
    g.sums()
    return g.table(
        id="copertura_fornitori",
        title=f"Enti che hanno fornito dati ({period.label})",
        unit="enti",
        scope=scope,
        measure="enti",
        row_dim="tipo",
        row_label="Tipo di ente",
        row_headings=["Enti gestori", "Enti del Terzo Settore"],
        col_dim="stato",
        col_label="",
        col_headings=["Registrati", "Con dati nel periodo"],
        counts_people=False,
        sensitive=False,
        notes="Organisations, not people: not subject to disclosure control.",
    )


def coverage_ratio(table: Table) -> float | None:
    """Share of registered organisations that supplied data (None when none registered)."""
    registered, supplied = table.col_totals
    return None if not registered else (supplied or 0) / registered


# -- prese in carico ----------------------------------------------------------------
def prese_in_carico_table(
    engine: sa.Engine,
    year: int,
    *,
    org: str | None = None,
    use_cache: bool = True,
    reuse: Mapping[str, Table] | None = None,
) -> Table:
    """The prese-in-carico table (see :mod:`hub.observatory.prese_in_carico`) as a Table:
    one row per organisation (or the one asked for), groups as columns, *utenti* as row
    totals; the district's distinct people as column totals."""
    from hub.observatory.prese_in_carico import GROUPS, HEADINGS, prese_in_carico

    if use_cache:
        from hub.observatory.aggregates import cached

        hit = cached(engine, "pic", Period.year(year), org)
        if hit:
            return hit[0]
    with engine.connect() as conn:
        scope = scope_of(conn, Period.year(year))
        orgs = organisations(conn)
    ce = t.case_episodes
    with engine.connect() as conn:
        with_data = sorted(
            str(o)
            for (o,) in conn.execute(sa.select(ce.c.org).where(own(ce)).distinct())
            if o is not None
        )
    rows = [org] if org else with_data
    cols = [*GROUPS, "eta_ignota"]
    g = GridBuilder(rows, cols)
    for r in rows:
        known = reuse.get(r) if reuse else None
        if known is not None and known.cols == tuple(cols):
            # An organisation's row computed before (an incremental refresh: the stored
            # slice of an organisation the sync did not touch).
            for c, v in zip(known.cols, known.cells[0], strict=True):
                g.cells[(r, c)] = int(v or 0)
            g.row_totals[r] = int(known.row_totals[0] or 0)
            continue
        (res,) = prese_in_carico(engine, [year], org=r)
        d = res.as_dict()
        for c in cols:
            g.cells[(r, c)] = d[c]
        g.row_totals[r] = res.utenti
    if org:
        g.col_totals = {c: g.cells[(org, c)] for c in cols}
        g.total = g.row_totals[org]
    else:
        (dist,) = prese_in_carico(engine, [year])
        dd = dist.as_dict()
        g.col_totals = {c: dd[c] for c in cols}
        g.total = dist.utenti
    return g.table(
        id="prese_in_carico",
        title=f"Prese in carico al 31 ottobre {year}",
        unit="persone",
        scope=scope,
        measure="prese_in_carico",
        row_dim="org",
        row_label="Ente",
        row_headings=[orgs.get(r, (r, ""))[0] for r in rows],
        col_dim="gruppo",
        col_label="Gruppo",
        col_headings=[HEADINGS[c] for c in cols],
        additive=False,
        # One organisation's table shares keys with the district's row for it.
        fixed=(("org", org),) if org else (),
        pattern=f"prese_in_carico|{scope}|{org or ALL}",
        notes="Row totals are utenti (a person changing group counts in each group, once in "
        "the total); column and grand totals are the district's distinct people.",
    )


def slice_prese_in_carico(district: Table, org: str) -> Table:
    """One organisation's row of the district prese-in-carico table, as its own table."""
    return row_of(district, org)


def release_tables(engine: sa.Engine, period: Period, *, org: str | None = None) -> list[Table]:
    """Every table the observatory publishes for a period (and organisation)."""
    out: list[Table] = []
    if _is_year(period):
        out.append(prese_in_carico_table(engine, period.start.year, org=org))
    out += interventions(engine, period, org=org, by="area")
    out += interventions(engine, period, org=org, by="service")
    if org is None:
        out += third_sector(engine, period)
        out += overlaps(engine, period)
        out.append(coverage(engine, period))
        from hub.observatory.cross import cross_district

        out += cross_district(engine, period)  # [] unless rows were received
    else:
        with engine.connect() as conn:
            if org in ets_orgs(conn):
                out += third_sector(engine, period, org=org)
    return out


def _is_year(period: Period) -> bool:
    return period == Period.year(period.start.year)


__all__ = [
    "Period",
    "Table",
    "coverage",
    "interventions",
    "overlaps",
    "prese_in_carico_table",
    "release_tables",
    "third_sector",
]


def latest_year(engine: sa.Engine) -> int | None:
    """The latest calendar year in which the registry has a case episode, an intervention
    or a need signal starting."""
    ce, iv, ns = t.case_episodes, t.interventions, t.need_signals
    with engine.connect() as conn:
        dates = [
            conn.execute(sa.select(sa.func.max(ce.c.opened_on)).where(own(ce))).scalar(),
            conn.execute(sa.select(sa.func.max(iv.c.started_on)).where(own(iv))).scalar(),
            conn.execute(sa.select(sa.func.max(ns.c.on)).where(own(ns))).scalar(),
        ]
    years = [d.year for d in dates if d is not None]
    return max(years) if years else None
