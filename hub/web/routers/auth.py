"""Home, health check, sign in and out, one's own password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from hub.web import accounts
from hub.web.accounts import User
from hub.web.i18n import gettext
from hub.web.limits import client_address
from hub.web.pages import (
    Form,
    State,
    current_user,
    end_session,
    flash,
    render,
    require,
    start_session,
)

router = APIRouter(include_in_schema=False)
HOME = {"ets": "/schede", "admin": "/admin", "analyst": "/cruscotto"}


@router.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/")
def home(request: Request) -> Response:
    user = current_user(request)
    if user is None:
        return RedirectResponse("/login", 303)
    return RedirectResponse(HOME[user.role], 303)


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html")


def _address(request: Request, state: State) -> str:
    peer = request.client.host if request.client else "-"
    return client_address(peer, request.headers.get("x-forwarded-for"), state.trusted_proxies)


@router.post("/login")
def login(request: Request, form: Form, state: State) -> Response:
    username = str(form.get("username", ""))[:80]
    password = str(form.get("password", ""))[:200]
    addr = _address(request, state)
    if state.limiter.blocked(addr, username):
        return render(
            request,
            "login.html",
            429,
            error=gettext("Too many failed attempts: wait a few minutes and retry."),
        )
    with state.hashing:
        user = accounts.authenticate(state.engine, username, password)
    if user is None:
        state.limiter.failed(addr, username)
        return render(request, "login.html", 401, error=gettext("Wrong user name or password."))
    state.limiter.succeeded(addr, username)
    start_session(request, user)
    return RedirectResponse("/", 303)


@router.post("/logout")
def logout(request: Request, form: Form) -> Response:
    end_session(request)
    return RedirectResponse("/login", 303)


def _any_user(request: Request) -> User:
    return require("ets", "admin", "analyst")(request)


@router.get("/password")
def password_page(request: Request) -> HTMLResponse:
    _any_user(request)
    return render(request, "password.html", error=None)


@router.post("/password")
def change_password(request: Request, form: Form, state: State) -> Response:
    user = _any_user(request)
    current = str(form.get("current", ""))[:200]
    new = str(form.get("new", ""))[:200]
    if new != str(form.get("confirm", ""))[:200]:
        return render(request, "password.html", 422, error=gettext("The two new passwords differ."))
    with state.hashing:
        ok = accounts.authenticate(state.engine, user.username, current)
    if ok is None:
        return render(
            request, "password.html", 422, error=gettext("The current password is wrong.")
        )
    try:
        with state.hashing:
            accounts.set_password_of(state.engine, user.id, new)
    except accounts.AccountError:
        return render(
            request,
            "password.html",
            422,
            error=gettext("The password must be at least 10 characters long."),
        )
    # Every session of this user (on any device) ended with the old password.
    state.store.end_sessions_of(user.id)
    fresh = accounts.get_user(state.engine, user.id)
    assert fresh is not None
    start_session(request, fresh)
    flash(request, gettext("Password changed. Other devices have been signed out."))
    return RedirectResponse(HOME[user.role], 303)
