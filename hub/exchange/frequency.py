"""How often a convenzione lets data flow: one *flow* per calendar period, checked at both ends.

A convenzione's ``frequency`` (daily, weekly, monthly, quarterly, yearly, on_demand) is
read as calendar periods in UTC: a day, an ISO week (Monday to Sunday), a month, a
quarter, a year. In each period one flow may go from a sender to a recipient for each
kind (records, aggregates); ``on_demand`` sets no limit. A *flow* is one sending run:
its first package names itself in the manifest's ``flow`` field and every further
package of the same run names that first package, so a run of several packages
(``--batch``) is one flow. A package continuing a flow is accepted only within a day of
the flow's first package.

Both parties apply the same rule to the same signed facts (the manifests' ``id``,
``flow`` and ``created_at``): the sender over its outbox (packages accepted or still
pending), the recipient over its log (packages it accepted). Refused and expired
packages use up nothing. A package that only erases (records tombstones and no row, or
aggregate tables withdrawn) is never held back and uses up nothing: erasure must reach
every copy at once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.exchange.convenzioni import ConvenzioneFile

#: How long after its first package a flow may go on (a run's packages follow each other).
FLOW_SPAN = dt.timedelta(days=1)

_WORDS = {
    "daily": "once a day",
    "weekly": "once a week (Monday to Sunday)",
    "monthly": "once a calendar month",
    "quarterly": "once a calendar quarter",
    "yearly": "once a calendar year",
}


@dataclass(frozen=True)
class Past:
    """A package already sent (sender) or accepted (recipient) under the convenzione."""

    package: str
    flow: str
    created_at: dt.datetime


def period(frequency: str, when: dt.datetime) -> tuple[dt.date, dt.date] | None:
    """The calendar period holding ``when`` (UTC), as [start, next start); None: no limit."""
    d = when.astimezone(dt.UTC).date()
    if frequency == "daily":
        return d, d + dt.timedelta(days=1)
    if frequency == "weekly":
        start = d - dt.timedelta(days=d.weekday())
        return start, start + dt.timedelta(days=7)
    if frequency in ("monthly", "quarterly"):
        months = 1 if frequency == "monthly" else 3
        first = (d.month - 1) // months * months + 1
        start = dt.date(d.year, first, 1)
        nxt = first + months
        return start, dt.date(d.year + (nxt > 12), (nxt - 1) % 12 + 1, 1)
    if frequency == "yearly":
        return dt.date(d.year, 1, 1), dt.date(d.year + 1, 1, 1)
    return None


def _frequency(cf: ConvenzioneFile, sender: str, recipient: str, kind: str) -> str | None:
    """The most generous frequency of the flows that let this kind go this way."""
    order = ["on_demand", "daily", "weekly", "monthly", "quarterly", "yearly"]
    found = [f.frequency for f in cf.convenzione.flows_between(sender, recipient) if f.kind == kind]
    return min(found, key=order.index) if found else None


def erasure_only(kind: str, tables: Mapping[str, Mapping[str, Any]]) -> bool:
    """A package that only erases: records tombstones, or aggregate tables withdrawn."""
    if kind == "records":
        return sum(int(t.get("rows", 0)) for t in tables.values()) == 0 and any(
            int(t.get("tombstones", 0)) for t in tables.values()
        )
    return bool(tables) and all(int(t.get("rows", 0)) == 0 for t in tables.values())


def refusal(
    cf: ConvenzioneFile,
    *,
    sender: str,
    recipient: str,
    kind: str,
    package: str,
    flow: str,
    created_at: dt.datetime,
    past: Iterable[Past],
) -> str | None:
    """Why this package comes sooner than the convenzione's frequency allows (None: it may)."""
    frequency = _frequency(cf, sender, recipient, kind)
    if frequency is None:
        return None  # no such flow at all: the convenzione check says so
    past = [p for p in past if p.package != package]
    c = cf.convenzione
    if flow != package:
        first = next((p for p in past if p.package == flow), None)
        if first is None or not _within_span(first.created_at, created_at):
            return (
                f"the package says it continues flow {flow[:12]}, which "
                + ("is not known here" if first is None else "started more than a day before it")
                + f": under convenzione {c.id} each flow starts with a package of its own"
            )
        return None
    span = period(frequency, created_at)
    if span is None:
        return None
    start, nxt = span
    earlier = sorted(
        (p for p in past if start <= p.created_at.astimezone(dt.UTC).date() < nxt),
        key=lambda p: p.created_at,
    )
    if not earlier:
        return None
    e = earlier[0]
    return (
        f"convenzione {c.id} lets {kind} flow from {sender} to {recipient} "
        f"{_WORDS[frequency]}: a flow already went on "
        f"{e.created_at.astimezone(dt.UTC).date().isoformat()} (package {e.flow[:12]}); "
        f"the next may go from {nxt.isoformat()} (erasures go at once)"
    )


def _within_span(first: dt.datetime, later: dt.datetime) -> bool:
    return dt.timedelta(0) <= later - first <= FLOW_SPAN


def _when(text: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def sent(home_path: Path, conv_id: str, recipient: str, kind: str) -> list[Past]:
    """The packages of this convenzione, recipient and kind in the outbox that count:
    accepted or still pending (refused and expired ones use up nothing)."""
    out: list[Past] = []
    folder = home_path / "outbox"
    if not folder.is_dir():
        return out
    for meta_path in folder.glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        m = meta["manifest"]
        if (
            meta["state"] in ("accepted", "pending")
            and m["convenzione"] == conv_id
            and m["recipient"] == recipient
            and m["kind"] == kind
            and not erasure_only(kind, m.get("tables", {}))
        ):
            when = _when(m.get("created_at"))
            if when is not None:
                out.append(Past(str(m["id"]), str(m.get("flow") or m["id"]), when))
    return out


def received(
    entries: Iterable[Mapping[str, Any]], conv_id: str, sender: str, kind: str
) -> list[Past]:
    """The packages of this convenzione, sender and kind the recipient accepted (its log)."""
    out: list[Past] = []
    for e in entries:
        if (
            e.get("kind") == "received"
            and e.get("convenzione") == conv_id
            and e.get("peer") == sender
            and e.get("kind_of_data") == kind
            and not e.get("erasure_only")
        ):
            when = _when(e.get("created_at") or e.get("at"))
            if when is not None:
                pid = str(e.get("package"))
                out.append(Past(pid, str(e.get("flow") or pid), when))
    return out
