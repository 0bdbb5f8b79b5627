"""The district's pseudonymisation service (``raccordo pseudonymiser serve``).

The only holder of the pseudonym keys when consortia run their own workers. It answers
three questions, each over HTTP with a per-client bearer token:

* ``POST /v1/evaluate``: the RFC 9497 blind evaluation. The worker sends ``r · H(x)``
  for random ``r``, the service returns ``k · r · H(x)``, the worker multiplies by ``r⁻¹``.
  The service never sees an identifier nor a pseudonym; the worker never holds ``k``.
* ``POST /v1/convert``: pseudonyms of the client's domain to another domain, for a stated
  purpose and convenzione; the factor ``k_B · k_A⁻¹`` never leaves the service; every call
  is appended to the audit log. LOCAL pseudonyms are refused.
* ``POST /v1/reepoch``: pseudonyms of an old epoch to the current one (key rotation of a
  registry whose keys live here), for clients allowed to rotate.

Every client has a quota (identifiers per 24 hours) and a rate limit (identifiers per
minute): a request beyond either is refused with 429 and logged, so a stolen worker token
cannot enumerate the ~10⁹ plausible codici fiscali. The request log holds counts, never
values. See docs/pseudonymisation.md for the HTTP API.
"""

from __future__ import annotations

import binascii
import collections
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from hub.errors import ConfigError
from hub.pseudonyms import group
from hub.pseudonyms.keyring import Keyring
from hub.pseudonyms.pseudonymiser import b64url

log = logging.getLogger("raccordo.pseudonymiser")

MAX_BATCH = 10_000
#: Largest request body accepted: 10,000 elements of 43 characters plus JSON and a purpose.
MAX_BODY = 1_000_000
DAY = 24 * 3600.0
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
B64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]


# --- clients -----------------------------------------------------------------------------
class ClientSettings(BaseModel):
    """One client of the service (a consortium's worker, a district hub)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Code
    #: The pseudonymisation domain its identifiers belong to (its district).
    domain: Code
    #: SHA-256 (hex) of its token; the token itself is shown once, never stored.
    token_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    #: Identifiers it may have evaluated in any 24 hours (about its whole population).
    daily_quota: Annotated[int, Field(ge=0)] = 200_000
    #: Identifiers per minute.
    per_minute: Annotated[int, Field(ge=1)] = 100_000
    #: Domains it may convert its pseudonyms to (exchange under a convenzione).
    convert_to: tuple[Code, ...] = ()
    #: May move its domain's pseudonyms to the current epoch (key rotation of its registry).
    rotate: bool = False


class ClientsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    clients: list[ClientSettings] = Field(default_factory=list)


def token_digest(token: str) -> str:
    # Tokens are 256-bit random strings: a plain SHA-256 is enough to store them safely.
    return hashlib.sha256(token.encode()).hexdigest()


def load_clients(path: Path) -> ClientsFile:
    if not path.is_file():
        return ClientsFile()
    try:
        return ClientsFile.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as e:
        raise ConfigError(
            f"the clients file is not valid: {str(e).splitlines()[0]}",
            where=str(path),
            hint="it is written by `raccordo pseudonymiser add-client`; restore it from backup",
        ) from None


def add_client(path: Path, settings: dict[str, Any]) -> str:
    """Add a client with a new random token; returns the token (shown once)."""
    doc = load_clients(path)
    if any(c.id == settings["id"] for c in doc.clients):
        raise ConfigError(
            f"a client {settings['id']!r} already exists",
            where=str(path),
            hint="choose another id, or remove the old entry from the file first",
        )
    token = secrets.token_urlsafe(32)
    doc.clients.append(ClientSettings(**settings, token_sha256=token_digest(token)))
    _write_clients(path, doc)
    return token


def remove_client(path: Path, client_id: str) -> None:
    """Revoke a client (its token stops working when the service restarts)."""
    doc = load_clients(path)
    kept = [c for c in doc.clients if c.id != client_id]
    if len(kept) == len(doc.clients):
        raise ConfigError(
            f"no client {client_id!r}",
            where=str(path),
            hint="`raccordo pseudonymiser clients` lists them",
        )
    doc.clients = kept
    _write_clients(path, doc)


def _write_clients(path: Path, doc: ClientsFile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc.model_dump_json(indent=2), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


# --- logs --------------------------------------------------------------------------------
class _JsonLines:
    """An append-only JSON-lines file; with ``chain``, each line carries the SHA-256 of the
    previous one, so a deleted or edited line is detected (:func:`verify_chain`)."""

    def __init__(self, path: Path, *, chain: bool = False) -> None:
        self.path = path
        self.chain = chain
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._prev = ""
        if chain and path.is_file():
            lines = path.read_bytes().splitlines()
            self._prev = hashlib.sha256(lines[-1]).hexdigest() if lines else ""

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self.chain:
                entry = {**entry, "prev": self._prev}
            line = json.dumps(entry, sort_keys=True).encode()
            with self.path.open("ab") as f:
                f.write(line + b"\n")
                f.flush()
            if self.chain:
                self._prev = hashlib.sha256(line).hexdigest()

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_bytes().splitlines() if x.strip()]


def verify_chain(path: Path) -> bool:
    """True when every line of an audit log names the hash of the line before it."""
    return first_broken_line(path) is None


def first_broken_line(path: Path) -> int | None:
    """The number (from 1) of the first audit-log line that does not follow its predecessor."""
    prev = ""
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            ok = json.loads(line).get("prev") == prev
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            return n
        prev = hashlib.sha256(line).hexdigest()
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- quotas ------------------------------------------------------------------------------
@dataclass
class _Usage:
    events: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    def used(self, since: float) -> int:
        return sum(n for t, n in self.events if t >= since)

    def prune(self, before: float) -> None:
        while self.events and self.events[0][0] < before:
            self.events.popleft()


class _Limiter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, _Usage] = collections.defaultdict(_Usage)

    def seed(self, client: str, when: float, count: int) -> None:
        self._usage[client].events.append((when, count))

    def take(self, c: ClientSettings, count: int) -> str | None:
        """Record ``count`` identifiers for ``c``, or say why not (nothing recorded)."""
        with self._lock:
            now = self._clock()
            u = self._usage[c.id]
            u.prune(now - DAY)
            if u.used(now - DAY) + count > c.daily_quota:
                return "quota"
            if u.used(now - 60) + count > c.per_minute:
                return "rate"
            u.events.append((now, count))
            return None


# --- the application ---------------------------------------------------------------------
class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int | None = None
    elements: list[B64] = Field(max_length=MAX_BATCH)


class ConvertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_domain: Code
    purpose: Annotated[str, StringConstraints(min_length=3, max_length=200)]
    convenzione: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    #: What the pseudonyms stand for: people (CF, STP, ENI, provisional CF) or LOCAL ids.
    kind: Literal["person", "local"] = "person"
    from_epoch: int | None = None
    pseudonyms: list[B64] = Field(max_length=MAX_BATCH)


class ReepochRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_epoch: int
    pseudonyms: list[B64] = Field(max_length=MAX_BATCH)


def _decode(items: list[str], what: str) -> list[bytes]:
    out = []
    for n, s in enumerate(items):
        try:
            raw = binascii.a2b_base64(s.translate(str.maketrans("-_", "+/")) + "=")
        except binascii.Error:
            raw = b""
        if not group.is_element(raw):
            raise HTTPException(422, f"{what} number {n + 1} is not a ristretto255 element")
        out.append(raw)
    return out


def _encode(items: list[bytes]) -> list[str]:
    return [b64url(x) for x in items]


def create_service_app(
    keyring: Keyring,
    clients: ClientsFile,
    log_dir: Path,
    *,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    requests_log = _JsonLines(log_dir / "requests.jsonl")
    audit_log = _JsonLines(log_dir / "audit.jsonl", chain=True)
    limiter = _Limiter(clock)
    by_digest = {c.token_sha256: c for c in clients.clients}
    # Quotas survive a restart: the last 24 hours of accepted requests are counted again.
    horizon = clock() - DAY
    for e in requests_log.entries():
        if e.get("outcome") == "ok" and e.get("endpoint") == "evaluate":
            when = dt.datetime.fromisoformat(e["time"]).timestamp()
            if when >= horizon and e.get("client") in {c.id for c in clients.clients}:
                limiter.seed(e["client"], when, int(e["count"]))

    app = FastAPI(
        title="Raccordo pseudonymisation service",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def record(client: str, endpoint: str, count: int, outcome: str, **extra: Any) -> None:
        requests_log.append(
            {
                "time": _now(),
                "client": client,
                "endpoint": endpoint,
                "count": count,
                "outcome": outcome,
                **extra,
            }
        )

    def authenticate(request: Request) -> ClientSettings:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        client = None
        if scheme.lower() == "bearer" and token:
            digest = token_digest(token.strip())
            for known, c in by_digest.items():  # constant-time comparison of each digest
                if hmac.compare_digest(known, digest):
                    client = c
        if client is None:
            record("-", request.url.path.rsplit("/", 1)[-1], 0, "unauthenticated")
            log.warning("pseudonymiser: a request with a missing or unknown token was refused")
            raise HTTPException(401, "missing or unknown token", {"WWW-Authenticate": "Bearer"})
        return client

    def epoch_or_404(epoch: int | None) -> int:
        e = keyring.current_epoch if epoch is None else epoch
        if e not in keyring.epochs:
            raise HTTPException(404, f"epoch {e} is not held by this service")
        return e

    def limited(c: ClientSettings, endpoint: str, count: int) -> None:
        why = limiter.take(c, count)
        if why is not None:
            record(c.id, endpoint, count, f"refused_{why}")
            log.warning(
                "pseudonymiser: client %s refused: %s identifiers would exceed its %s",
                c.id,
                count,
                "24-hour quota" if why == "quota" else "per-minute rate",
            )
            detail = (
                f"over the 24-hour quota of {c.daily_quota} identifiers; ask the district "
                "to raise it if this is a legitimate first load"
                if why == "quota"
                else f"over the rate of {c.per_minute} identifiers per minute; retry later"
            )
            raise HTTPException(429, detail, {"Retry-After": "60"})

    @app.middleware("http")
    async def _bounded(request: Request, call_next: Callable[[Request], Any]) -> Any:
        length = request.headers.get("content-length")
        if length is None and request.method == "POST":
            return JSONResponse({"error": "a Content-Length header is required"}, 411)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse(
                {
                    "error": f"the body is larger than {MAX_BODY} bytes; send at most "
                    f"{MAX_BATCH} elements per request"
                },
                413,
            )
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (pydantic's errors quote it): only where and what.
        problems = [
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        ]
        return JSONResponse({"error": "the request body is not valid", "problems": problems}, 422)

    @app.get("/v1/session")
    def session(c: ClientSettings = Depends(authenticate)) -> dict[str, Any]:
        """What a client needs: its domain, the current epoch, its record key, limits."""
        record(c.id, "session", 0, "ok")
        return {
            "domain": c.domain,
            "epoch": keyring.current_epoch,
            "max_batch": MAX_BATCH,
            "record_key": _encode_key(keyring.record_key(c.domain, client=c.id)),
            "stable_factor": _encode_key(keyring.stable_factor(c.domain)),
            "daily_quota": c.daily_quota,
            "per_minute": c.per_minute,
        }

    @app.post("/v1/evaluate")
    def evaluate(body: EvaluateRequest, c: ClientSettings = Depends(authenticate)) -> Any:
        epoch = epoch_or_404(body.epoch)
        elements = _decode(body.elements, "element")
        limited(c, "evaluate", len(elements))
        k = keyring.pseudonym_scalar(c.domain, epoch)
        out = [group.multiply(k, e) for e in elements]
        record(c.id, "evaluate", len(out), "ok", epoch=epoch)
        return {"epoch": epoch, "elements": _encode(out)}

    @app.post("/v1/convert")
    def convert(body: ConvertRequest, c: ClientSettings = Depends(authenticate)) -> Any:
        n = len(body.pseudonyms)
        if body.kind == "local":
            record(c.id, "convert", n, "refused_local", to_domain=body.to_domain)
            raise HTTPException(
                422,
                "LOCAL pseudonyms are never converted: an ente's own ids must not become "
                "linkable outside it (docs/pseudonymisation.md)",
            )
        if body.to_domain not in c.convert_to:
            record(c.id, "convert", n, "refused_domain", to_domain=body.to_domain)
            raise HTTPException(
                403,
                f"client {c.id} may not convert to domain {body.to_domain}; the district "
                "allows a target domain once the convenzione is signed",
            )
        from_epoch = epoch_or_404(body.from_epoch)
        items = _decode(body.pseudonyms, "pseudonym")
        to_epoch = keyring.current_epoch
        factor = keyring.conversion_factor(c.domain, from_epoch, body.to_domain, to_epoch)
        out = [group.multiply(factor, p) for p in items]
        digest = hmac.new(keyring.audit_key(), b"".join(items), hashlib.sha256).hexdigest()
        audit_log.append(
            {
                "time": _now(),
                "client": c.id,
                "from_domain": c.domain,
                "from_epoch": from_epoch,
                "to_domain": body.to_domain,
                "to_epoch": to_epoch,
                "purpose": body.purpose,
                "convenzione": body.convenzione,
                "count": n,
                "digest": digest,
            }
        )
        record(c.id, "convert", n, "ok", to_domain=body.to_domain)
        return {"domain": body.to_domain, "epoch": to_epoch, "pseudonyms": _encode(out)}

    @app.post("/v1/reepoch")
    def reepoch(body: ReepochRequest, c: ClientSettings = Depends(authenticate)) -> Any:
        n = len(body.pseudonyms)
        if not c.rotate:
            record(c.id, "reepoch", n, "refused_rights")
            raise HTTPException(403, f"client {c.id} may not rotate its domain's pseudonyms")
        from_epoch = epoch_or_404(body.from_epoch)
        items = _decode(body.pseudonyms, "pseudonym")
        to_epoch = keyring.current_epoch
        factor = keyring.conversion_factor(c.domain, from_epoch, c.domain, to_epoch)
        out = [group.multiply(factor, p) for p in items]
        record(c.id, "reepoch", n, "ok", from_epoch=from_epoch, epoch=to_epoch)
        return {"epoch": to_epoch, "pseudonyms": _encode(out)}

    return app


def _encode_key(key: bytes) -> str:
    return b64url(key)
