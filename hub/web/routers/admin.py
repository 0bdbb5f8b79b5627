"""Administration: organisations and users (create, edit, disable, temporary password)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from hub.web import accounts
from hub.web.i18n import gettext
from hub.web.pages import AdminUser, Form, State, flash, render

router = APIRouter(include_in_schema=False)
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]

#: The accounts' (English, CLI) reasons, as the admin page says them.
MESSAGES = (
    ("the password must be at least", "The password must be at least 10 characters long."),
    ("unknown role", "Choose a role from the list."),
    ("the user name must be", "The user name must be 1 to 80 characters."),
    (
        "an ETS operator must belong",
        "A Third Sector operator belongs to a Third Sector organisation: choose it in "
        "«Organisation».",
    ),
    (
        "an admin belongs to no organisation",
        "An administrator belongs to no organisation: leave «Organisation» empty.",
    ),
    ("no organisation", "That organisation does not exist: create it first."),
    (
        "is not a Third Sector organisation",
        "That organisation is not a Third Sector one: choose a Third Sector organisation.",
    ),
    ("already exists", "This name is already taken: choose another."),
    ("the code may hold", "The code may hold letters, digits and . _ - (at most 40)."),
    ("the name must be", "The name must be 1 to 200 characters."),
    ("kind must be", "Choose a kind from the list."),
)


def italian(e: accounts.AccountError) -> str:
    for fragment, message in MESSAGES:
        if fragment in e.message:
            return gettext(message)
    return gettext("Check the data and retry.")


def _page(request: Request, state: State, status: int = 200, **ctx: object) -> HTMLResponse:
    ctx.setdefault("message", None)
    ctx.setdefault("temporary", None)
    return render(
        request,
        "admin.html",
        status,
        users=accounts.list_users(state.engine),
        orgs=accounts.list_organisations(state.engine),
        **ctx,
    )


@router.get("/admin")
def admin_page(request: Request, user: AdminUser, state: State) -> HTMLResponse:
    return _page(request, state)


@router.post("/admin/organisations")
def admin_create_org(request: Request, user: AdminUser, form: Form, state: State) -> Response:
    try:
        accounts.create_organisation(
            state.engine,
            str(form.get("code", "")),
            str(form.get("name", "")),
            str(form.get("kind", "ets")),
            state.config.hub.district,
        )
    except accounts.AccountError as e:
        return _page(request, state, 422, message=italian(e))
    flash(request, gettext("Organisation created."))
    return RedirectResponse("/admin", 303)


@router.post("/admin/organisations/{code}")
def admin_edit_org(
    code: str, request: Request, user: AdminUser, form: Form, state: State
) -> Response:
    try:
        found = accounts.update_organisation(state.engine, code[:40], str(form.get("name", "")))
    except accounts.AccountError as e:
        return _page(request, state, 422, message=italian(e))
    if not found:
        raise HTTPException(404, gettext("No such organisation."))
    flash(request, gettext("Organisation changed."))
    return RedirectResponse("/admin", 303)


@router.post("/admin/users")
def admin_create_user(request: Request, user: AdminUser, form: Form, state: State) -> Response:
    try:
        with state.hashing:
            accounts.create_user(
                state.engine,
                str(form.get("username", "")),
                str(form.get("password", "")),
                str(form.get("role", "")),
                str(form.get("org", "")) or None,
            )
    except accounts.AccountError as e:
        return _page(request, state, 422, message=italian(e))
    flash(request, gettext("User created."))
    return RedirectResponse("/admin", 303)


def _other(user_id: int, me: int) -> None:
    if user_id == me:
        raise HTTPException(400, gettext("You cannot change your own account here."))


@router.post("/admin/users/{user_id}")
def admin_edit_user(
    user_id: RowId, request: Request, user: AdminUser, form: Form, state: State
) -> Response:
    _other(user_id, user.id)
    try:
        accounts.update_user(
            state.engine, user_id, str(form.get("role", "")), str(form.get("org", "")) or None
        )
    except accounts.AccountError as e:
        return _page(request, state, 422, message=italian(e))
    state.store.end_sessions_of(user_id)  # a new role takes effect at the next sign-in
    flash(request, gettext("User changed."))
    return RedirectResponse("/admin", 303)


@router.post("/admin/users/{user_id}/stato")
def admin_toggle_user(
    user_id: RowId, request: Request, user: AdminUser, form: Form, state: State
) -> Response:
    _other(user_id, user.id)
    active = str(form.get("active", "0")) == "1"
    accounts.set_active(state.engine, user_id, active)
    if not active:
        state.store.end_sessions_of(user_id)
    flash(request, gettext("User enabled.") if active else gettext("User disabled."))
    return RedirectResponse("/admin", 303)


@router.post("/admin/users/{user_id}/password")
def admin_reset_password(
    user_id: RowId, request: Request, user: AdminUser, form: Form, state: State
) -> HTMLResponse:
    """A one-time temporary password, shown once; the user changes it after signing in."""
    _other(user_id, user.id)
    temporary = secrets.token_urlsafe(12)
    with state.hashing:
        accounts.set_password_of(state.engine, user_id, temporary)
    state.store.end_sessions_of(user_id)
    return _page(request, state, temporary=temporary)
