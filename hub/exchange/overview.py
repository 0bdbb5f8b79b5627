"""What people see of the exchange: flows per convenzione and the convenzioni's state.

Read only, from what the exchange already records in a home: the outbox (packages
sent and their outcome), the flow log (packages received, refused, replayed), the
acknowledged index (erasures owed) and the convenzione files. It needs no private
key (:func:`hub.exchange.home.open_home` with ``keys=False``) and writes nothing,
so the web's pages (``hub/web/routers/exchange.py``) can show it to analysts and
administrators without ever being able to send, sign or decrypt anything.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from hub.exchange.convenzioni import ConvenzioneFile, load
from hub.exchange.errors import ExchangeError
from hub.exchange.home import Home
from hub.exchange.log import read_entries
from hub.exchange.send import Outbox, erasure_status
from hub.registry import Registry


@dataclass
class DirectionFlows:
    """Packages of one convenzione between this party and one peer, in one direction."""

    peer: str
    direction: str  # "out" (this party sends) or "in" (it receives)
    accepted: int = 0
    refused: int = 0
    #: Sent, no receipt yet (outbound only).
    pending: int = 0
    #: Never delivered within the signature's validity; their rows went in later packages.
    expired: int = 0
    #: Rows (records, tombstones or indicator tables) in the packages accepted.
    rows: int = 0
    #: When the latest package was created (out) or recorded (in), ISO 8601 UTC.
    last_at: str | None = None
    last_state: str | None = None
    #: Rows erased here whose tombstone the peer has not acknowledged (outbound records
    #: flows, when the registry could be read; None otherwise).
    erasures_unacknowledged: int | None = None

    def _saw(self, at: str | None, state: str) -> None:
        if at and (self.last_at is None or at >= self.last_at):
            self.last_at, self.last_state = at, state


@dataclass
class ConvenzioneFlows:
    id: str
    title: str
    state: str
    directions: list[DirectionFlows] = field(default_factory=list)


@dataclass
class FlowView:
    name: str  # "DISTRETTO_A → DISTRETTO_B"
    kind: str
    frequency: str
    #: "table: field, field" or "indicator (k ≥ 5)"
    what: list[str]


@dataclass
class ConvenzioneView:
    id: str
    file: str
    title: str
    state: str
    why_not_active: str | None
    purpose: str
    purpose_description: str
    legal_basis: str
    start: dt.date
    expiry: dt.date
    retention_days: int
    #: (code, name, endpoint, this party?)
    parties: list[tuple[str, str, str, bool]]
    signed_by: list[str]
    unsigned: list[str]
    revoked_by: str | None
    flows: list[FlowView]


@dataclass
class Broken:
    """A file in ``convenzioni/`` that is not a valid convenzione (nothing flows under it)."""

    file: str
    problem: str


def _files(home: Home) -> tuple[list[ConvenzioneFile], list[Broken]]:
    good: list[ConvenzioneFile] = []
    broken: list[Broken] = []
    for path in home.convenzioni.files():
        try:
            good.append(load(path))
        except ExchangeError as e:
            broken.append(Broken(path.name, e.message))
    return good, broken


def _visible(cf: ConvenzioneFile, org: str | None) -> bool:
    return org is None or org in {p.code for p in cf.convenzione.parties}


def convenzioni(
    home: Home, *, org: str | None = None, today: dt.date | None = None
) -> tuple[list[ConvenzioneView], list[Broken]]:
    """Every convenzione of the home with its state (``org``: only those it is party to)."""
    good, broken = _files(home)
    out = []
    for cf in good:
        if not _visible(cf, org):
            continue
        c = cf.convenzione
        flows = []
        for f in c.flows:
            if f.kind == "records":
                what = [f"{table}: {', '.join(fields)}" for table, fields in f.tables.items()]
            else:
                what = [f"{name} (k ≥ {ind.k})" for name, ind in f.indicators.items()]
            flows.append(FlowView(f"{f.from_} → {f.to}", f.kind, f.frequency, what))
        out.append(
            ConvenzioneView(
                id=c.id,
                file=cf.path.name,
                title=c.title,
                state=cf.state(today),
                why_not_active=cf.why_not_active(today),
                purpose=c.purpose,
                purpose_description=c.purpose_description,
                legal_basis=c.legal_basis,
                start=c.start,
                expiry=c.expiry,
                retention_days=c.retention_days,
                parties=[(p.code, p.name, p.endpoint, p.code == home.party) for p in c.parties],
                signed_by=cf.signed_by,
                unsigned=cf.unsigned,
                revoked_by=cf.revocation.by if cf.revocation else None,
                flows=flows,
            )
        )
    return out, ([] if org else broken)


def flows(
    home: Home,
    registry: Registry | None = None,
    *,
    org: str | None = None,
    today: dt.date | None = None,
) -> list[ConvenzioneFlows]:
    """Inbound and outbound flows per convenzione and peer (``org``: only convenzioni it
    is party to). With ``registry``, the erasures each recipient has not acknowledged."""
    good, _ = _files(home)
    by_id = {cf.id: cf for cf in good if _visible(cf, org)}
    slots: dict[tuple[str, str, str], DirectionFlows] = {}

    def slot(conv: str, peer: str, direction: str) -> DirectionFlows:
        key = (conv, peer, direction)
        if key not in slots:
            slots[key] = DirectionFlows(peer, direction)
        return slots[key]

    # Every direction the convenzione opens, even before anything flowed.
    for cf in by_id.values():
        for f in cf.convenzione.flows:
            if f.from_ == home.party:
                slot(cf.id, f.to, "out")
            elif f.to == home.party:
                slot(cf.id, f.from_, "in")
    for _, meta in Outbox(home).entries():
        m = meta["manifest"]
        if m["convenzione"] not in by_id:
            continue
        s = slot(m["convenzione"], m["recipient"], "out")
        state = str(meta["state"])
        if state in ("accepted", "refused", "pending", "expired"):
            setattr(s, state, getattr(s, state) + 1)
        if state == "accepted":
            s.rows += sum(int(x.get("rows", 0)) for x in m.get("tables", {}).values())
        s._saw(str(m.get("created_at")), state)
    for e in read_entries(home.path / "log"):
        conv, peer = e.get("convenzione"), e.get("peer")
        if conv not in by_id or not peer:
            continue
        kind = e.get("kind")
        if kind == "refused" and e.get("direction") == "out":
            # Refused here before it left: never in the outbox.
            s = slot(conv, peer, "out")
            s.refused += 1
            s._saw(e.get("at"), "refused")
        elif kind == "received":
            s = slot(conv, peer, "in")
            s.accepted += 1
            s.rows += int(e.get("rows") or 0)
            s._saw(e.get("at"), "accepted")
        elif kind == "refused":
            s = slot(conv, peer, "in")
            s.refused += 1
            s._saw(e.get("at"), "refused")
    if registry is not None:
        for (conv, peer, direction), s in slots.items():
            cf = by_id[conv]
            if direction == "out" and any(
                f.kind == "records" for f in cf.convenzione.flows_between(home.party, peer)
            ):
                s.erasures_unacknowledged = erasure_status(home, registry, cf, peer)[
                    "unacknowledged_erasures"
                ]
    out = []
    for cf in by_id.values():
        dirs = [s for (conv, _, _), s in slots.items() if conv == cf.id]
        dirs.sort(key=lambda s: (s.peer, s.direction != "out"))
        out.append(ConvenzioneFlows(cf.id, cf.convenzione.title, cf.state(today), dirs))
    return out
