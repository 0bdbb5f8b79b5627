"""The JSON API of Third Sector organisations (``/api/v1``), authenticated by organisation tokens.

Handlers are plain ``def``: FastAPI runs them in threads, so a database wait
never holds the event loop.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from hub.schema.models import Need, ServiceGiven
from hub.web import accounts, intake
from hub.web.pages import State

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
    responses={**unauthorised, 200: {"model": EntryCreated}, 422: {"model": ApiError}},
)
def create_entry(
    entry: intake.EntryInput, response: Response, org: Org, state: State
) -> EntryCreated:
    """Store an entry. The identifier is pseudonymised at once; re-sending the same
    ``entry_id`` stores nothing new (answer 200 instead of 201)."""
    try:
        prepared = intake.prepare(
            entry, org=org, pseudonymiser=state.pseudonymiser, comuni=state.comuni
        )
        pk, created = state.writer.submit(prepared, org=org, user_id=None)
    except intake.IntakeProblem as p:
        raise HTTPException(422, str(p)) from None
    if not created:
        response.status_code = 200
    return EntryCreated(id=pk, entry_id=prepared.entry_uuid, tag=prepared.tag, created=created)


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
