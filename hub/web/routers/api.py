"""The JSON API of Third Sector organisations (``/api/v1``), authenticated by organisation tokens.

Handlers are plain ``def`` (FastAPI runs them in threads, so a database wait never
holds the event loop), except the submission: the busiest route, it hands the entry
to the intake writer's thread and awaits the result, with no thread of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from hub.schema.models import Need, ServiceGiven
from hub.web import accounts, intake
from hub.web.pages import State
from hub.web.state import WebState

RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class EntryOut(BaseModel):
    id: int
    entry_id: str
    tag: str | None
    identifier_kind: str
    needs: list[Need]
    services_given: list[ServiceGiven]
    comune_istat: str
    on: dt.date
    referred_by_social_services: bool
    birth_year: int | None
    sex: str | None


class EntryCreated(BaseModel):
    id: int
    entry_id: str
    tag: str | None
    created: bool


class ApiError(BaseModel):
    #: A sentence (business rule refused, not found, unauthorised) or, for a request
    #: that does not match the schema, the list of validation errors (location,
    #: message, type: never the value sent).
    detail: str | list[dict[str, Any]]


class ComuneOut(BaseModel):
    istat: str
    name: str


_bearer = HTTPBearer(auto_error=False, description="Token of an organisation (rac_...)")
router = APIRouter(prefix="/api/v1", tags=["entries"])
docs_router = APIRouter()
unauthorised: dict[int | str, dict[str, Any]] = {401: {"model": ApiError}}


def api_org(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)], state: State
) -> str:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    org = accounts.token_org(state.engine, creds.credentials)
    if org is None:
        raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
    return org


Org = Annotated[str, Depends(api_org)]


@dataclass(frozen=True)
class Sender:
    org: str
    token_hash: str


async def api_sender(request: Request) -> Sender:
    """The organisation of a submission's token, without a database query per request.

    A token never changes organisation, so the answer is remembered; whether it is
    still valid (not revoked) is checked again in the transaction that stores the
    entry (:func:`hub.web.intake.store_many`), so a revocation still works at once.
    It reads the header itself, as ``HTTPBearer`` would (the route declares that
    scheme in the OpenAPI document): each dependency FastAPI solves costs the busiest
    route some CPU.
    """
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    state: WebState = request.app.state.web
    token_hash = accounts.token_hash(credentials)
    org = state.token_orgs.get(token_hash)
    if org is None:
        org = await run_in_threadpool(accounts.token_org, state.engine, credentials)
        if org is None:
            raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
        if len(state.token_orgs) >= TOKEN_CACHE_SIZE:
            state.token_orgs.clear()
        state.token_orgs[token_hash] = org
    return Sender(org, token_hash)


#: Tokens whose organisation a worker remembers (a district has a few dozen).
TOKEN_CACHE_SIZE = 10_000


def out(row: dict[str, Any]) -> EntryOut:
    return EntryOut(
        id=row["id"],
        entry_id=row["entry_uuid"],
        tag=row["tag"],
        identifier_kind=row["identifier_kind"],
        needs=row["needs"],
        services_given=row["services_given"],
        comune_istat=row["comune_istat"],
        on=row["on"],
        referred_by_social_services=row["referred_by_social_services"],
        birth_year=row["birth_year"],
        sex=row["sex"],
    )


@router.get("/entries", responses=unauthorised)
def list_entries(org: Org, state: State, limit: int = 100) -> list[EntryOut]:
    """The organisation's own entries, newest first (no identifiers)."""
    limit = max(1, min(limit, 1000))
    return [out(r) for r in intake.entries_of(state.engine, org, limit=limit)]


@router.post(
    "/entries",
    status_code=201,
    response_model=EntryCreated,
    responses={**unauthorised, 200: {"model": EntryCreated}, 422: {"model": ApiError}},
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
async def create_entry(
    entry: intake.EntryInput, request: Request, sender: Annotated[Sender, Depends(api_sender)]
) -> Response:
    """Store an entry. The identifier is pseudonymised at once; re-sending the same
    ``entry_id`` stores nothing new (answer 200 instead of 201)."""
    state: WebState = request.app.state.web
    # The writer thread checks, pseudonymises and stores it (group commit); this
    # coroutine only waits, holding no thread.
    pending = state.writer.enqueue(
        intake.Submission(entry, sender.org, token_hash=sender.token_hash)
    )
    try:
        stored = await asyncio.wait_for(asyncio.wrap_future(pending), timeout=60)
    except intake.TokenRevoked:
        state.token_orgs.pop(sender.token_hash, None)
        raise HTTPException(
            401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"}
        ) from None
    except intake.IntakeProblem as p:
        raise HTTPException(422, str(p)) from None
    body = {"id": stored.id, "entry_id": stored.entry_uuid, "tag": stored.tag}
    return JSONResponse({**body, "created": stored.created}, 201 if stored.created else 200)


@router.get("/entries/{entry_id}", responses={**unauthorised, 404: {"model": ApiError}})
def get_entry(entry_id: RowId, org: Org, state: State) -> EntryOut:
    row = intake.entry_of(state.engine, org, entry_id)
    if row is None:
        raise HTTPException(404, "no such entry")
    return out(row)


@router.delete(
    "/entries/{entry_id}", status_code=204, responses={**unauthorised, 404: {"model": ApiError}}
)
def delete_entry(entry_id: RowId, org: Org, state: State) -> Response:
    if not intake.delete(state.engine, entry_id, org=org):
        raise HTTPException(404, "no such entry")
    return Response(status_code=204)


@docs_router.get("/api/docs", include_in_schema=False)
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI, served from the app's own static files (allowed by its CSP)."""
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(request, "api_docs.html", {})
    return response


@router.get("/comuni", tags=["vocabularies"], responses=unauthorised)
def list_comuni(org: Org, state: State) -> list[ComuneOut]:
    """The district's comuni, for ``comune_istat``."""
    return [ComuneOut(istat=c.istat, name=c.name) for c in state.comuni.values()]
