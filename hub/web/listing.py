"""The entry list of an organisation: paged, searched, counted, downloadable (read only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hub.registry import tables as t

PAGE_SIZE = 50


@dataclass(frozen=True)
class Filters:
    tag: str = ""
    since: dt.date | None = None
    until: dt.date | None = None
    need: str = ""

    def where(self, org: str) -> list[sa.ColumnElement[bool]]:
        e = t.ets_entries
        out: list[sa.ColumnElement[bool]] = [e.c.org == org, e.c.deleted.is_(False)]
        if self.tag:
            out.append(e.c.tag == self.tag.strip().upper())
        if self.since:
            out.append(e.c.on >= self.since)
        if self.until:
            out.append(e.c.on <= self.until)
        if self.need:
            # needs are stored sorted and joined with "|": match a whole item
            out.append(("|" + e.c.needs + "|").contains(f"|{self.need}|"))
        return out


_COLUMNS = (
    "id",
    "entry_uuid",
    "tag",
    "identifier_kind",
    "needs",
    "services_given",
    "comune_istat",
    "on",
    "referred_by_social_services",
    "birth_year",
    "sex",
)


def _row(r: Any) -> dict[str, Any]:
    d: dict[str, Any] = r._asdict()
    d["needs"] = [x for x in r.needs.split("|") if x]
    d["services_given"] = [x for x in r.services_given.split("|") if x]
    return d


def count(engine: sa.Engine, org: str, filters: Filters) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(*filters.where(org))).scalar_one())


def page(
    engine: sa.Engine, org: str, filters: Filters, *, number: int, size: int = PAGE_SIZE
) -> list[dict[str, Any]]:
    e = t.ets_entries
    q = (
        sa.select(*(e.c[c] for c in _COLUMNS))
        .where(*filters.where(org))
        .order_by(e.c.on.desc(), e.c.id.desc())
        .limit(size)
        .offset((max(number, 1) - 1) * size)
    )
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def every(engine: sa.Engine, org: str, filters: Filters) -> list[dict[str, Any]]:
    e = t.ets_entries
    q = (
        sa.select(*(e.c[c] for c in _COLUMNS))
        .where(*filters.where(org))
        .order_by(e.c.on.desc(), e.c.id.desc())
    )
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]
