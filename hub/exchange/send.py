"""The sender's side: extract, convert, build, keep in the outbox, deliver, advance on receipt.

A package is written to ``outbox/<id>/`` *before* it is sent and stays there,
``pending``, until the recipient's signed receipt for exactly that body
arrives; only then does the cursor it covers move (the index of what the
recipient acknowledged holding, ``acked/<convenzione>__<recipient>.json``). If the
recipient is down, the next ``send`` delivers the same package again (same id,
same bytes): the recipient answers a package it already has with the receipt
it gave the first time, so nothing is lost and nothing is loaded twice. A new
package is built only when nothing is pending for that convenzione and
recipient.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from hub.exchange import crypto, frequency
from hub.exchange.aggregates import protected_tables
from hub.exchange.convenzioni import PSEUDONYM_COLUMNS, ConvenzioneFile
from hub.exchange.convert import Converter, convert_rows_values
from hub.exchange.errors import PackageRefused, PeerUnavailable
from hub.exchange.home import Home
from hub.exchange.log import check_consistency
from hub.exchange.package import Package, Row, build, verify_receipt
from hub.exchange.receive import append_jsonl, write_json_atomic
from hub.gcpause import no_gc_pauses
from hub.observatory.disclosure import Ledger
from hub.observatory.rows import own
from hub.observatory.table import Period
from hub.pseudonyms.pseudonymiser import pseudonym_text
from hub.registry import Registry
from hub.registry import tables as t


# -- extraction -----------------------------------------------------------------------------
@dataclass
class Extract:
    rows: list[Row]
    #: What the recipient holds once these rows are acknowledged (key → [table,
    #: content digest], None for a tombstone): merged into the acknowledged index
    #: only when their receipt arrives.
    cursor: dict[str, Any]
    #: Distinct pseudonyms converted (for the log).
    converted: int = 0
    #: New or changed rows left out (``erasures_only``: the frequency holds them back).
    held: int = 0


def _acked_path(home: Home, conv_id: str, recipient: str) -> Path:
    return home.folder("acked") / f"{conv_id}__{recipient}.json"


def acknowledged(home: Home, conv_id: str, recipient: str) -> dict[str, list[str]]:
    """row key → [table, content digest] of every row the recipient acknowledged holding."""
    p = _acked_path(home, conv_id, recipient)
    return dict(json.loads(p.read_text())) if p.exists() else {}


def _acknowledge(
    home: Home, conv_id: str, recipient: str, delta: dict[str, list[str] | None]
) -> None:
    index = acknowledged(home, conv_id, recipient)
    for k, v in delta.items():
        if v is None:
            index.pop(k, None)
        else:
            index[k] = v
    write_json_atomic(_acked_path(home, conv_id, recipient), index, compact=True)


def extract_records(
    registry: Registry,
    cf: ConvenzioneFile,
    home: Home,
    recipient: str,
    converter: Converter | None,
    *,
    limit: int = 100_000,
    erasures_only: bool = False,
) -> Extract:
    with no_gc_pauses():
        return _extract_records(
            registry, cf, home, recipient, converter, limit=limit, erasures_only=erasures_only
        )


def _extract_records(
    registry: Registry,
    cf: ConvenzioneFile,
    home: Home,
    recipient: str,
    converter: Converter | None,
    *,
    limit: int,
    erasures_only: bool = False,
) -> Extract:
    """What the recipient does not hold yet: new and changed rows, and a tombstone for each
    row it holds that is gone here (cancelled at the source, erased, out of retention).

    Only the tables and fields the convenzione allows, with pseudonyms converted to the
    recipient's domain. Rows this hub itself received through an exchange are never
    passed on. The comparison is with the index of what the recipient acknowledged
    (signed receipts), so a package lost in transit is simply built again.
    """
    conv = cf.convenzione
    acked = acknowledged(home, conv.id, recipient)
    seen: set[str] = set()
    rows: list[Row] = []
    delta: dict[str, list[str] | None] = {}
    held = 0
    for table_name, key, values, digest in _current_rows(registry, cf, home.party, recipient):
        seen.add(key)
        if acked.get(key) == [table_name, digest]:
            continue
        if erasures_only:
            held += 1
            continue
        if len(rows) >= limit:
            continue
        rows.append(Row(table_name, key, values))
        delta[key] = [table_name, digest]
    for key in sorted(set(acked) - seen):
        if len(rows) >= limit:
            break
        rows.append(Row(acked[key][0], key, {}, "delete"))
        delta[key] = None
    converted = 0
    columns = {
        table: [c for c in fields if c in PSEUDONYM_COLUMNS]
        for table, fields in _allowed(cf, home.party, recipient).items()
    }
    pseudo = sorted(
        {r.values[c] for r in rows for c in columns.get(r.table, ()) if r.values.get(c)}
    )
    if pseudo:
        if converter is None:
            raise PeerUnavailable(
                "records with pseudonyms need the pseudonymisation service to convert them",
                where=str(home.path / "exchange.toml"),
                hint="set pseudonym_service to the service's URL",
            )
        mapping = convert_rows_values(
            converter,
            from_domain=home.settings.pseudonym_domain,
            to_domain=conv.party(recipient).pseudonym_domain,
            purpose=conv.purpose,
            convenzione=conv.id,
            values=pseudo,
        )
        converted = len(mapping)
        for r in rows:
            vals = r.values
            assert isinstance(vals, dict)  # built above, for this package only
            for c in columns.get(r.table, ()):
                v = vals.get(c)
                if v:
                    vals[c] = mapping[v]
    return Extract(rows, dict(delta), converted, held)


def _allowed(cf: ConvenzioneFile, sender: str, recipient: str) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for f in cf.convenzione.flows_between(sender, recipient):
        if f.kind == "records":
            for table, fields in f.tables.items():
                allowed.setdefault(table, set()).update(fields)
    return allowed


def _current_rows(
    registry: Registry, cf: ConvenzioneFile, sender: str, recipient: str
) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(table, row key, allowed values, content digest) of every row that may flow now."""
    conv_id = cf.convenzione.id
    with registry.engine.connect() as conn:
        for table_name, fields_set in sorted(_allowed(cf, sender, recipient).items()):
            tab = t.RECORD_TABLES[table_name]
            fields = sorted(fields_set)
            # Person columns hold ids of ``pseudonyms``: read each as (epoch, value).
            source: sa.FromClause = tab
            columns: list[Any] = []
            for f in fields:
                if f in PSEUDONYM_COLUMNS:
                    ps = t.pseudonyms.alias(f"ps_{f}")
                    source = source.outerjoin(ps, ps.c.id == tab.c[f])
                    columns += [ps.c.epoch, ps.c.value]
                else:
                    columns.append(tab.c[f])
            # A row's stable key: its key hash, or (an unkeyed row, migration 0009) the key
            # of its source record and its position there.
            identity: list[Any] = [tab.c.key_hash]
            if "position" in tab.c:
                sr = t.source_records
                source = source.outerjoin(
                    sr, sa.and_(tab.c.key_hash.is_(None), sr.c.id == tab.c.source_record)
                )
                identity += [sr.c.key, tab.c.position]
            q = (
                sa.select(*identity, *columns)
                .select_from(source)
                .where(own(tab))
                .order_by(tab.c.id)
            )
            first = len(identity)
            for rec in conn.execute(q):
                row_key = (
                    bytes(rec[0]).hex()
                    if rec[0] is not None
                    else f"{bytes(rec[1]).hex()}.{int(rec[2])}"
                )
                key = crypto.sha256_hex(f"{conv_id}|{table_name}|{row_key}".encode())
                values: dict[str, Any] = {}
                i = first
                for f in fields:
                    if f in PSEUDONYM_COLUMNS:
                        epoch, raw = rec[i], rec[i + 1]
                        values[f] = None if raw is None else pseudonym_text(epoch, bytes(raw))
                        i += 2
                    else:
                        values[f] = rec[i]
                        i += 1
                # Compared only with digests this hub computed the same way (the
                # acknowledged index): any stable encoding will do; repr is the fast one.
                digest = crypto.sha256_hex(repr(tuple(values.values())).encode())
                yield table_name, key, values, digest


def erasure_status(
    home: Home, registry: Registry, cf: ConvenzioneFile, recipient: str
) -> dict[str, int]:
    """Rows the recipient acknowledged holding that are gone here: their tombstones are
    owed (not built yet) or pending (built, not acknowledged)."""
    acked = acknowledged(home, cf.id, recipient)
    current = {key for _, key, _, _ in _current_rows(registry, cf, home.party, recipient)}
    gone = set(acked) - current
    pending = 0
    outbox = Outbox(home)
    for pid in outbox.pending_for(cf.id, recipient):
        cursor = outbox.cursor(pid) or {}
        pending += sum(1 for k, v in cursor.items() if v is None and k in gone)
    return {
        "acknowledged_rows": len(acked),
        "unacknowledged_erasures": len(gone),
        "in_pending_packages": pending,
    }


# -- the outbox ----------------------------------------------------------------------------
@dataclass
class Delivery:
    package: str
    recipient: str
    status: str  # accepted, refused, pending, expired; held (frequency: nothing built)
    detail: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    #: The recipient's log is not consistent with the heads it signed before.
    warning: str = ""


class Outbox:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.folder = home.folder("outbox")
        #: Cursors of the packages this outbox put, kept in memory so that delivering one
        #: does not read back what was just written (100,000 entries: ~0.7 CPU s of JSON).
        self._cursors: dict[str, dict[str, Any] | None] = {}

    def put(self, package: Package, cursor: dict[str, Any] | None) -> Path:
        d = self.folder / package.id
        d.mkdir()
        (d / "body").write_bytes(package.body)
        if cursor is not None:
            write_json_atomic(d / "cursor.json", cursor, compact=True)
        self._cursors[package.id] = cursor
        write_json_atomic(
            d / "meta.json",
            {
                "headers": package.headers,
                "manifest": package.manifest,
                "cursor": cursor is not None,
                "state": "pending",
                "attempts": 0,
            },
        )
        self.home.log.append(
            "sent",
            package=package.id,
            convenzione=package.manifest["convenzione"],
            peer=package.manifest["recipient"],
            digest=package.body_digest,
            rows=sum(int(x.get("rows", 0)) for x in package.manifest["tables"].values()),
        )
        return d

    def load(self, package_id: str) -> tuple[Package, dict[str, Any]]:
        d = self.folder / package_id
        meta = json.loads((d / "meta.json").read_text())
        pkg = Package(package_id, meta["manifest"], (d / "body").read_bytes(), meta["headers"])
        return pkg, meta

    def cursor(self, package_id: str) -> dict[str, Any] | None:
        """What the recipient holds once this package is acknowledged (None: no cursor)."""
        if package_id in self._cursors:
            return self._cursors[package_id]
        p = self.folder / package_id / "cursor.json"
        return dict(json.loads(p.read_text())) if p.exists() else None

    def entries(self, state: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for d in sorted(self.folder.iterdir()):
            meta_path = d / "meta.json"
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                if state is None or meta["state"] == state:
                    out.append((d.name, meta))
        out.sort(key=lambda e: str(e[1]["manifest"]["created_at"]))
        return out

    def pending_for(self, conv_id: str, recipient: str) -> list[str]:
        return [
            pid
            for pid, m in self.entries("pending")
            if m["manifest"]["convenzione"] == conv_id and m["manifest"]["recipient"] == recipient
        ]

    def _save(self, package_id: str, meta: dict[str, Any]) -> None:
        write_json_atomic(self.folder / package_id / "meta.json", meta)

    def deliver(self, package_id: str, *, timeout: float = 120.0) -> Delivery:
        """Send one pending package; on its receipt, record it and move the cursor."""
        pkg, meta = self.load(package_id)
        manifest = pkg.manifest
        recipient = manifest["recipient"]
        _, claims = crypto.jws_unverified(pkg.headers["Agid-JWT-Signature"])
        if int(claims["exp"]) < dt.datetime.now(dt.UTC).timestamp():
            # Never delivered while its signature was valid: set aside; its rows are not
            # acknowledged, so the next extract puts them in a new package.
            meta["state"] = "expired"
            self._save(package_id, meta)
            return Delivery(pkg.id, recipient, "expired", "not delivered before it expired")
        cf = self.home.convenzioni.get(manifest["convenzione"])
        endpoint = cf.convenzione.party(recipient).endpoint
        if not endpoint:
            raise PeerUnavailable(f"convenzione {cf.id} lists no endpoint for {recipient}")
        meta["attempts"] += 1
        self._save(package_id, meta)
        try:
            resp = requests.post(
                endpoint.rstrip("/") + "/v1/packages",
                data=pkg.body,
                headers=pkg.headers,
                timeout=timeout,
                verify=self.home.settings.ca_bundle or True,
            )
        except requests.RequestException as e:
            return Delivery(
                pkg.id, recipient, "pending", f"{recipient} unreachable ({type(e).__name__})"
            )
        try:
            receipt = resp.json()
        except ValueError:
            return Delivery(
                pkg.id, recipient, "pending", f"HTTP {resp.status_code} without a receipt"
            )
        if resp.status_code >= 500 or not isinstance(receipt, dict) or "signature" not in receipt:
            return Delivery(pkg.id, recipient, "pending", f"HTTP {resp.status_code}: no receipt")
        try:
            verify_receipt(receipt, pkg, cf)
        except PackageRefused as e:
            return Delivery(pkg.id, recipient, "pending", e.message)
        receipts = self.home.folder("receipts")
        write_json_atomic(receipts / f"{pkg.id}.json", receipt)
        warning = ""
        if receipt.get("log_head"):
            warning = self._check_peer_log(recipient, endpoint, receipt["log_head"])
            append_jsonl(
                self.home.folder("peers") / f"{recipient}.heads.jsonl", receipt["log_head"]
            )
        status = str(receipt["status"])
        if status == "refused" and resp.status_code == 400:
            # Refused before the recipient could prove who sent it (e.g. altered in
            # transit): the package stays pending and is sent again.
            return Delivery(pkg.id, recipient, "pending", "; ".join(receipt.get("reasons", [])))
        self.home.log.append(
            "receipt",
            package=pkg.id,
            convenzione=cf.id,
            peer=recipient,
            digest=pkg.body_digest,
            status=status,
            loaded=receipt.get("counts", {}).get("loaded"),
        )
        cursor = self.cursor(package_id)
        if status == "accepted" and cursor is not None:
            _acknowledge(self.home, cf.id, recipient, cursor)
        meta["state"] = status
        meta["receipt_at"] = receipt["at"]
        self._save(package_id, meta)
        self._cursors.pop(package_id, None)
        return Delivery(
            pkg.id,
            recipient,
            status,
            "; ".join(receipt.get("reasons", [])),
            dict(receipt.get("counts", {})),
            warning,
        )

    def _check_peer_log(self, peer: str, endpoint: str, new: dict[str, Any]) -> str:
        """Check, with an RFC 9162 consistency proof, that the peer's log only grew since
        the last head we hold from it; a failure is logged and returned as a warning."""
        held = self.home.folder("peers") / f"{peer}.heads.jsonl"
        lines = held.read_text().splitlines() if held.exists() else []
        if not lines:
            return ""
        old = json.loads(lines[-1])
        m, n = int(old["size"]), int(new["size"])
        problem = ""
        if n < m:
            problem = f"{peer}'s log shrank from {m} to {n} entries since its last receipt"
        elif n == m:
            if old["root"] != new["root"]:
                problem = f"{peer}'s log changed without growing (size {m})"
        else:
            try:
                resp = requests.get(
                    endpoint.rstrip("/") + "/v1/log/consistency",
                    params={"old": m, "new": n},
                    timeout=30,
                    verify=self.home.settings.ca_bundle or True,
                )
                proof = resp.json() if resp.status_code == 200 else {}
            except (requests.RequestException, ValueError):
                return ""  # cannot check now; the heads are kept for `log verify`
            if not check_consistency(old, new, proof):
                problem = (
                    f"{peer}'s log of size {n} does not extend the log of size {m} it "
                    "signed before: it was rewritten"
                )
        if problem:
            self.home.log.append("peer-inconsistent", peer=peer, reason=problem)
        return problem


def send_records(
    home: Home,
    registry: Registry,
    conv_id: str,
    recipient: str,
    converter: Converter | None,
    *,
    period: tuple[dt.date, dt.date] | None = None,
    batch: int = 100_000,
) -> list[Delivery]:
    """Deliver what is pending, then build and deliver new packages until nothing is left
    or the recipient stops answering."""
    outbox = Outbox(home)
    results: list[Delivery] = []
    for pid in outbox.pending_for(conv_id, recipient):
        d = outbox.deliver(pid)
        results.append(d)
        if d.status == "pending":
            return results
    cf = home.convenzioni.get(conv_id)
    today = dt.date.today()
    # Sooner than the convenzione's frequency allows: only erasures go, the rest waits.
    held = frequency.refusal(
        cf,
        sender=home.party,
        recipient=recipient,
        kind="records",
        package="(new)",
        flow="(new)",
        created_at=dt.datetime.now(dt.UTC),
        past=frequency.sent(home.path, conv_id, recipient, "records"),
    )
    flow: str | None = None
    while True:
        ex = extract_records(
            registry, cf, home, recipient, converter, limit=batch, erasures_only=bool(held)
        )
        if not ex.rows:
            break
        if ex.converted:
            home.log.append("converted", convenzione=conv_id, peer=recipient, rows=ex.converted)
        pkg = build(
            home,
            cf,
            recipient=recipient,
            rows=ex.rows,
            period=period or (today, today),
            flow=flow,
        )
        flow = flow or pkg.id
        outbox.put(pkg, ex.cursor)
        d = outbox.deliver(pkg.id)
        results.append(d)
        if d.status != "accepted":
            return results
    if held and ex.held:
        home.log.append(
            "refused", direction="out", convenzione=conv_id, peer=recipient, reason=held
        )
        results.append(Delivery("", recipient, "held", f"{ex.held:,} rows wait: {held}"))
    return results


def send_rows(
    home: Home,
    conv_id: str,
    recipient: str,
    rows: Sequence[Row],
    *,
    period: tuple[dt.date, dt.date] | None = None,
) -> Delivery:
    """Build one package of given rows (already in the recipient's domain) and deliver it."""
    cf = home.convenzioni.get(conv_id)
    today = dt.date.today()
    pkg = build(home, cf, recipient=recipient, rows=rows, period=period or (today, today))
    outbox = Outbox(home)
    outbox.put(pkg, None)
    return outbox.deliver(pkg.id)


def send_aggregates(
    home: Home,
    registry: Registry,
    conv_id: str,
    recipient: str,
    period: Period,
    ledger: Ledger,
    *,
    withdraw: Sequence[str] = (),
) -> Delivery:
    """Protect the indicator tables the convenzione names (same ledger as open data),
    record the release, and deliver them as one package for the period."""
    cf = home.convenzioni.get(conv_id)
    indicators = {
        name: ind.k
        for f in cf.convenzione.flows_between(home.party, recipient)
        if f.kind == "aggregates"
        for name, ind in f.indicators.items()
    }
    if not indicators:
        raise PackageRefused(
            f"convenzione {conv_id} lets no aggregates flow from {home.party} to {recipient}"
        )
    outbox = Outbox(home)
    for pid in outbox.pending_for(conv_id, recipient):
        d = outbox.deliver(pid)
        if d.status == "pending":
            return d
    tables = protected_tables(
        registry.engine,
        period,
        indicators,
        ledger,
        label=f"exchange {conv_id} → {recipient} {period.start}–{period.end}",
        withdraw=withdraw,
    )
    pkg = build(home, cf, recipient=recipient, aggregates=tables, period=(period.start, period.end))
    ledger.save()
    outbox.put(pkg, None)
    return outbox.deliver(pkg.id)
