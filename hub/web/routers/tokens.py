"""API tokens of an organisation: create (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from hub.web import accounts
from hub.web.i18n import gettext
from hub.web.pages import EtsUser, Form, State, flash, render

router = APIRouter(include_in_schema=False)
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/token")
def tokens_page(request: Request, user: EtsUser, state: State) -> HTMLResponse:
    assert user.org
    return render(
        request, "tokens.html", tokens=accounts.list_tokens(state.engine, user.org), new_token=None
    )


@router.post("/token")
def create_token(request: Request, user: EtsUser, form: Form, state: State) -> HTMLResponse:
    assert user.org
    token = accounts.create_token(state.engine, user.org, str(form.get("label", "")))
    return render(
        request,
        "tokens.html",
        tokens=accounts.list_tokens(state.engine, user.org),
        new_token=token,
    )


@router.post("/token/{token_id}/revoca")
def revoke_token(
    token_id: RowId, request: Request, user: EtsUser, form: Form, state: State
) -> Response:
    assert user.org
    if not accounts.revoke_token(state.engine, user.org, token_id):
        raise HTTPException(404, gettext("No such token."))
    flash(request, gettext("Token revoked."))
    return RedirectResponse("/token", 303)
