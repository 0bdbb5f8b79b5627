"""Packages: one format for every flow between organisations, and their receipts.

A package is a *manifest* (who, to whom, under which convenzione, for which
purpose and period, which tables with how many rows, the payload's SHA-256)
and a *payload* (JSON lines, one row each: ``{"t": table, "k": row key,
"v": values}`` or ``{"t", "k", "op": "delete"}`` for a tombstone; for an
aggregate package one line per indicator table). The sender signs the
manifest (Ed25519), which binds the payload through its digest, then seals
``signed manifest + payload`` for the recipient with HPKE (RFC 9180), so only
the recipient can read it and a package for someone else cannot be opened.

On the wire the HPKE ciphertext is the HTTP body, with headers shaped like
AgID ModI's integrity pattern (so it can later ride on PDND unchanged):

- ``Digest: SHA-256=<base64>`` of the body;
- ``Agid-JWT-Signature``: a compact JWS (EdDSA) whose claims carry ``iss``
  (sender), ``aud`` (recipient), ``iat``/``exp``, ``jti`` (the package id)
  and ``signed_headers`` (the digest and content type).

The recipient answers with a *receipt* it signs: the package id, the body
digest, accepted or refused with the reasons, the counts, and the head of its
flow log after recording the package. The sender's cursor moves only on an
accepted receipt; a package sent twice gets the same receipt (idempotent).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.exchange import crypto, frequency
from hub.exchange.aggregates import disclosure_problems
from hub.exchange.convenzioni import ConvenzioneFile, Directory, PackageShape, refusals
from hub.exchange.errors import ConvenzioneError, PackageRefused
from hub.exchange.home import Home
from hub.exchange.log import verify_head
from hub.gcpause import no_gc_pauses

FORMAT = "raccordo-package/1"
RECEIPT_FORMAT = "raccordo-receipt/1"
CONTENT_TYPE = "application/vnd.raccordo.package+hpke"
PACKAGE_CONTEXT = "raccordo/package/v1"
RECEIPT_CONTEXT = "raccordo/receipt/v1"
#: A package bigger than this is refused before it is read (bounded input, §8.4).
MAX_BODY = 512 * 1024 * 1024
#: How far apart two hubs' clocks may be.
#: What a recipient says when a package fails the checks every sealed message gets.
MESSAGES = crypto.ModiMessages(
    wrong_recipient="the package is addressed to {aud}, not to {me} (wrong recipient)",
    future="the package is dated in the future: check both hubs' clocks",
    expired="the package's signature has expired: the sender must build it again",
    not_sealed="the package is not encrypted for {me} (wrong recipient) or is damaged",
)
#: How long a package's JWS stays valid for a first delivery (a replay of a
#: package already answered is answered at any time).
VALIDITY = dt.timedelta(days=7)


def _info(recipient: str) -> bytes:
    return f"{PACKAGE_CONTEXT}|{recipient}".encode()


@dataclass(frozen=True)
class Row:
    """One record row in a package, or a tombstone (``op="delete"``)."""

    table: str
    key: str
    values: Mapping[str, Any] = field(default_factory=dict)
    op: Literal["upsert", "delete"] = "upsert"


@dataclass(frozen=True)
class Package:
    id: str
    manifest: dict[str, Any]
    body: bytes
    headers: dict[str, str]

    @property
    def body_digest(self) -> str:
        return crypto.sha256_hex(self.body)


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    raise TypeError(f"cannot put a {type(v).__name__} in a package")


#: One encoder for every payload line (creating one per call costs more than encoding).
_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)


def encode_payload(rows: Iterable[Row]) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """The payload bytes and, per table, the fields present and the row count.

    One JSON object per line (JSON escapes newlines inside strings, so a line is a row).
    """
    parts: list[str] = []
    tables: dict[str, dict[str, Any]] = {}
    fields: dict[str, set[str]] = {}
    encode = _LINE.encode
    with no_gc_pauses():
        for r in rows:
            info = tables.setdefault(r.table, {"rows": 0, "tombstones": 0})
            if r.op == "delete":
                info["tombstones"] += 1
                parts.append(encode({"t": r.table, "k": r.key, "op": "delete"}))
            else:
                info["rows"] += 1
                fields.setdefault(r.table, set()).update(r.values)
                parts.append(encode({"t": r.table, "k": r.key, "v": r.values}))
    for table, info in tables.items():
        info["fields"] = sorted(fields.get(table, set()))
    return ("\n".join(parts) + ("\n" if parts else "")).encode(), tables


def decode_payload(payload: bytes) -> list[Row]:
    """The rows of a payload; any line that is not a valid row refuses the package."""
    body = payload.rstrip(b"\n")
    if not body:
        return []
    with no_gc_pauses():
        return _rows_of(body)


def _rows_of(body: bytes) -> list[Row]:
    try:
        # The lines as one JSON array: one parse instead of one per row.
        objs = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        raise PackageRefused("the payload is not JSON lines") from None
    rows = []
    for n, obj in enumerate(objs, start=1):
        try:
            if obj.get("op") == "delete":
                rows.append(Row(str(obj["t"]), str(obj["k"]), {}, "delete"))
            else:
                values = obj["v"]
                if not isinstance(values, dict):
                    raise TypeError
                rows.append(Row(str(obj["t"]), str(obj["k"]), values))
        except (KeyError, TypeError, AttributeError):
            raise PackageRefused(f"payload line {n} is not a valid row") from None
    return rows


def build(
    home: Home,
    cf: ConvenzioneFile,
    *,
    recipient: str,
    rows: Sequence[Row] = (),
    aggregates: Mapping[str, Mapping[str, Any]] | None = None,
    period: tuple[dt.date, dt.date],
    package_id: str | None = None,
    flow: str | None = None,
    now: dt.datetime | None = None,
) -> Package:
    """Build, check against the convenzione (refused here before anything leaves), sign, seal.

    ``flow``: the id of the first package of the sending run this one continues (None:
    it starts a flow of its own), for the convenzione's frequency (:mod:`.frequency`).
    """
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    conv = cf.convenzione
    kind: Literal["records", "aggregates"] = "aggregates" if aggregates is not None else "records"
    if kind == "records":
        payload, tables = encode_payload(rows)
        indicators: dict[str, int] = {}
    else:
        assert aggregates is not None
        payload = b"".join(
            crypto.canonical({"t": name, "table": dict(tab)}) + b"\n"
            for name, tab in aggregates.items()
        )
        tables = {name: {"rows": len(tab.get("cells", []))} for name, tab in aggregates.items()}
        indicators = {name: int(tab["k"]) for name, tab in aggregates.items()}
    pid = package_id or uuid.uuid4().hex
    shape = PackageShape(
        convenzione=conv.id,
        sender=home.party,
        recipient=recipient,
        purpose=conv.purpose,
        kind=kind,
        tables={t: info.get("fields", []) for t, info in tables.items()}
        if kind == "records"
        else {},
        indicators=indicators,
        period_start=period[0],
        period_end=period[1],
    )
    reasons = refusals(cf, shape, now.date())
    flow = flow or pid
    if not reasons and not frequency.erasure_only(kind, tables):
        why = frequency.refusal(
            cf,
            sender=home.party,
            recipient=recipient,
            kind=kind,
            package=pid,
            flow=flow,
            created_at=now,
            past=frequency.sent(home.path, conv.id, recipient, kind),
        )
        reasons += [why] if why else []
    if aggregates is not None:
        reasons += _disclosure(cf, home.party, recipient, aggregates)
    if reasons:
        home.log.append(
            "refused",
            direction="out",
            package=pid,
            convenzione=conv.id,
            peer=recipient,
            reason="; ".join(reasons),
        )
        raise PackageRefused(
            f"package not sent: it is outside convenzione {conv.id}",
            hint="change what is sent, or agree a new convenzione",
            errors=reasons,
        )
    recipient_party = conv.party(recipient)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": pid,
        "created_at": now.isoformat(timespec="seconds"),
        "flow": flow,
        "sender": home.party,
        "recipient": recipient,
        "convenzione": conv.id,
        "convenzione_sha256": cf.digest,
        "purpose": conv.purpose,
        "kind": kind,
        "period": {"start": period[0].isoformat(), "end": period[1].isoformat()},
        "pseudonym_domain": recipient_party.pseudonym_domain,
        "tables": tables,
        "payload": {
            "encoding": "jsonl",
            "sha256": crypto.sha256_hex(payload),
            "bytes": len(payload),
        },
        "indicators": indicators,
        "sender_log_head": home.log.head(),
    }
    signature = crypto.sign(home.signing_key, PACKAGE_CONTEXT, crypto.canonical(manifest))
    plaintext = crypto.canonical({"manifest": manifest, "signature": signature}) + b"\n" + payload
    body = crypto.seal(plaintext, recipient_party.encryption_key, _info(recipient))
    headers = crypto.modi_headers(
        home.signing_key,
        sender=home.party,
        recipient=recipient,
        message_id=pid,
        issued=int(now.timestamp()),
        expires=int((now + VALIDITY).timestamp()),
        body=body,
        content_type=CONTENT_TYPE,
        claims={"convenzione": conv.id},
    )
    return Package(pid, manifest, body, headers)


# -- opening (recipient) -------------------------------------------------------------------
@dataclass
class Opened:
    """What a recipient learnt from a package, checked step by step."""

    body_sha256: str
    package_id: str | None = None
    sender: str | None = None
    convenzione: ConvenzioneFile | None = None
    manifest: dict[str, Any] | None = None
    rows: list[Row] = field(default_factory=list)
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: True once the sender is authenticated (JWS, decryption and manifest signature).
    authenticated: bool = False
    reasons: list[str] = field(default_factory=list)


_header = crypto.header


def peek(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The package id and sender the JWS *claims* (unverified: for replay look-up only)."""
    token = _header(headers, "Agid-JWT-Signature")
    if not token:
        return None, None
    try:
        _, claims = crypto.jws_unverified(token)
    except crypto.CryptoFailure:
        return None, None
    return (str(claims.get("jti")) or None), (str(claims.get("iss")) or None)


def open_package(
    home: Home,
    directory: Directory,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> Opened:
    """Verify a package received; ``reasons`` lists why it is refused (empty: it may load).

    Untrusted input (BLUEPRINT §8.4): whatever its shape, the answer is a refusal with a
    reason, never an exception.
    """
    out = Opened(body_sha256=crypto.sha256_hex(body))
    try:
        _open(out, home, directory, headers, body, now or dt.datetime.now(dt.UTC))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        out.reasons.append(
            "the package's headers, manifest or payload are malformed "
            "(a field is missing or has the wrong type)"
        )
    return out


_INDICATOR = re.compile(r"^[a-z0-9_]{1,60}$")


def _open(
    out: Opened,
    home: Home,
    directory: Directory,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
) -> None:
    claims = crypto.modi_claims(
        headers, body, what="package", resend="the sender should send it again"
    )
    if isinstance(claims, str):
        out.reasons.append(claims)
        return
    sender, conv_id, pid = str(claims.get("iss")), str(claims.get("convenzione")), claims.get("jti")
    out.sender, out.package_id = sender, str(pid) if pid else None
    try:
        cf = directory.get(conv_id)
        party = cf.convenzione.party(sender)
    except (ConvenzioneError, KeyError):
        out.reasons.append(
            f"{sender} is not a party of a convenzione {conv_id!r} known to {home.party}"
        )
        return
    out.convenzione = cf
    verified = crypto.modi_verify(
        headers,
        body,
        sender=sender,
        sender_key=party.signing_key,
        me=home.party,
        kem_key=home.kem_key,
        info=_info(home.party),
        context=PACKAGE_CONTEXT,
        now=now.timestamp(),
        messages=MESSAGES,
    )
    if isinstance(verified, str):
        out.reasons.append(verified)
        return
    manifest, payload = verified.manifest, verified.payload
    out.manifest = manifest
    for name, expected, got in (
        ("id", out.package_id, manifest.get("id")),
        ("sender", sender, manifest.get("sender")),
        ("recipient", home.party, manifest.get("recipient")),
        ("convenzione", conv_id, manifest.get("convenzione")),
    ):
        if expected != got:
            out.reasons.append(f"the manifest's {name} {got!r} differs from {expected!r}")
    if out.reasons:
        return
    out.authenticated = True
    if manifest["payload"]["sha256"] != crypto.sha256_hex(payload):
        out.reasons.append("the payload does not match the digest the sender signed")
        return
    if manifest.get("convenzione_sha256") != cf.digest:
        out.reasons.append(
            f"the sender signed a different version of convenzione {conv_id}: "
            "both parties must hold the same signed file"
        )
    kind = manifest.get("kind")
    if kind == "records":
        try:
            out.rows = decode_payload(payload)
        except PackageRefused as e:
            out.reasons.append(e.message)
            return
        present: dict[str, set[str]] = {}
        counts: dict[str, list[int]] = {}
        for r in out.rows:
            present.setdefault(r.table, set()).update(r.values)
            c = counts.setdefault(r.table, [0, 0])
            c[r.op == "delete"] += 1
        for table, info in manifest["tables"].items():
            got_rows = counts.get(table, [0, 0])
            if [info.get("rows"), info.get("tombstones")] != got_rows:
                out.reasons.append(f"table {table!r}: the row counts differ from the manifest")
        tables: dict[str, Iterable[str]] = dict(present)
        indicators: dict[str, int] = {}
    else:
        try:
            for line in payload.split(b"\n"):
                if line:
                    obj = json.loads(line)
                    out.aggregates[str(obj["t"])] = dict(obj["table"])
        except (ValueError, KeyError, TypeError):
            out.reasons.append("the payload is not a valid set of aggregate tables")
            return
        declared = set(manifest.get("indicators", {}))
        if set(out.aggregates) != declared or not all(map(_INDICATOR.match, declared)):
            out.reasons.append("the payload's tables are not the indicators the manifest declares")
            return
        out.reasons += _disclosure(cf, sender, home.party, out.aggregates)
        tables = {}
        indicators = {k: int(v) for k, v in manifest.get("indicators", {}).items()}
    period = manifest.get("period", {})
    shape = PackageShape(
        convenzione=conv_id,
        sender=sender,
        recipient=home.party,
        purpose=str(manifest.get("purpose")),
        kind=str(kind),
        tables=tables,
        indicators=indicators,
        period_start=dt.date.fromisoformat(period["start"]),
        period_end=dt.date.fromisoformat(period["end"]),
    )
    out.reasons += refusals(cf, shape, now.date())
    created = dt.datetime.fromisoformat(str(manifest["created_at"]))
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    if not out.reasons and not frequency.erasure_only(str(kind), manifest["tables"]):
        why = frequency.refusal(
            cf,
            sender=sender,
            recipient=home.party,
            kind=str(kind),
            package=str(out.package_id),
            flow=str(manifest.get("flow") or out.package_id),
            created_at=created,
            past=frequency.received(home.log.entries(), conv_id, sender, str(kind)),
        )
        out.reasons += [why] if why else []


def _disclosure(
    cf: ConvenzioneFile,
    sender: str,
    recipient: str,
    aggregates: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    ks = {
        name: ind.k
        for f in cf.convenzione.flows_between(sender, recipient)
        for name, ind in f.indicators.items()
    }
    out: list[str] = []
    for name, table in aggregates.items():
        if name in ks:
            out += disclosure_problems(name, table, ks[name])
    return out


# -- receipts ----------------------------------------------------------------------------
def make_receipt(
    home: Home,
    opened: Opened,
    *,
    status: Literal["accepted", "refused"],
    counts: Mapping[str, int] | None = None,
    log_head: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "package": opened.package_id,
        "sender": opened.sender,
        "recipient": home.party,
        "convenzione": opened.convenzione.id if opened.convenzione else None,
        "body_sha256": opened.body_sha256,
        "status": status,
        "reasons": list(opened.reasons),
        "counts": dict(counts or {}),
        "at": now.isoformat(timespec="seconds"),
        "log_head": dict(log_head) if log_head else None,
    }
    receipt["signature"] = crypto.sign(home.signing_key, RECEIPT_CONTEXT, crypto.canonical(receipt))
    return receipt


def verify_receipt(receipt: Mapping[str, Any], package: Package, cf: ConvenzioneFile) -> None:
    """Raise unless ``receipt`` is the recipient's signed answer to exactly this package."""
    recipient = package.manifest["recipient"]
    body = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        key = cf.convenzione.party(recipient).signing_key
        crypto.verify(key, RECEIPT_CONTEXT, crypto.canonical(body), str(receipt.get("signature")))
    except (KeyError, crypto.CryptoFailure):
        raise PackageRefused(
            f"the receipt for package {package.id} is not signed by {recipient}",
            hint="the answer did not come from the recipient: the package stays pending",
        ) from None
    if receipt.get("package") != package.id or receipt.get("body_sha256") != package.body_digest:
        raise PackageRefused(
            f"the receipt does not cover package {package.id} as it was sent",
            hint="the package stays pending and is sent again",
        )
    head = receipt.get("log_head")
    if receipt.get("status") == "accepted":
        try:
            verify_head(head or {}, key)
        except crypto.CryptoFailure:
            raise PackageRefused(
                "the receipt carries no valid signed head of the recipient's log"
            ) from None
