"""What the hub gives back to a Third Sector organisation (*restituzione*).

Only aggregates of the organisation's own people, and district figures,
with small cells suppressed: a count below ``k`` is shown as suppressed, and
when a column has a total, a second cell is suppressed with it so the first
cannot be recomputed by difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from hub.observatory.comuni import Comune
from hub.registry import tables as t

#: Marker of a suppressed cell (distinct from 0 and from missing).
SUPPRESSED = None


def protect(values: list[int], k: int) -> list[int | None]:
    """Primary suppression (< k, but not 0) and one complementary cell when needed.

    The column's total may be known, so a single suppressed cell could be
    recovered as total minus the others: the smallest other non-zero cell is
    suppressed too. (A column whose only non-zero cell is small has no other
    cell to hide it with; pages built on this never show such a column's total.)
    """
    out: list[int | None] = [None if 0 < v < k else v for v in values]
    hidden = [i for i, v in enumerate(out) if v is None]
    if len(hidden) == 1:
        others = [(v, i) for i, v in enumerate(values) if i not in hidden and v > 0]
        if others:
            out[min(others)[1]] = None
    return out


@dataclass
class ComuneRow:
    istat: str
    name: str
    own: int | None
    district: int | None
    district_per_1000: float | None


@dataclass
class Restituzione:
    org: str
    entries: int
    people: int | None
    anonymous: int | None
    known_to_public: int | None
    not_known_to_public: int | None
    k: int
    by_comune: list[ComuneRow] = field(default_factory=list)
    by_need: list[tuple[str, int | None, int | None]] = field(default_factory=list)


def _public_subjects() -> sa.Select[tuple[str]]:
    """Subjects known to the public social services (any ente gestore's record)."""
    o = t.organisations
    public_orgs = sa.select(o.c.code).where(o.c.kind == "ente_gestore")
    return (
        sa.union(
            sa.select(t.case_episodes.c.subject).where(t.case_episodes.c.org.in_(public_orgs)),
            sa.select(t.interventions.c.subject).where(t.interventions.c.org.in_(public_orgs)),
        )
        .subquery()
        .select()
    )


def build(
    engine: sa.Engine, org: str, comuni: dict[str, Comune], *, k: int, year: int | None = None
) -> Restituzione:
    e = t.ets_entries
    live: list[sa.ColumnElement[bool]] = [e.c.deleted.is_(False)]
    if year is not None:
        live.append(sa.extract("year", e.c.on) == year)
    mine = [*live, e.c.org == org]
    with engine.connect() as conn:
        entries = conn.execute(sa.select(sa.func.count()).where(*mine)).scalar_one()
        people = conn.execute(
            sa.select(sa.func.count(sa.distinct(e.c.subject))).where(*mine, e.c.subject.isnot(None))
        ).scalar_one()
        anonymous = conn.execute(
            sa.select(sa.func.count()).where(*mine, e.c.subject.is_(None))
        ).scalar_one()
        public = _public_subjects().subquery()
        known = conn.execute(
            sa.select(sa.func.count(sa.distinct(e.c.subject))).where(
                *mine, e.c.subject.in_(sa.select(public.c[0]))
            )
        ).scalar_one()
        own_by_comune: dict[str, int] = dict(
            conn.execute(
                sa.select(e.c.comune_istat, sa.func.count()).where(*mine).group_by(e.c.comune_istat)
            ).all()
        )
        district_by_comune: dict[str, int] = dict(
            conn.execute(
                sa.select(e.c.comune_istat, sa.func.count()).where(*live).group_by(e.c.comune_istat)
            ).all()
        )
        need_rows = conn.execute(sa.select(e.c.needs, e.c.org).where(*live)).all()

    people_p, anonymous_p = protect([people, anonymous], k)
    known_p, unknown_p = protect([known, people - known], k)
    codes = sorted(own_by_comune, key=lambda c: comuni[c].name if c in comuni else c)
    own_p = protect([own_by_comune[c] for c in codes], k)
    dist_p = protect([district_by_comune.get(c, 0) for c in codes], k)
    rows = []
    for c, o, d in zip(codes, own_p, dist_p, strict=True):
        com = comuni.get(c)
        pop = com.population if com else None
        rate = round(1000 * d / pop, 2) if d is not None and pop else None
        rows.append(ComuneRow(c, com.name if com else c, o, d, rate))
    own_needs: dict[str, int] = {}
    district_needs: dict[str, int] = {}
    for needs, who in need_rows:
        for n in needs.split("|"):
            district_needs[n] = district_needs.get(n, 0) + 1
            if who == org:
                own_needs[n] = own_needs.get(n, 0) + 1
    need_codes = sorted(own_needs)
    own_n = protect([own_needs[n] for n in need_codes], k)
    dist_n = protect([district_needs[n] for n in need_codes], k)
    return Restituzione(
        org=org,
        entries=entries,
        people=people_p,
        anonymous=anonymous_p,
        known_to_public=known_p,
        not_known_to_public=unknown_p,
        k=k,
        by_comune=rows,
        by_need=list(zip(need_codes, own_n, dist_n, strict=True)),
    )
