"""The *prese in carico* table by target group, as district plans print it.

Definitions (documented in docs/indicators.md):

* Reference date of year Y: 31 October Y (configurable). The **window** is
  1 January Y – reference date.
* **utenti**: distinct subjects with a case episode (*presa in carico*)
  active at some time in the window: ``opened_on <= ref`` and
  (``closed_on`` is empty or ``>= 1 January Y``).
* **age** = Y − birth year: *minori* < 18, *adulti* 18–64, *anziani* ≥ 65.
* **disability / non-self-sufficiency** come from dated assessments: the
  status in force on 1 January, and every status taken by an assessment
  dated inside the window. A person is counted in *each* group whose status
  they had during the window (e.g. an older person assessed non
  self-sufficient in June counts under *anziani* and *anziani non
  autosufficienti*), but once in *utenti*. Without any assessment a person
  is neither disabled nor non self-sufficient.
* Minori and adulti split by disability; anziani split by
  non-self-sufficiency.
* **nuclei**: distinct households among the utenti; a subject with no
  household counts as a household of one.
* For the whole district, subjects are the district-domain pseudonyms, so a
  person in charge of two consortia counts once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from hub.observatory.rows import own
from hub.registry import tables as t

GROUPS = (
    "minori_non_disabili",
    "minori_disabili",
    "adulti_non_disabili",
    "adulti_disabili",
    "anziani",
    "anziani_non_autosufficienti",
)

#: Column headings as in the district planning documents (Italian).
HEADINGS = {
    "year": "anno",
    "minori_non_disabili": "Minori non disabili",
    "minori_disabili": "Minori disabili",
    "adulti_non_disabili": "Adulti non disabili",
    "adulti_disabili": "Adulti disabili",
    "anziani": "Anziani",
    "anziani_non_autosufficienti": "Anziani non autosuff.",
    "utenti": "Totale utenti",
    "nuclei": "Totale nuclei",
    "eta_ignota": "Età ignota",
}


@dataclass(frozen=True)
class PreseInCaricoRow:
    year: int
    minori_non_disabili: int
    minori_disabili: int
    adulti_non_disabili: int
    adulti_disabili: int
    anziani: int
    anziani_non_autosufficienti: int
    utenti: int
    nuclei: int
    #: utenti whose birth year is unknown (in the total, in no age group).
    eta_ignota: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def prese_in_carico(
    engine: sa.Engine,
    years: Iterable[int],
    *,
    org: str | None = None,
    reference_day: tuple[int, int] = (10, 31),
) -> list[PreseInCaricoRow]:
    return [_one_year(engine, y, org, reference_day) for y in years]


def years_with_data(engine: sa.Engine, org: str | None = None) -> list[int]:
    ce = t.case_episodes
    q = sa.select(sa.func.min(ce.c.opened_on), sa.func.max(ce.c.opened_on)).where(own(ce))
    if org:
        q = q.where(ce.c.org == org)
    with engine.connect() as conn:
        lo, hi = conn.execute(q).one()
    if lo is None:
        return []
    return list(range(lo.year, hi.year + 1))


def _one_year(
    engine: sa.Engine, year: int, org: str | None, reference_day: tuple[int, int]
) -> PreseInCaricoRow:
    start = dt.date(year, 1, 1)
    ref = dt.date(year, *reference_day)
    ce, su, asmt = t.case_episodes, t.subjects, t.assessments
    episodes = sa.select(ce.c.subject).where(
        own(ce), ce.c.opened_on <= ref, sa.or_(ce.c.closed_on.is_(None), ce.c.closed_on >= start)
    )
    if org:
        episodes = episodes.where(ce.c.org == org)
    active = episodes.distinct().subquery()
    subj_q = sa.select(su.c.subject, su.c.org, su.c.birth_year, su.c.household).where(
        own(su), su.c.subject.in_(sa.select(active.c.subject))
    )
    asmt_q = sa.select(
        asmt.c.subject,
        asmt.c.assessed_on,
        asmt.c.valid_until,
        asmt.c.disability,
        asmt.c.non_self_sufficient,
    ).where(own(asmt), asmt.c.subject.in_(sa.select(active.c.subject)), asmt.c.assessed_on <= ref)
    if org:
        subj_q = subj_q.where(su.c.org == org)
        asmt_q = asmt_q.where(asmt.c.org == org)
    with engine.connect() as conn:
        people = [r[0] for r in conn.execute(sa.select(active.c.subject))]
        birth: dict[str, int] = {}
        household: dict[str, str] = {}
        for subject, s_org, by, hh in conn.execute(subj_q):
            if by is not None:
                birth[subject] = min(by, birth.get(subject, by))
            if hh is not None and subject not in household:
                household[subject] = f"{s_org}/{hh}"
        history: dict[str, list[tuple[dt.date, dt.date | None, bool | None, bool | None]]] = (
            defaultdict(list)
        )
        for subject, on, until, dis, nss in conn.execute(asmt_q):
            history[subject].append((on, until, dis, nss))

    counts = dict.fromkeys(GROUPS, 0)
    unknown_age = 0
    for person in people:
        by = birth.get(person)
        if by is None:
            unknown_age += 1
            continue
        age = year - by
        statuses = _statuses_in_window(
            sorted(history.get(person, []), key=lambda a: a[0]), start, ref
        )
        if age < 65:
            prefix = "minori" if age < 18 else "adulti"
            if any(dis for dis, _ in statuses):
                counts[f"{prefix}_disabili"] += 1
            if any(not dis for dis, _ in statuses):
                counts[f"{prefix}_non_disabili"] += 1
        else:
            if any(nss for _, nss in statuses):
                counts["anziani_non_autosufficienti"] += 1
            if any(not nss for _, nss in statuses):
                counts["anziani"] += 1
    nuclei = len({household.get(p, f"single/{p}") for p in people})
    return PreseInCaricoRow(
        year=year, **counts, utenti=len(people), nuclei=nuclei, eta_ignota=unknown_age
    )


def _statuses_in_window(
    assessments: list[tuple[dt.date, dt.date | None, bool | None, bool | None]],
    start: dt.date,
    ref: dt.date,
) -> set[tuple[bool, bool]]:
    """Every (disabled, non self-sufficient) status held between ``start`` and ``ref``.

    ``assessments`` are sorted by date. A field an assessment leaves empty
    keeps its previous value; a status whose ``valid_until`` has passed falls
    back to "neither" until the next assessment.
    """
    default = (False, False)
    # Piecewise-constant status: list of (from, status).
    timeline: list[tuple[dt.date, tuple[bool, bool]]] = [(dt.date.min, default)]
    for i, (on, until, a_dis, a_nss) in enumerate(assessments):
        prev = timeline[-1][1]
        status = (prev[0] if a_dis is None else a_dis, prev[1] if a_nss is None else a_nss)
        timeline.append((on, status))
        nxt = assessments[i + 1][0] if i + 1 < len(assessments) else None
        if until is not None and (nxt is None or nxt > until + dt.timedelta(days=1)):
            timeline.append((until + dt.timedelta(days=1), default))
    seen: set[tuple[bool, bool]] = set()
    for j, (frm, status) in enumerate(timeline):
        to = timeline[j + 1][0] - dt.timedelta(days=1) if j + 1 < len(timeline) else dt.date.max
        if frm <= ref and to >= start:
            seen.add(status)
    return seen


def render(rows: list[PreseInCaricoRow], fmt: str = "table") -> str:
    """The table as plain text (aligned), CSV or JSON, with the Italian headings."""
    import csv
    import io
    import json

    show_unknown = any(r.eta_ignota for r in rows)
    keys = [k for k in HEADINGS if k != "eta_ignota" or show_unknown]
    if fmt == "json":
        return json.dumps([r.as_dict() for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([HEADINGS[k] for k in keys])
        for r in rows:
            w.writerow([getattr(r, k) for k in keys])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use table, csv or json")
    head = [HEADINGS[k] for k in keys]
    body = [[str(getattr(r, k)) for k in keys] for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    for b in body:
        lines.append(" | ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)))
    return "\n".join(lines) + "\n"
