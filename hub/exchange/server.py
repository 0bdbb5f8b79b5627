"""``raccordo exchange serve``: the HTTP endpoint other hubs send packages to.

Routes:

- ``POST /v1/packages``: an HPKE-sealed package with its ``Digest`` and
  ``Agid-JWT-Signature`` headers → a signed receipt (200 accepted,
  422 refused under the convenzione, 400 refused before the sender was proven,
  413 too big).
- ``POST /v1/revocations``: another party's signed revocation of a convenzione
  (stored and logged once its signature verifies; every flow under it stops).
- ``GET /v1/log/consistency?old=M&new=N``: an RFC 9162 consistency proof between two
  sizes of this hub's log (a peer holding an older head checks the log only grew).
- ``GET /v1/status``: this party, its log head and its convenzioni's states.

It listens on loopback unless told otherwise, over HTTPS when ``tls_cert`` and
``tls_key`` are set in ``exchange.toml`` (or behind the district's TLS
terminator, or PDND). Packages carry their own end-to-end signature and
encryption either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hub.exchange.convenzioni import accept_revocation
from hub.exchange.errors import ConvenzioneError
from hub.exchange.home import Home
from hub.exchange.package import MAX_BODY
from hub.exchange.receive import Receiver
from hub.registry import Registry

_log = logging.getLogger("raccordo.exchange")


async def handle_sealed_post(
    request: Request,
    handle: Callable[[dict[str, str], bytes], tuple[int, dict[str, Any]]],
    *,
    party: str,
    what: str,
    max_body: int,
) -> JSONResponse:
    """A sealed message (a package, a push) posted to this hub: its body read up to
    ``max_body`` bytes (413 beyond), ``handle(headers, body)`` run off the event loop (it
    writes the registry), and its ``(status, receipt)`` answered.

    If ``handle`` fails (e.g. the registry is down), only the error's type is logged and
    answered (its text may quote SQL parameters, i.e. pseudonyms), with 503 and no receipt:
    the sender keeps the message pending and sends it again.
    """
    too_big = JSONResponse({"error": f"a {what} may be at most {max_body} bytes"}, status_code=413)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_body):
        return too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return too_big
    try:
        status, receipt = await run_in_threadpool(handle, dict(request.headers), bytes(body))
    except Exception as e:
        _log.error("%s not stored: %s", what, type(e).__name__)
        return JSONResponse(
            {"error": f"{party} could not store the {what} ({type(e).__name__}); "
             "send it again later"},
            status_code=503,
        )  # fmt: skip
    return JSONResponse(receipt, status_code=status)


def create_app(home: Home, registry: Registry | None) -> FastAPI:
    receiver = Receiver(home, registry)
    app = FastAPI(title=f"Raccordo exchange — {home.party}", docs_url=None, redoc_url=None)

    @app.post("/v1/packages")
    async def receive_package(request: Request) -> JSONResponse:
        return await handle_sealed_post(
            request, receiver.handle, party=home.party, what="package", max_body=MAX_BODY
        )

    @app.post("/v1/revocations")
    def revocation(document: dict[str, Any]) -> JSONResponse:
        """A party's signed revocation of a convenzione: stored once its signature verifies."""
        try:
            cf = home.convenzioni.get(str(document.get("convenzione")))
            rev = accept_revocation(cf.path, document)
        except ConvenzioneError as e:
            return JSONResponse({"error": e.message}, status_code=422)
        home.log.append("revoked", convenzione=cf.id, peer=rev.by, reason=rev.reason[:300])
        return JSONResponse({"convenzione": cf.id, "state": "revoked", "by": rev.by})

    @app.get("/v1/log/consistency")
    def consistency(old: int, new: int) -> JSONResponse:
        """RFC 9162 consistency proof between two sizes of this hub's log."""
        head = home.log.head()
        size = int(head["size"]) if head else 0
        if not 0 < old <= new <= size:
            return JSONResponse(
                {"error": f"sizes must satisfy 0 < old <= new <= {size}"}, status_code=422
            )
        return JSONResponse(home.log.consistency_proof(old, new))

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return {
            "party": home.party,
            "log_head": home.log.head(),
            "convenzioni": [{"id": c.id, "state": c.state()} for c in home.convenzioni.all()],
        }

    return app


def serve(home: Home, *, host: str, port: int) -> None:
    registry = Registry.open(home.settings.registry_url) if home.settings.registry_url else None
    tls = home.settings
    uvicorn.run(
        create_app(home, registry),
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=tls.tls_cert or None,
        ssl_keyfile=tls.tls_key or None,
    )
