"""The analyst's dashboard: every indicator table, a bar chart of each, two maps.

Analysts see the registry's values (disclosure control applies to what leaves
the analyst role: exports, restituzione); an analyst bound to a consortium sees
that consortium's tables. Charts and maps are SVG drawn on the server: no
script, no network.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa

from hub.observatory.charts import svg_bars
from hub.observatory.comuni import Comune
from hub.observatory.geo import rates_per_1000, shapes, svg_map
from hub.observatory.indicators import latest_year, release_tables
from hub.observatory.report import with_comune_names, with_service_names
from hub.observatory.rows import own
from hub.observatory.table import Period, Table
from hub.registry import tables as t
from hub.web.i18n import gettext


@dataclass
class Dashboard:
    year: int | None
    years: list[int]
    org: str | None
    orgs: list[tuple[str, str]]
    comune: str | None
    tables: list[Table] = field(default_factory=list)
    charts: dict[str, str] = field(default_factory=dict)
    maps: list[tuple[str, str]] = field(default_factory=list)
    comune_panel: list[tuple[str, int]] = field(default_factory=list)


def people_in_charge_by_comune(
    engine: sa.Engine, year: int, org: str | None = None
) -> dict[str, int]:
    """Distinct people with a presa in carico active in the year, by comune of residence."""
    ce, s = t.case_episodes, t.subjects
    start, end = dt.date(year, 1, 1), dt.date(year, 12, 31)
    q = (
        sa.select(s.c.residence_comune_istat, sa.func.count(sa.distinct(ce.c.subject)))
        .select_from(ce.join(s, sa.and_(s.c.subject == ce.c.subject, s.c.org == ce.c.org)))
        .where(
            own(ce),
            ce.c.opened_on <= end,
            sa.or_(ce.c.closed_on.is_(None), ce.c.closed_on >= start),
            s.c.residence_comune_istat.isnot(None),
        )
        .group_by(s.c.residence_comune_istat)
    )
    if org:
        q = q.where(ce.c.org == org)
    with engine.connect() as conn:
        return {c: int(n) for c, n in conn.execute(q).all()}


def signals_by_comune(engine: sa.Engine, year: int) -> dict[str, int]:
    ns = t.need_signals
    q = (
        sa.select(ns.c.comune_istat, sa.func.count())
        .where(own(ns), ns.c.on >= dt.date(year, 1, 1), ns.c.on <= dt.date(year, 12, 31))
        .group_by(ns.c.comune_istat)
    )
    with engine.connect() as conn:
        return {c: int(n) for c, n in conn.execute(q).all()}


def comune_needs(engine: sa.Engine, year: int, comune: str) -> list[tuple[str, int]]:
    ns = t.need_signals
    q = sa.select(ns.c.needs).where(
        own(ns),
        ns.c.comune_istat == comune,
        ns.c.on >= dt.date(year, 1, 1),
        ns.c.on <= dt.date(year, 12, 31),
    )
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for (needs,) in conn.execute(q):
            for n in needs.split("|"):
                if n:
                    counts[n] = counts.get(n, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def with_form_labels(tb: Table) -> Table:
    """Needs and services under the very labels of the entry form (keys keep the codes)."""
    from dataclasses import replace

    from hub.web.labels import NEED_LABELS, SERVICE_LABELS

    vocab = {
        "bisogni": {n.value: gettext(label) for n, label in NEED_LABELS.items()},
        "servizi": {s.value: gettext(label) for s, label in SERVICE_LABELS.items()},
    }
    if tb.row_dim in vocab:
        names = vocab[tb.row_dim]
        tb = replace(
            tb,
            row_headings=tuple(
                names.get(c, h) for c, h in zip(tb.rows, tb.row_headings, strict=True)
            ),
        )
    if tb.col_dim in vocab:
        names = vocab[tb.col_dim]
        tb = replace(
            tb,
            col_headings=tuple(
                names.get(c, h) for c, h in zip(tb.cols, tb.col_headings, strict=True)
            ),
        )
    return tb


def labelled(tb: Table, comuni: dict[str, Comune]) -> Table:
    """A table as the dashboard shows and downloads it: comuni by name, SIUSS codes with
    their names, needs and services under the entry form's labels."""
    return with_form_labels(with_service_names(with_comune_names(tb, comuni)))


def default_year(engine: sa.Engine) -> int | None:
    """The latest complete year: the latest year with data, unless its data stop before
    December (a year still in progress, or not yet fully loaded): then the year before."""
    ce, iv, ns = t.case_episodes, t.interventions, t.need_signals
    with engine.connect() as conn:
        dates = [
            conn.execute(sa.select(sa.func.max(ce.c.opened_on)).where(own(ce))).scalar(),
            conn.execute(sa.select(sa.func.max(iv.c.started_on)).where(own(iv))).scalar(),
            conn.execute(sa.select(sa.func.max(ns.c.on)).where(own(ns))).scalar(),
        ]
    last = max((d for d in dates if d is not None), default=None)
    if last is None:
        return None
    if isinstance(last, str):
        last = dt.date.fromisoformat(last[:10])
    return last.year if last.month == 12 else last.year - 1


def build(
    engine: sa.Engine,
    comuni: dict[str, Comune],
    *,
    year: int | None,
    org: str | None,
    comune: str | None,
    orgs: list[tuple[str, str]],
) -> Dashboard:
    last = latest_year(engine)
    years = list(range(last - 4, last + 1)) if last else []
    complete = default_year(engine)
    year = year if year in years else (complete if complete in years else last)
    d = Dashboard(year=year, years=years, org=org, orgs=orgs, comune=comune)
    if year is None:
        return d
    d.tables = [labelled(tb, comuni) for tb in release_tables(engine, Period.year(year), org=org)]
    for tb in d.tables:
        d.charts[tb.id] = svg_bars(list(tb.row_headings), list(tb.row_totals), title=tb.title)
    names = {c: v.name for c, v in comuni.items()}
    population = {c: v.population for c, v in comuni.items()}
    geo = shapes(comuni)
    unit = gettext("per 1,000 residents")
    signals_title = gettext("Third Sector signals per 1,000 residents, %(year)s") % {"year": year}
    people_title = gettext(
        "People in charge of the social services per 1,000 residents, %(year)s"
    ) % {"year": year}
    d.maps.append(
        (
            signals_title,
            svg_map(
                geo,
                rates_per_1000(signals_by_comune(engine, year), population),
                names,
                title=signals_title,
                unit=unit,
                missing_label=gettext("no data"),
            ),
        )
    )
    d.maps.append(
        (
            people_title,
            svg_map(
                geo,
                rates_per_1000(people_in_charge_by_comune(engine, year, org), population),
                names,
                title=people_title,
                unit=unit,
                missing_label=gettext("no data"),
            ),
        )
    )
    if comune in comuni:
        d.comune_panel = comune_needs(engine, year, comune)
    return d
