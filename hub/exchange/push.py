"""Push mode: a consortium's worker pushes signed, encrypted batches to its district hub.

Two topologies, one code path (BLUEPRINT §3). On one machine ``raccordo sync`` runs the
four stages and writes the registry. In a district with several consortia each
consortium's *worker* runs only the first two, ``extract → pseudonymise`` (through the
district's pseudonymisation service: the worker holds no key), and pushes every batch,
already pseudonymised, to the district hub (``raccordo push serve``). The hub runs
``transform → load`` with the same :class:`hub.pipeline.Pipeline` a direct sync uses, so
mapping, validation, unchanged detection, quarantine and accounting are those of a
direct sync, and answers with a receipt it signs. The worker holds no registry URL and
no database credentials.

Every message is sealed the way exchange packages are (:mod:`hub.exchange.package`):
the worker signs a manifest (Ed25519) binding the payload's SHA-256, seals
``signed manifest + payload`` for the hub with HPKE, and sends it with the ``Digest``
and ``Agid-JWT-Signature`` headers. Three kinds of message make a run:

``open``    connector and stream → the hub starts a run and answers with the cursor
            it holds for that stream (reset if the hub's mapping version changed).
``batch``   one batch (records grouped by organisation, source errors, completed
            units as keyed hashes, the cursor that covers it) → loaded in one
            transaction *with its cursor*; the receipt carries the counts and the cursor.
``finish``  the run's outcome → the run summary.

**The cursor lives on the hub**, in the registry, committed in the same transaction as
the rows it covers, exactly as in a direct sync; the worker learns it from the receipt
of ``open`` and moves on only on the receipt of each batch. A worker that loses the hub
retries the same message (same id, same bytes) until it answers; a message the hub has
already answered gets its stored receipt again (idempotent). A worker killed midway
simply starts again: the next ``open`` returns the cursor of the last batch committed,
so nothing is lost and nothing is loaded twice.

**What a worker may do** is listed on the hub, in ``push_workers.json`` of the hub's
exchange home: the worker's public signing key and the organisations it speaks for.
A worker may open runs only of connectors configured on the hub for one of its
organisations, and every record group of a batch must name one of them (and, for a
connector that is not ``multi_org``, the connector's own); anything else is refused
with a reason and nothing of it is loaded. No route answers with registry rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import logging
import re
import threading
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.config import Config
from hub.connector import FieldRole, SourceError
from hub.errors import RaccordoError, RunFailed, SourceUnavailable
from hub.exchange import crypto, keyfile
from hub.exchange.errors import ExchangeError, PackageRefused, PeerUnavailable
from hub.exchange.home import Home, write_secret
from hub.exchange.receive import write_json_atomic
from hub.exchange.server import handle_sealed_post
from hub.observatory.aggregates import refresh as refresh_tables
from hub.pipeline import (
    Pipeline,
    PseudonymisedBatch,
    RunContext,
    RunProgress,
    build_connector,
    check_mapping_sources,
    load_connector_mapping,
    pseudonymised_batches,
)
from hub.pseudonyms import Pseudonymiser, open_pseudonymiser
from hub.pseudonyms.pseudonymiser import parse_pseudonym_text
from hub.pseudonyms.stage import INVALID_MARKER, Prepared
from hub.registry import BatchCounts, RunSummary, SyncRefused, storage_error

FORMAT = "raccordo-push/1"
RECEIPT_FORMAT = "raccordo-push-receipt/1"
CONTENT_TYPE = "application/vnd.raccordo.push+hpke"
MESSAGE_CONTEXT = "raccordo/push/v1"
RECEIPT_CONTEXT = "raccordo/push-receipt/v1"
WORKERS_FILE = "push_workers.json"
#: A message bigger than this is refused before it is read (bounded input, §8.4).
MAX_BODY = 256 * 1024 * 1024
#: What the hub says when a message fails the checks every sealed message gets.
MESSAGES = crypto.ModiMessages(
    expired="the message's signature has expired: the worker must sync again"
)
VALIDITY = dt.timedelta(days=2)
KINDS = ("open", "batch", "finish")
#: Kept beside a pushed stream's cursor: the batch message the cursor came with (a batch
#: sent again after its commit, its receipt lost, is recognised and not loaded twice).
MESSAGE_MARK = "_push_batch"

_log = logging.getLogger("raccordo.push")
#: How often ``push serve`` expires idle sync locks and purges old receipts.
HOUSEKEEPING_SECONDS = 60.0
_ID = re.compile(r"^[0-9a-f]{32}$")
_CODE = r"^[A-Za-z0-9_.-]{1,40}$"


def _info(hub: str) -> bytes:
    return f"{MESSAGE_CONTEXT}|{hub}".encode()


# -- values on the wire ----------------------------------------------------------------------
# Record values keep their Python type across the wire (a date stays a date), so the hub
# maps exactly what a direct sync would map.
_TAG = "\x00t"


def _encode_value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {_TAG: "datetime", "v": v.isoformat()}
    if isinstance(v, dt.date):
        return {_TAG: "date", "v": v.isoformat()}
    if isinstance(v, decimal.Decimal):
        return {_TAG: "decimal", "v": str(v)}
    if isinstance(v, bytes):
        return {_TAG: "bytes", "v": crypto.b64e(v)}
    if isinstance(v, tuple):
        return {_TAG: "tuple", "v": [_encode_value(x) for x in v]}
    if isinstance(v, list):
        return [_encode_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _encode_value(x) for k, x in v.items()}
    return v


def _decode_hook(obj: dict[str, Any]) -> Any:
    tag = obj.get(_TAG)
    if tag is None:
        return obj
    v = obj["v"]
    if tag == "datetime":
        return dt.datetime.fromisoformat(v)
    if tag == "date":
        return dt.date.fromisoformat(v)
    if tag == "decimal":
        return decimal.Decimal(v)
    if tag == "bytes":
        return crypto.b64d(v)
    if tag == "tuple":
        return tuple(v)
    raise ValueError(f"unknown value type {tag!r}")


def _dumps(obj: Any) -> bytes:
    return json.dumps(_encode_value(obj), separators=(",", ":"), ensure_ascii=False).encode()


def _loads(data: bytes) -> Any:
    return json.loads(data, object_hook=_decode_hook)


_PREPARED_FIELDS = Prepared._fields


def _prepared_out(p: Prepared) -> dict[str, Any]:
    """Every field of :class:`~hub.pseudonyms.stage.Prepared`, by name (tuples stay tuples)."""
    return {name: getattr(p, name) for name in _PREPARED_FIELDS}


def _plain(v: Any) -> bool:
    """A value of the small fixed types ``Prepared``'s own fields hold."""
    if v is None or isinstance(v, str | int):
        return True
    return isinstance(v, tuple) and all(map(_plain, v))


def _prepared_in(v: Mapping[str, Any]) -> Prepared:
    """A record as ``pseudonymise`` handed it on, from untrusted input (ValueError if not)."""
    if set(v) - set(_PREPARED_FIELDS):
        raise ValueError("unknown record fields")
    values = dict(v)
    if not isinstance(values.get("data"), dict) or values.get("op") not in ("upsert", "delete"):
        raise ValueError("not a record")
    if not isinstance(values.get("source_key_hash"), str):
        raise ValueError("not a record key")
    problems = values.get("problems", ())
    if not isinstance(problems, tuple) or not all(
        isinstance(x, tuple) and len(x) == 3 and all(isinstance(y, str) for y in x)
        for x in problems
    ):
        raise ValueError("not a list of problems")
    for name, value in values.items():
        if name != "data" and not _plain(value):
            raise ValueError(f"record field {name} has the wrong type")
    return Prepared(**values)


def _error_out(e: SourceError) -> dict[str, Any]:
    return dataclasses.asdict(e)


def _error_in(d: Mapping[str, Any]) -> SourceError:
    return SourceError(
        **{f.name: d[f.name] for f in dataclasses.fields(SourceError) if f.name in d}
    )


def _summary_out(s: RunSummary) -> dict[str, Any]:
    return dataclasses.asdict(s)


def _summary_in(d: Mapping[str, Any]) -> RunSummary:
    return RunSummary(**{f.name: d[f.name] for f in dataclasses.fields(RunSummary)})


# -- sealing and opening -------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    id: str
    kind: str
    body: bytes
    headers: dict[str, str]

    @property
    def body_digest(self) -> str:
        return crypto.sha256_hex(self.body)


def seal_message(
    key: ed25519.Ed25519PrivateKey,
    *,
    worker: str,
    hub: str,
    hub_encryption_key: str,
    kind: str,
    content: Mapping[str, Any],
    now: dt.datetime | None = None,
) -> Message:
    """Sign, seal for the hub and wrap in ModI-shaped headers (as exchange packages)."""
    now = now or dt.datetime.now(dt.UTC)
    mid = uuid.uuid4().hex
    payload = _dumps(dict(content))
    manifest = {
        "format": FORMAT,
        "id": mid,
        "kind": kind,
        "worker": worker,
        "hub": hub,
        "created_at": now.isoformat(timespec="seconds"),
        "payload": {"sha256": crypto.sha256_hex(payload), "bytes": len(payload)},
    }
    signature = crypto.sign(key, MESSAGE_CONTEXT, crypto.canonical(manifest))
    plaintext = crypto.canonical({"manifest": manifest, "signature": signature}) + b"\n" + payload
    body = crypto.seal(plaintext, hub_encryption_key, _info(hub))
    headers = crypto.modi_headers(
        key,
        sender=worker,
        recipient=hub,
        message_id=mid,
        issued=int(now.timestamp()),
        expires=int((now + VALIDITY).timestamp()),
        body=body,
        content_type=CONTENT_TYPE,
        claims={"kind": kind},
    )
    return Message(mid, kind, body, headers)


_header = crypto.header


@dataclass
class Opened:
    body_sha256: str
    message_id: str | None = None
    worker: str | None = None
    kind: str | None = None
    content: dict[str, Any] | None = None
    authenticated: bool = False
    reasons: list[str] = dataclasses.field(default_factory=list)


class WorkerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    signing_key: str
    #: The organisations (codes in the hub's raccordo.toml) this worker speaks for.
    orgs: list[str] = Field(min_length=1)


def read_workers(home: Home) -> dict[str, WorkerEntry]:
    p = home.path / WORKERS_FILE
    if not p.exists():
        return {}
    try:
        raw = json.loads(p.read_text())
        return {str(k): WorkerEntry.model_validate(v) for k, v in raw.items()}
    except (ValueError, ValidationError) as e:
        raise ExchangeError(
            f"not a valid list of push workers: {e}",
            where=str(p),
            hint="it is written by `raccordo push add-worker`",
        ) from None


def open_message(
    home: Home,
    workers: Mapping[str, WorkerEntry],
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> Opened:
    """Verify a message; ``reasons`` says why it is refused (untrusted input: never raises)."""
    out = Opened(body_sha256=crypto.sha256_hex(body))
    try:
        _open(out, home, workers, headers, body, now or dt.datetime.now(dt.UTC))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        out.reasons.append(
            "the message's headers, manifest or payload are malformed "
            "(a field is missing or has the wrong type)"
        )
    return out


def _open(
    out: Opened,
    home: Home,
    workers: Mapping[str, WorkerEntry],
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime,
) -> None:
    claims = crypto.modi_claims(headers, body, what="message", resend="the worker sends it again")
    if isinstance(claims, str):
        out.reasons.append(claims)
        return
    worker = str(claims.get("iss"))
    entry = workers.get(worker)
    if entry is None:
        out.reasons.append(
            f"{worker!r} is not a push worker of {home.party}: "
            "register it with `raccordo push add-worker`"
        )
        return
    verified = crypto.modi_verify(
        headers,
        body,
        sender=worker,
        sender_key=entry.signing_key,
        me=home.party,
        kem_key=home.kem_key,
        info=_info(home.party),
        context=MESSAGE_CONTEXT,
        now=now.timestamp(),
        messages=MESSAGES,
    )
    if isinstance(verified, str):
        out.reasons.append(verified)
        return
    claims, manifest, payload = verified.claims, verified.manifest, verified.payload
    for name, expected, got in (
        ("id", claims.get("jti"), manifest.get("id")),
        ("worker", worker, manifest.get("worker")),
        ("hub", home.party, manifest.get("hub")),
        ("kind", claims.get("kind"), manifest.get("kind")),
    ):
        if expected != got:
            out.reasons.append(f"the manifest's {name} {got!r} differs from {expected!r}")
    if out.reasons:
        return
    if not _ID.match(str(manifest["id"])) or manifest["kind"] not in KINDS:
        out.reasons.append("the manifest's id or kind is not valid")
        return
    out.worker, out.message_id, out.kind = worker, str(manifest["id"]), str(manifest["kind"])
    out.authenticated = True
    if manifest["payload"]["sha256"] != crypto.sha256_hex(payload):
        out.reasons.append("the payload does not match the digest the worker signed")
        return
    content = _loads(payload)
    if not isinstance(content, dict):
        raise TypeError
    out.content = content


def make_receipt(
    home: Home,
    opened: Opened,
    *,
    status: str,
    result: Mapping[str, Any] | None = None,
    log_head: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "message": opened.message_id,
        "kind": opened.kind,
        "worker": opened.worker,
        "hub": home.party,
        "body_sha256": opened.body_sha256,
        "status": status,
        "reasons": list(opened.reasons),
        "result": json.loads(_dumps(dict(result or {}))),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "log_head": dict(log_head) if log_head else None,
    }
    receipt["signature"] = crypto.sign(home.signing_key, RECEIPT_CONTEXT, crypto.canonical(receipt))
    return receipt


def verify_receipt(receipt: Mapping[str, Any], message: Message, hub_signing_key: str) -> None:
    """Raise unless ``receipt`` is the hub's signed answer to exactly this message."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        crypto.verify(
            hub_signing_key, RECEIPT_CONTEXT, crypto.canonical(body), str(receipt.get("signature"))
        )
    except crypto.CryptoFailure:
        raise PackageRefused(
            f"the receipt for message {message.id} is not signed by the hub",
            hint="check push.toml's hub_signing_key; the answer did not come from the hub",
        ) from None
    if receipt.get("message") != message.id or receipt.get("body_sha256") != message.body_digest:
        raise PackageRefused(f"the receipt does not cover message {message.id} as it was sent")


# -- the hub's side ----------------------------------------------------------------------------
class Refusal(Exception):
    """A message that is authentic but not allowed (answered 422 with the reason)."""


class PushReceiver:
    """The hub's receiving side; :meth:`handle` is what ``POST /v1/push`` calls."""

    def __init__(self, home: Home, pipeline: Pipeline) -> None:
        self.home = home
        self.pipeline = pipeline
        self.registry = pipeline.registry
        self.config = pipeline.config
        self.inbox = home.folder("inbox") / "push"
        self.inbox.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._contexts: dict[int, RunContext] = {}
        #: connector → the registry's sync lock, held from ``open`` to ``finish`` (a direct
        #: ``raccordo sync`` of the same connector is refused meanwhile, as between two
        #: direct syncs).
        self._locks: dict[str, contextlib.ExitStack] = {}
        #: connector → (worker, when it last sent a message of the run holding the lock).
        self._seen: dict[str, tuple[str, float]] = {}
        self.lock_idle = dt.timedelta(minutes=home.settings.push_lock_idle_minutes)
        #: run → the messages of it answered so far: their stored receipts go once the
        #: run's ``finish`` is accepted (the worker moves on only on a receipt).
        self._answered: dict[int, list[str]] = {}

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return self._handle(headers, body)

    def _stored(self, message_id: str | None) -> dict[str, Any] | None:
        if not message_id or not _ID.match(message_id):
            return None
        p = self.inbox / f"{message_id}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def _handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        token = _header(headers, "Agid-JWT-Signature") or ""
        try:
            claimed = str(crypto.jws_unverified(token)[1].get("jti"))
        except crypto.CryptoFailure:
            claimed = None
        stored = self._stored(claimed)
        if stored is not None and stored["body_sha256"] == crypto.sha256_hex(body):
            # The same message again (its receipt was lost): the same answer, nothing redone.
            return (200 if stored["status"] == "accepted" else 422), stored
        opened = open_message(self.home, read_workers(self.home), headers, body)
        if stored is not None and opened.authenticated:
            opened.reasons.append(f"message id {opened.message_id} was already used")
        if opened.reasons:
            return self._refuse(opened)
        assert opened.content is not None and opened.worker is not None
        entry = read_workers(self.home)[opened.worker]
        try:
            result = self._dispatch(str(opened.kind), opened.content, entry)
        except Refusal as e:
            opened.reasons.append(str(e))
            return self._refuse(opened)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            opened.reasons.append(
                f"the {opened.kind} message's content is malformed (a field is missing or "
                "has the wrong type)"
            )
            return self._refuse(opened)
        counts = result.get("counts", {})
        head = self.home.log.append(
            "received",
            package=opened.message_id,
            peer=opened.worker,
            digest=opened.body_sha256,
            kind_of_data=f"push-{opened.kind}",
            rows=counts.get("read"),
            loaded=counts.get("loaded"),
            unchanged=counts.get("unchanged"),
            quarantined=counts.get("quarantined"),
        )
        receipt = make_receipt(self.home, opened, status="accepted", result=result, log_head=head)
        write_json_atomic(self.inbox / f"{opened.message_id}.json", receipt)
        self._keep_inbox_small(opened, result)
        return 200, receipt

    # -- housekeeping ----------------------------------------------------------------------
    def _keep_inbox_small(self, opened: Opened, result: Mapping[str, Any]) -> None:
        """Drop the stored receipts of a finished run's earlier messages: the worker had
        each before it sent the next, so no replay of them can come any more (a batch
        committed whose receipt was lost is recognised by its id beside the cursor)."""
        run = result.get("run")
        if not isinstance(run, int) or opened.message_id is None:
            return
        if opened.kind != "finish":
            self._answered.setdefault(run, []).append(opened.message_id)
            return
        for message_id in self._answered.pop(run, []):
            (self.inbox / f"{message_id}.json").unlink(missing_ok=True)

    def purge_inbox(self, now: float | None = None) -> int:
        """Remove stored receipts older than a message's validity (a replay of one would be
        refused as expired anyway): those of runs that ended without ``finish`` and the
        ``finish`` receipts. How many were removed."""
        cutoff = (time.time() if now is None else now) - (VALIDITY * 2).total_seconds()
        removed = 0
        with self._lock:
            for p in self.inbox.glob("*.json"):
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
        return removed

    def expire_idle_locks(self, now: float | None = None) -> list[str]:
        """Release the sync lock of every connector whose worker sent nothing for
        ``lock_idle`` (it died or gave up): its open run is marked interrupted, and the
        next sync, direct or pushed, resumes from the last batch the hub acknowledged.
        The messages saying so (also logged and in the run's error)."""
        now = time.monotonic() if now is None else now
        said = []
        with self._lock:
            for name in list(self._locks):
                worker, last = self._seen.get(name, ("?", now))
                if now - last <= self.lock_idle.total_seconds():
                    continue
                runs = sorted(r for r, c in self._contexts.items() if c.connector == name)
                minutes = round(self.lock_idle.total_seconds() / 60)
                message = (
                    f"the sync lock of connector {name!r} expired: worker {worker} sent "
                    f"nothing for {minutes} minutes (it stopped or gave up); "
                    + (f"run {', '.join(map(str, runs))} marked interrupted; " if runs else "")
                    + "the next sync resumes from the last batch the hub acknowledged"
                )
                for run in runs:
                    self.registry.finish_run(run, status="interrupted", error=message)
                    del self._contexts[run]
                    self._answered.pop(run, None)
                    self.pipeline.forget_run(run)
                self._unlock_connector(name)
                self.home.log.append("lock-expired", peer=worker, reason=message)
                _log.warning("%s", message)
                said.append(message)
        return said

    def _refuse(self, opened: Opened) -> tuple[int, dict[str, Any]]:
        reason = "; ".join(opened.reasons)[:1000]
        _log.warning("push message refused: %s", reason)
        head = self.home.log.append(
            "refused",
            direction="in",
            package=opened.message_id if opened.authenticated else None,
            peer=opened.worker if opened.authenticated else None,
            digest=opened.body_sha256,
            reason=reason,
        )
        receipt = make_receipt(self.home, opened, status="refused", log_head=head)
        if opened.authenticated and opened.message_id:
            write_json_atomic(self.inbox / f"{opened.message_id}.json", receipt)
            return 422, receipt
        return 400, receipt

    # -- the three messages ----------------------------------------------------------------
    def _dispatch(self, kind: str, content: dict[str, Any], entry: WorkerEntry) -> dict[str, Any]:
        try:
            if kind == "open":
                return self._open_run(content, entry)
            if kind == "batch":
                return self._batch(content, entry)
            return self._finish(content, entry)
        except sa.exc.DBAPIError as e:
            raise storage_error(e) from None

    def _connector_allowed(self, name: str, entry: WorkerEntry) -> str:
        """The connector's organisation, once it is one of the worker's."""
        try:
            settings = self.config.connector(name)
        except RaccordoError:
            raise Refusal(
                f"connector {name!r} is not configured on hub {self.home.party}"
            ) from None
        if settings.org not in entry.orgs:
            raise Refusal(
                f"connector {name!r} belongs to organisation {settings.org}; this worker "
                f"speaks only for {', '.join(entry.orgs)}"
            )
        return settings.org

    def _open_run(self, content: dict[str, Any], entry: WorkerEntry) -> dict[str, Any]:
        name, stream_name = str(content["connector"]), str(content["stream"])
        org = self._connector_allowed(name, entry)
        settings = self.config.connector(name)
        connector = build_connector(self.config, name)
        streams = {s.name: s for s in connector.streams()}
        if stream_name not in streams:
            raise Refusal(f"connector {name!r} has no stream {stream_name!r} on the hub")
        stream = streams[stream_name]
        mapping = load_connector_mapping(self.config, name, connector, stream_name)
        check_mapping_sources(self.config, name, stream, mapping)
        self._lock_connector(name)
        self._seen[name] = (self._worker_code(entry), time.monotonic())
        for stale in [r for r, c in self._contexts.items() if c.connector == name]:
            del self._contexts[stale]  # superseded: one sync of a connector at a time
        ctx = self.pipeline.start_run(
            name,
            settings.type,
            org,
            connector,
            stream,
            mapping,
            full_refresh=bool(content.get("full_refresh")),
        )
        self._contexts[ctx.run_id] = ctx
        state = self.registry.get_state(name, stream_name)
        state.pop(MESSAGE_MARK, None)
        return {"run": ctx.run_id, "state": state}

    def _lock_connector(self, name: str) -> None:
        """Take the sync lock of ``name`` (a worker opening a new run after losing the last
        one gets it again: the same process holds it)."""
        if name in self._locks:
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self.registry.sync_lock(name))
        except SyncRefused as e:
            raise Refusal(f"{e.message}: try again when that sync has finished") from None
        self._locks[name] = stack

    def _unlock_connector(self, name: str) -> None:
        self._seen.pop(name, None)
        stack = self._locks.pop(name, None)
        if stack is not None:
            stack.close()

    def _context(self, run_id: int, entry: WorkerEntry) -> RunContext:
        """The open run ``run_id`` (rebuilt from the registry after a hub restart)."""
        try:
            summary = self.registry.run(run_id)
        except sa.exc.NoResultFound:
            raise Refusal(f"run {run_id} does not exist on hub {self.home.party}") from None
        self._connector_allowed(summary.connector, entry)
        if summary.status != "running":
            raise Refusal(
                f"run {run_id} is {summary.status}, not running: start the sync again "
                "(it resumes from the last batch the hub acknowledged)"
            )
        ctx = self._contexts.get(run_id)
        if ctx is None:
            self._lock_connector(summary.connector)  # the hub restarted during the run
            connector = build_connector(self.config, summary.connector)
            stream = {s.name: s for s in connector.streams()}[str(summary.stream)]
            mapping = load_connector_mapping(self.config, summary.connector, connector, stream.name)
            ctx = RunContext(
                connector=summary.connector,
                connector_type=summary.connector_type,
                org=summary.org,
                stream=stream,
                mapping=mapping,
                run_id=run_id,
                multi_org=connector.multi_org,
                retention=dt.timedelta(days=self.config.hub.quarantine_retention_days),
            )
            self._contexts[run_id] = ctx
        self._seen[ctx.connector] = (self._worker_code(entry), time.monotonic())
        return ctx

    def _worker_code(self, entry: WorkerEntry) -> str:
        return next(
            (code for code, e in read_workers(self.home).items() if e == entry), "(unknown)"
        )

    def _part(
        self, part: Mapping[str, Any], ctx: RunContext, entry: WorkerEntry
    ) -> tuple[list[tuple[str, list[Prepared]]], list[SourceError], list[str], Any]:
        groups = [(str(g["org"]), [_prepared_in(r) for r in g["records"]]) for g in part["groups"]]
        for g_org, _ in groups:
            if g_org not in entry.orgs:
                raise Refusal(
                    f"the batch claims records of organisation {g_org}; this worker speaks "
                    f"only for {', '.join(entry.orgs)}: nothing of it was loaded"
                )
            if not ctx.multi_org and g_org != ctx.org:
                raise Refusal(
                    f"connector {ctx.connector!r} loads only organisation {ctx.org}'s records, "
                    f"the batch claims {g_org}: nothing of it was loaded"
                )
        problem = _not_pseudonymised(ctx, groups, self.pipeline.pseudonymiser.epoch)
        if problem:
            raise Refusal(problem + ": nothing of the batch was loaded")
        state = part["state"]
        if state is not None and not isinstance(state, dict):
            raise TypeError
        errors = [_error_in(e) for e in part["errors"]]
        return groups or [(ctx.org, [])], errors, [str(u) for u in part["units"]], state

    def _batch(self, content: dict[str, Any], entry: WorkerEntry) -> dict[str, Any]:
        """One message: the batches read since the last cursor and the batch that carries
        the next one, loaded in one transaction with that cursor (as a direct sync
        commits them), so a cursor never lags behind the rows committed."""
        ctx = self._context(int(content["run"]), entry)
        parts = [self._part(p, ctx, entry) for p in content["parts"]]  # all checked first
        held = self.registry.get_state(ctx.connector, ctx.stream.name)
        states = [p[3] for p in parts if p[3] is not None]
        if held.get(MESSAGE_MARK) == content["message"]:
            # Committed before the hub stopped, the receipt lost: not loaded twice.
            state = states[-1] if states else None
            return {"run": ctx.run_id, "seq": content.get("seq"), "counts": _zero(), "state": state}
        held.pop(MESSAGE_MARK, None)
        # The message id goes with the cursor, in the same transaction as the rows.
        final = {**(states[-1] if states else held), MESSAGE_MARK: content["message"]}
        hub = self.config.hub
        tx = self.registry.load_transaction(
            commit_every=hub.commit_every,
            commit_seconds=hub.commit_seconds,
            sqlite_cache_mib=hub.sqlite_cache_mib,
        )
        total = BatchCounts()
        try:
            for pi, (groups, errors, units, state) in enumerate(parts):
                last_part = pi == len(parts) - 1
                for i, (g_org, prepared) in enumerate(groups):
                    last = i == len(groups) - 1
                    # As in a direct sync: errors, units and the cursor go with the last group.
                    counts = self.pipeline.load_prepared(
                        ctx,
                        g_org,
                        prepared,
                        errors=errors if last else [],
                        unit_hashes=units if last else [],
                        state=(final if last_part else state) if last else None,
                        tx=tx,
                    )
                    for f in ("read", "loaded", "unchanged", "quarantined", "duplicates"):
                        setattr(total, f, getattr(total, f) + getattr(counts, f))
            tx.close()
        except BaseException:
            tx.rollback()
            raise
        return {
            "run": ctx.run_id,
            "seq": content.get("seq"),
            "counts": {
                "read": total.read,
                "loaded": total.loaded,
                "unchanged": total.unchanged,
                "quarantined": total.quarantined,
                "duplicates": total.duplicates,
            },
            "state": {k: v for k, v in final.items() if k != MESSAGE_MARK},
        }

    def _finish(self, content: dict[str, Any], entry: WorkerEntry) -> dict[str, Any]:
        run_id = int(content["run"])
        ctx = self._context(run_id, entry)
        status = "succeeded" if content["status"] == "succeeded" else "failed"
        error = content.get("error")
        summary = self.registry.finish_run(
            run_id, status=status, error=None if error is None else str(error)[:1000]
        )
        self._contexts.pop(run_id, None)
        self.pipeline.forget_run(run_id)
        if not any(c.connector == ctx.connector for c in self._contexts.values()):
            self._unlock_connector(ctx.connector)
        tables = None
        if status == "succeeded" and content.get("refresh"):
            # What `raccordo sync` does after a direct sync: the observatory's tables.
            tables = refresh_tables(self.registry.engine)
        return {"run": run_id, "summary": _summary_out(summary), "refreshed_tables": tables}


def _not_pseudonymised(
    ctx: RunContext, groups: list[tuple[str, list[Prepared]]], epoch: int
) -> str | None:
    """Why the records are not what ``pseudonymise`` hands on (None: they are).

    The hub never stores what a worker did not pseudonymise: an identifier field must hold a
    pseudonym of the current epoch (or nothing, or the invalid marker), and no field the
    stream declares personal, or does not declare, may travel.
    """
    identifiers: set[str] = set()
    allowed: set[str] = set()
    for f in ctx.stream.fields:
        if f.role is FieldRole.IDENTIFIER:
            identifiers.add(f.name)
            allowed.update({f.name, f"{f.name}__birth_year", f"{f.name}__sex"})
        elif f.role is FieldRole.DATA:
            allowed.add(f.name)
    for _, records in groups:
        for p in records:
            extra = p.data.keys() - allowed
            if extra:
                return (
                    f"record at {p.location!r} carries field {min(extra)!r}, which stream "
                    f"{ctx.stream.name!r} does not pass on (personal or undeclared)"
                )
            for name in identifiers & p.data.keys():
                v = p.data[name]
                if v is None or v == INVALID_MARKER:
                    continue
                try:
                    ok = isinstance(v, str) and parse_pseudonym_text(v)[0] == epoch
                except ValueError:
                    ok = False
                if not ok:
                    return (
                        f"record at {p.location!r}: field {name!r} is not a pseudonym of the "
                        f"current epoch {epoch} (the worker must pseudonymise it)"
                    )
                person = dict(p.person_keys).get(name)
                if not (isinstance(person, str) and _PERSON_KEY.fullmatch(person)):
                    return (
                        f"record at {p.location!r}: field {name!r} comes without its person "
                        "key (a worker older than this hub? upgrade it)"
                    )
    return None


#: What :meth:`hub.pseudonyms.Pseudonymiser.person_key` gives.
_PERSON_KEY = re.compile(r"p1\.[A-Za-z0-9_-]{22}")


def create_push_app(home: Home, pipeline: Pipeline) -> FastAPI:
    """The hub's push endpoint: ``POST /v1/push`` (a sealed message → a signed receipt).

    While it runs, a thread expires the sync locks of workers gone quiet and purges the
    stored receipts nobody can need any more, once a minute."""
    receiver = PushReceiver(home, pipeline)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()

        def housekeeping() -> None:
            while not stop.wait(HOUSEKEEPING_SECONDS):
                try:
                    receiver.expire_idle_locks()
                    receiver.purge_inbox()
                except Exception as e:  # e.g. the registry is down: next minute
                    _log.error("push housekeeping failed: %s", type(e).__name__)

        thread = threading.Thread(target=housekeeping, name="push-housekeeping", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    app = FastAPI(
        title=f"Raccordo push — {home.party}", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.receiver = receiver

    @app.post("/v1/push")
    async def push(request: Request) -> JSONResponse:
        return await handle_sealed_post(
            request, receiver.handle, party=home.party, what="message", max_body=MAX_BODY
        )

    @app.get("/v1/push/status")
    def status() -> dict[str, Any]:
        return {"hub": home.party, "log_head": home.log.head()}

    return app


def serve_push(home: Home, pipeline: Pipeline, *, host: str, port: int) -> None:
    tls = home.settings
    uvicorn.run(
        create_push_app(home, pipeline),
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=tls.tls_cert or None,
        ssl_keyfile=tls.tls_key or None,
    )


# -- the worker's folder ---------------------------------------------------------------------
class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    worker: str = Field(pattern=_CODE)
    hub: str = Field(pattern=_CODE)
    hub_signing_key: str
    hub_encryption_key: str
    #: CA bundle (PEM) for an HTTPS push_url (default: the system's).
    ca_bundle: str = ""


@dataclass
class WorkerHome:
    path: Path
    settings: WorkerSettings
    signing_key: ed25519.Ed25519PrivateKey


def open_worker_home(path: Path) -> WorkerHome:
    cfg = path / "push.toml"
    try:
        settings = WorkerSettings.model_validate(tomllib.loads(cfg.read_text()))
        key = crypto.signing_key_from_bytes(
            keyfile.read(path / "keys" / "signing.key", "signing", keyfile.passphrase_from_env())
        )
    except FileNotFoundError as e:
        raise ExchangeError(
            f"the worker's push folder is incomplete ({Path(str(e.filename)).name} is missing)",
            where=str(path),
            hint="the hub's operator creates it with `raccordo push add-worker`; "
            "set [hub] push_home to where it is",
        ) from None
    except (ValueError, ValidationError, crypto.CryptoFailure) as e:
        raise ExchangeError(f"not a valid push folder: {e}", where=str(cfg)) from None
    return WorkerHome(path, settings, key)


def add_worker(home: Home, worker: str, orgs: list[str], out: Path) -> WorkerHome:
    """Register a worker on the hub and write its push folder (its key, the hub's keys).

    The folder is handed to the consortium (it holds the worker's private signing key:
    copy it as a secret); the hub keeps only the worker's public key.
    """
    if not re.match(_CODE, worker):
        raise ExchangeError(f"{worker!r} is not a valid worker code (letters, digits, . _ -)")
    workers = read_workers(home)
    if worker in workers:
        raise ExchangeError(
            f"worker {worker} is already registered",
            where=str(home.path / WORKERS_FILE),
            hint="remove its entry first to give it a new key",
        )
    if (out / "keys" / "signing.key").exists():
        raise ExchangeError("this folder already holds a worker key", where=str(out))
    passphrase = keyfile.new_passphrase(out, keyfile.WORKER_PASSPHRASE_ENV)
    (out / "keys").mkdir(parents=True, exist_ok=True)
    key = crypto.new_signing_key()
    write_secret(
        out / "keys" / "signing.key",
        keyfile.encrypted(crypto.private_bytes(key), passphrase, "signing"),
    )
    pub = home.public_keys()
    settings = WorkerSettings(
        worker=worker,
        hub=home.party,
        hub_signing_key=pub["signing_key"],
        hub_encryption_key=pub["encryption_key"],
    )
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.model_dump().items()]
    (out / "push.toml").write_text("\n".join(lines) + "\n")
    all_workers = {k: v.model_dump() for k, v in workers.items()}
    all_workers[worker] = WorkerEntry(signing_key=crypto.public_b64(key), orgs=orgs).model_dump()
    write_json_atomic(home.path / WORKERS_FILE, all_workers)
    return WorkerHome(out, settings, key)


def encrypt_worker_key(path: Path) -> bool:
    """Encrypt a worker's key written before keys were encrypted (the passphrase from
    ``RACCORDO_EXCHANGE_PASSPHRASE``, on the worker); False if it already was."""
    worker = open_worker_home(path)
    file = path / "keys" / "signing.key"
    if keyfile.is_encrypted(file):
        return False
    passphrase = keyfile.new_passphrase(path)
    keyfile.replace(
        file, keyfile.encrypted(crypto.private_bytes(worker.signing_key), passphrase, "signing")
    )
    open_worker_home(path)  # it opens with the passphrase
    return True


# -- the worker's side -----------------------------------------------------------------------
class PushClient:
    """Sends messages to the hub; retries one message until the hub answers it."""

    def __init__(
        self, url: str, home: WorkerHome, *, wait: float = 300.0, timeout: float = 300.0
    ) -> None:
        self.url = url.rstrip("/") + "/v1/push"
        self.home = home
        self.wait = wait
        self.timeout = timeout
        self._http = requests.Session()
        receipts = home.path / "receipts"
        receipts.mkdir(exist_ok=True)
        self.receipts = receipts

    def send(self, kind: str, content: Mapping[str, Any]) -> dict[str, Any]:
        s = self.home.settings
        msg = seal_message(
            self.home.signing_key,
            worker=s.worker,
            hub=s.hub,
            hub_encryption_key=s.hub_encryption_key,
            kind=kind,
            content=content,
        )
        deadline = time.monotonic() + self.wait
        pause = 0.2
        problem = ""
        while True:
            receipt = self._post(msg)
            if isinstance(receipt, dict):
                if receipt["status"] != "accepted":
                    raise PackageRefused(
                        f"hub {s.hub} refused the {kind} message",
                        errors=[str(r) for r in receipt.get("reasons", [])],
                        hint="nothing of it was loaded; fix what the reasons say",
                    )
                write_json_atomic(self.receipts / f"{msg.id}.json", receipt)
                return dict(_loads(json.dumps(receipt["result"]).encode()))
            problem = receipt
            if time.monotonic() > deadline:
                raise PeerUnavailable(
                    f"hub {s.hub} did not acknowledge the {kind} message: {problem}",
                    where=self.url,
                    hint="nothing is lost: the next sync resumes from the last batch the "
                    "hub acknowledged",
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _post(self, msg: Message) -> dict[str, Any] | str:
        """The verified receipt, or why there is none yet (then the message is sent again)."""
        try:
            resp = self._http.post(
                self.url,
                data=msg.body,
                headers=msg.headers,
                timeout=self.timeout,
                verify=self.home.settings.ca_bundle or True,
            )
        except requests.RequestException as e:
            return f"unreachable ({type(e).__name__})"
        try:
            receipt = resp.json()
        except ValueError:
            return f"HTTP {resp.status_code} without a receipt"
        if resp.status_code >= 500 or not isinstance(receipt, dict) or "signature" not in receipt:
            return f"HTTP {resp.status_code}: {str(receipt.get('error', 'no receipt'))[:300]}"
        try:
            verify_receipt(receipt, msg, self.home.settings.hub_signing_key)
        except PackageRefused as e:
            return e.message
        if resp.status_code == 400:
            # Refused before the hub could prove who sent it (e.g. altered in transit).
            return "; ".join(receipt.get("reasons", []))
        return receipt


ProgressCallback = Callable[[RunProgress], None]


def push_sync(
    config: Config,
    name: str,
    *,
    url: str | None = None,
    progress: ProgressCallback | None = None,
    full_refresh: bool = False,
    pseudonymiser: Pseudonymiser | None = None,
    wait: float = 300.0,
    refresh: bool = True,
    pseudonymiser_token: str | None = None,
) -> list[RunSummary]:
    """Sync connector ``name`` in push mode: one run per stream, loaded by the hub (which
    then refreshes the observatory's tables, unless ``refresh`` is false)."""
    target = url or config.hub.push_url
    if not target:
        raise ExchangeError(
            "push mode needs the hub's URL",
            where=f"{config.path} [hub] push_url",
            hint="set push_url to the district hub's `raccordo push serve` address",
        )
    home = open_worker_home(config.resolve(config.hub.push_home))
    client = PushClient(target, home, wait=wait)
    pseudo = pseudonymiser or open_pseudonymiser(config, None, token=pseudonymiser_token)
    connector = build_connector(config, name)
    summaries = []
    for stream in connector.streams():
        opened = client.send(
            "open", {"connector": name, "stream": stream.name, "full_refresh": full_refresh}
        )
        run_id, state = int(opened["run"]), dict(opened["state"] or {})
        totals = RunProgress(name, stream.name, run_id, 0, 0, 0, 0)
        sender = _StreamSender(client, run_id, totals, progress)
        try:
            try:
                for pb in pseudonymised_batches(config, pseudo, name, connector, stream, state):
                    sender.held.append(pb)
                    # Batches before the next cursor wait for it (one transaction with it),
                    # up to the records a direct sync commits at once.
                    if pb.state is not None or sender.records() >= config.hub.commit_every:
                        sender.push()
            except SourceUnavailable:
                sender.push()
                raise
            sender.push()
        except (SourceUnavailable, PackageRefused) as e:
            _finish_failed(client, run_id, e.message)
            raise RunFailed(
                f"run {run_id} of {name!r} stopped: {e.message}", where=e.where, hint=e.hint
            ) from None
        except RaccordoError as e:
            if not isinstance(e, PeerUnavailable):
                _finish_failed(client, run_id, e.message)
            raise RunFailed(
                f"run {run_id} of {name!r} stopped: {e.message}", where=e.where, hint=e.hint
            ) from None
        done = client.send("finish", {"run": run_id, "status": "succeeded", "refresh": refresh})
        summaries.append(_summary_in(done["summary"]))
    return summaries


class _StreamSender:
    """The batches of one run not sent yet, and the run's totals from the receipts."""

    def __init__(
        self,
        client: PushClient,
        run_id: int,
        totals: RunProgress,
        progress: ProgressCallback | None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.totals = totals
        self.progress = progress
        self.held: list[PseudonymisedBatch] = []
        self.seq = 0

    def records(self) -> int:
        return sum(len(r) for p in self.held for _, r in p.groups)

    def push(self) -> None:
        if not self.held:
            return
        result = self.client.send("batch", _batch_content(self.run_id, self.seq, self.held))
        self.held.clear()
        self.seq += 1
        c, t = result["counts"], self.totals
        t.read += c["read"]
        t.loaded += c["loaded"]
        t.unchanged += c["unchanged"]
        t.quarantined += c["quarantined"]
        t.duplicates += c["duplicates"]
        if self.progress:
            self.progress(t)


def _batch_content(run_id: int, seq: int, parts: list[PseudonymisedBatch]) -> dict[str, Any]:
    return {
        "run": run_id,
        "seq": seq,
        "message": uuid.uuid4().hex,
        "parts": [
            {
                "groups": [
                    {"org": org, "records": [_prepared_out(p) for p in records]}
                    for org, records in pb.groups
                ],
                "errors": [_error_out(e) for e in pb.errors],
                "units": pb.unit_hashes,
                "state": pb.state,
            }
            for pb in parts
        ],
    }


def _zero() -> dict[str, int]:
    return dict.fromkeys(("read", "loaded", "unchanged", "quarantined", "duplicates"), 0)


def _finish_failed(client: PushClient, run_id: int, error: str) -> None:
    try:
        client.send("finish", {"run": run_id, "status": "failed", "error": error})
    except RaccordoError:
        _log.warning("run %s could not be marked failed on the hub", run_id)


def iter_receipts(home: WorkerHome) -> Iterator[dict[str, Any]]:
    """The receipts this worker holds (what the hub acknowledged), oldest first."""
    folder = home.path / "receipts"
    for p in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
        yield json.loads(p.read_text())
