"""What the hub gives back to a Third Sector organisation (*restituzione*).

Only aggregates of the organisation's own entries, and district figures, built as
observatory tables and protected by the same disclosure control as the open data
(:func:`hub.observatory.disclosure.protect_release`: primary, sticky and
complementary suppression) with the same ledger of earlier releases, so a figure
shown on this page and one in an export can never be combined to uncover a
small cell. The release is recorded in the ledger when it tells something new.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from hub.observatory.comuni import Comune
from hub.observatory.disclosure import SUPPRESSED as _HIDDEN
from hub.observatory.disclosure import Ledger, Release, Value, protect_release
from hub.observatory.rows import own
from hub.observatory.table import Table
from hub.registry import tables as t

#: Marker of a suppressed cell in what :func:`build` returns (distinct from 0).
SUPPRESSED = None


@contextlib.contextmanager
def locked_ledger(ledger_path: Path | None) -> Iterator[Ledger]:
    """The ledger, loaded and saved under an exclusive lock (web workers share it)."""
    if ledger_path is None:
        yield Ledger()
        return
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger_path.with_name(ledger_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield Ledger.load(ledger_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _column(
    table_id: str,
    title: str,
    measure: str,
    scope: str,
    row_dim: str,
    rows: list[str],
    values: list[int],
    *,
    fixed: tuple[tuple[str, str], ...] = (),
    additive: bool = True,
    total: int | None = None,
) -> Table:
    """A one-column table of counts (a total row is what a reader can add up)."""
    return Table(
        id=table_id,
        title=title,
        unit="schede",
        scope=scope,
        measure=measure,
        row_dim=row_dim,
        row_label=row_dim,
        rows=tuple(rows),
        row_headings=tuple(rows),
        col_dim="misura",
        col_label="",
        cols=("n",),
        col_headings=("n",),
        cells=tuple((v,) for v in values),
        row_totals=tuple(values),
        col_totals=(sum(values) if total is None else total,),
        total=sum(values) if total is None else total,
        additive=additive,
        fixed=fixed,
    )


def _new_information(ledger: Ledger, release: Release) -> bool:
    if any(ledger.values.get(vk) != vs for vk, vs in release.values.items()):
        return True
    return not set(release.equations) <= set(ledger.equations)


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
            sa.select(t.case_episodes.c.subject).where(
                own(t.case_episodes), t.case_episodes.c.org.in_(public_orgs)
            ),
            sa.select(t.interventions.c.subject).where(
                own(t.interventions), t.interventions.c.org.in_(public_orgs)
            ),
        )
        .subquery()
        .select()
    )


def build(
    engine: sa.Engine,
    org: str,
    comuni: dict[str, Comune],
    *,
    k: int,
    district: str = "distretto",
    ledger_path: Path | None = None,
    year: int | None = None,
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

    scope = f"{district}|{year if year is not None else 'tutto'}"
    own = (("org", org),)
    codes = sorted(own_by_comune, key=lambda c: comuni[c].name if c in comuni else c)
    own_needs: dict[str, int] = {}
    district_needs: dict[str, int] = {}
    for needs, who in need_rows:
        for n in needs.split("|"):
            district_needs[n] = district_needs.get(n, 0) + 1
            if who == org:
                own_needs[n] = own_needs.get(n, 0) + 1
    need_codes = sorted(own_needs)
    tables = [
        _column(
            "ets_persone_note",
            "Persone e servizi pubblici",
            "persone_ets",
            scope,
            "noti_ai_servizi",
            ["si", "no"],
            [known, people - known],
            fixed=own,
        ),
        _column(
            "ets_schede_anonime",
            "Schede senza codice",
            "schede_anonime",
            scope,
            "tipo",
            ["anonime"],
            [anonymous],
            fixed=own,
        ),
        _column(
            "ets_schede_comune",
            "Schede per comune",
            "schede_ets",
            scope,
            "comune",
            codes,
            [own_by_comune[c] for c in codes],
            fixed=own,
        ),
        _column(
            "distretto_schede_comune",
            "Schede del distretto per comune",
            "schede_ets",
            scope,
            "comune",
            codes,
            [district_by_comune.get(c, 0) for c in codes],
            total=sum(district_by_comune.values()),
            additive=False,  # the district's other comuni are not listed
        ),
        _column(
            "ets_schede_bisogno",
            "Schede per bisogno",
            "schede_ets_bisogno",
            scope,
            "bisogno",
            need_codes,
            [own_needs[n] for n in need_codes],
            fixed=own,
            additive=False,
            total=entries,
        ),
        _column(
            "distretto_schede_bisogno",
            "Schede del distretto per bisogno",
            "schede_ets_bisogno",
            scope,
            "bisogno",
            need_codes,
            [district_needs[n] for n in need_codes],
            additive=False,
            total=len(need_rows),
        ),
    ]
    with locked_ledger(ledger_path) as ledger:
        release = protect_release(tables, k, ledger)
        if _new_information(ledger, release):
            ledger.record(release, f"restituzione {org} {year if year is not None else 'tutto'}")
    shown = {pt.spec.id: pt for pt in release.tables}

    def col(table_id: str) -> list[int | None]:
        return [_plain(v) for v in shown[table_id].row_totals]

    def total(table_id: str) -> int | None:
        return _plain(shown[table_id].total)

    known_p, unknown_p = col("ets_persone_note")
    own_p, dist_p = col("ets_schede_comune"), col("distretto_schede_comune")
    rows = []
    for c, o, d in zip(codes, own_p, dist_p, strict=True):
        com = comuni.get(c)
        pop = com.population if com else None
        rate = round(1000 * d / pop, 2) if d is not None and pop else None
        rows.append(ComuneRow(c, com.name if com else c, o, d, rate))
    own_n, dist_n = col("ets_schede_bisogno"), col("distretto_schede_bisogno")
    people_p = total("ets_persone_note")
    anonymous_p = total("ets_schede_anonime")
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


def _plain(v: Value) -> int | None:
    return None if v is _HIDDEN or v is None else int(v)  # type: ignore[arg-type]
