"""Cross-district indicators: what record-level exchange makes possible (issue 13, item 4).

Rows received from a partner district under a convenzione are stored with
``connector = "x.<sender>"`` and ``org = <sender>`` (:mod:`hub.exchange.load`), their
pseudonyms already converted to this district's domain by the pseudonymisation
service: a person followed in both districts has the same pseudonym in this
district's own rows and in the received ones. Two tables, for the district only
(never per organisation), both counting distinct people and both going through the
observatory's disclosure control like every other table:

* ``persone_piu_distretti`` — people **in charge in more than one district**: a
  subject with one of this district's own case episodes active in the period *and*
  a received case episode of the partner active in the period (row per partner;
  the total counts a person once, whichever partners);
* ``trasferimenti`` — **transfers of a presa in carico**: a case episode closed in one
  district and one opened in the other for the same subject ``0..within_days`` days
  later, counted in the period when the new episode is opened in it. ``in_entrata``:
  closed at the partner, opened here; ``in_uscita``: closed here, opened at the
  partner (row per partner; totals count distinct people).

``LOCAL`` pseudonyms never cross districts (the service refuses to convert them), so
people known only by a local id are never matched: the counts are lower bounds.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import sqlalchemy as sa

from hub.observatory.rows import RECEIVED_PREFIX, own, received
from hub.observatory.table import GridBuilder, Period, Table
from hub.registry import tables as t

#: Default longest gap, in days, between a closing and an opening counted as a transfer.
DEFAULT_TRANSFER_DAYS = 90

__all__ = ["DEFAULT_TRANSFER_DAYS", "cross_district", "partners"]


def partners(conn: sa.Connection) -> list[str]:
    """The districts this registry holds received case episodes from (sender codes)."""
    ce = t.case_episodes
    r = t.runs
    exchange = conn.execute(
        sa.select(r.c.id).where(r.c.connector.startswith(RECEIVED_PREFIX, autoescape=True)).limit(1)
    ).first()
    if exchange is None:  # nothing ever received: no scan of the case episodes
        return []
    return sorted(
        str(o) for (o,) in conn.execute(sa.select(ce.c.org).where(received(ce)).distinct())
    )


def cross_district(
    engine: sa.Engine,
    period: Period,
    *,
    within_days: int = DEFAULT_TRANSFER_DAYS,
    use_cache: bool = True,
) -> list[Table]:
    """The two cross-district tables for the period, or ``[]`` when nothing was received."""
    if within_days < 0:
        raise ValueError("within_days must be 0 or more")
    if use_cache and within_days == DEFAULT_TRANSFER_DAYS:
        from hub.observatory.aggregates import cached

        hit = cached(engine, "xd", period, None)
        if hit is not None:
            return hit
    from hub.observatory.indicators import scope_of

    ce = t.case_episodes
    active = sa.and_(
        ce.c.opened_on <= period.end,
        sa.or_(ce.c.closed_on.is_(None), ce.c.closed_on >= period.start),
    )
    gap = dt.timedelta(days=within_days)
    closed_window = sa.and_(
        ce.c.closed_on.is_not(None),
        ce.c.closed_on >= period.start - gap,
        ce.c.closed_on <= period.end,
    )
    opened_window = sa.and_(ce.c.opened_on >= period.start, ce.c.opened_on <= period.end)
    with engine.connect() as conn:
        districts = partners(conn)
        if not districts:
            return []
        scope = scope_of(conn, period)
        here_active = {
            str(s)
            for (s,) in conn.execute(sa.select(ce.c.subject).where(own(ce), active).distinct())
        }
        there_active: dict[str, set[str]] = defaultdict(set)
        q = sa.select(ce.c.org, ce.c.subject).where(received(ce), active).distinct()
        for o, s in conn.execute(q):
            there_active[str(o)].add(str(s))
        # Closings and openings near the period, on each side.
        here_closed: dict[str, list[dt.date]] = defaultdict(list)
        here_opened: dict[str, list[dt.date]] = defaultdict(list)
        for s, d in conn.execute(
            sa.select(ce.c.subject, ce.c.closed_on).where(own(ce), closed_window)
        ):
            here_closed[str(s)].append(d)
        for s, d in conn.execute(
            sa.select(ce.c.subject, ce.c.opened_on).where(own(ce), opened_window)
        ):
            here_opened[str(s)].append(d)
        there_closed: dict[str, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
        there_opened: dict[str, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
        for o, s, d in conn.execute(
            sa.select(ce.c.org, ce.c.subject, ce.c.closed_on).where(received(ce), closed_window)
        ):
            there_closed[str(o)][str(s)].append(d)
        for o, s, d in conn.execute(
            sa.select(ce.c.org, ce.c.subject, ce.c.opened_on).where(received(ce), opened_window)
        ):
            there_opened[str(o)][str(s)].append(d)

    def transferred(closed: dict[str, list[dt.date]], opened: dict[str, list[dt.date]]) -> set[str]:
        return {
            s
            for s, opens in opened.items()
            if any(0 <= (o - c).days <= within_days for o in opens for c in closed.get(s, ()))
        }

    # People in charge in both districts.
    both = {d: here_active & there_active.get(d, set()) for d in districts}
    g1 = GridBuilder(list(districts), ["persone"])
    for d in districts:
        g1.cells[(d, "persone")] = len(both[d])
    g1.row_totals = {d: len(both[d]) for d in districts}
    anyone = set().union(*both.values())
    g1.col_totals = {"persone": len(anyone)}
    g1.total = len(anyone)
    t1 = g1.table(
        id="persone_piu_distretti",
        title=f"Persone in carico anche in un altro distretto ({period.label})",
        unit="persone",
        scope=scope,
        measure="distretti.in_carico_entrambi",
        row_dim="distretto",
        row_label="Altro distretto",
        col_dim="misura",
        col_label="",
        col_headings=["Persone"],
        additive=False,
        pattern=f"distretti.entrambi|{scope}",
        notes="People with a presa in carico active in the period both here and in the other "
        "district (received under a convenzione); the total counts each person once.",
    )

    # Transfers.
    cols = ["in_entrata", "in_uscita"]
    g2 = GridBuilder(list(districts), cols)
    by_col: dict[str, set[str]] = {c: set() for c in cols}
    everyone: set[str] = set()
    for d in districts:
        inbound = transferred(there_closed.get(d, {}), here_opened)
        outbound = transferred(here_closed, there_opened.get(d, {}))
        g2.cells[(d, "in_entrata")] = len(inbound)
        g2.cells[(d, "in_uscita")] = len(outbound)
        g2.row_totals[d] = len(inbound | outbound)
        by_col["in_entrata"] |= inbound
        by_col["in_uscita"] |= outbound
        everyone |= inbound | outbound
    g2.col_totals = {c: len(v) for c, v in by_col.items()}
    g2.total = len(everyone)
    t2 = g2.table(
        id="trasferimenti",
        title=f"Trasferimenti della presa in carico tra distretti ({period.label})",
        unit="persone",
        scope=scope,
        measure=f"distretti.trasferimenti.{within_days}g",
        row_dim="distretto",
        row_label="Altro distretto",
        col_dim="direzione",
        col_label="Direzione",
        col_headings=["In entrata", "In uscita"],
        additive=False,
        pattern=f"distretti.trasferimenti|{scope}",
        notes=f"A presa in carico closed in one district and opened in the other within "
        f"{within_days} days, counted in the period of the opening; people, not transfers.",
    )
    return [t1, t2]
