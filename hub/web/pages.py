"""What every page router needs: templates, the server-side session, CSRF, roles.

Every dependency here that touches a database is a plain ``def`` (FastAPI runs it
in a thread) or hands its work to a thread: nothing waits on the event loop.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from hub.observatory.charts import it_number
from hub.observatory.notes import italian_note
from hub.web import accounts
from hub.web.accounts import User
from hub.web.i18n import gettext, ngettext, translations
from hub.web.labels import NEED_LABELS, ORG_KIND_LABELS, ROLE_LABELS, SERVICE_LABELS
from hub.web.state import WebState
from hub.web.store import Session

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = STATIC / "vendor" / "bootstrap-italia"
SESSION_COOKIE = "raccordo_session"


class Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def make_templates(state: WebState) -> Jinja2Templates:
    config = state.config
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.add_extension("jinja2.ext.i18n")
    templates.env.install_gettext_translations(translations(), newstyle=True)  # type: ignore[attr-defined]
    templates.env.filters["it_number"] = it_number
    templates.env.globals.update(
        need_labels=NEED_LABELS,
        service_labels=SERVICE_LABELS,
        role_labels=ROLE_LABELS,
        org_kind_labels=ORG_KIND_LABELS,
        comuni=state.comuni,
        district_name=config.hub.district_name or config.hub.district,
        vendor_ok=(VENDOR / "css" / "bootstrap-italia.min.css").exists(),
        ngettext=ngettext,
        note=italian_note,
    )
    return templates


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


async def _state(request: Request) -> WebState:
    """``web_state`` as a dependency: ``async`` (it waits on nothing), so FastAPI does not
    hand it to a thread on every request."""
    return web_state(request)


def session_of(request: Request) -> Session:
    """The browser's server-side session (a new anonymous one if it has none)."""
    cached: Session | None = getattr(request.state, "session", None)
    if cached is not None:
        return cached
    state = web_state(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = state.store.get_session(token) if token else None
    if session is None:
        session = state.store.new_session(state.config.settings.web.session_hours * 3600)
        request.state.set_cookie = session.token
    request.state.session = session
    return session


def start_session(request: Request, user: User) -> Session:
    """A new session for a user who just signed in (the old id is dropped: no fixation)."""
    state = web_state(request)
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        state.store.end_session(old)
    session = state.store.new_session(
        state.config.settings.web.session_hours * 3600, user.id, user.credential
    )
    request.state.session = session
    request.state.set_cookie = session.token
    return session


def end_session(request: Request) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        web_state(request).store.end_session(token)
    request.state.set_cookie = ""


def current_user(request: Request) -> User | None:
    if hasattr(request.state, "user"):
        cached: User | None = request.state.user
        return cached
    session = session_of(request)
    user = None
    if session.user_id is not None:
        user = accounts.session_user(
            web_state(request).engine, session.user_id, session.credential or ""
        )
        if user is None:  # disabled, or the password changed: the session ends here
            end_session(request)
            request.state.session = None
            session_of(request)
    request.state.user = user
    return user


def flash(request: Request, message: str) -> None:
    """A message shown once, on the next page (after a redirect)."""
    session = session_of(request)
    web_state(request).store.set_flash(session.token, message)


def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    state = web_state(request)
    user = current_user(request)
    session = session_of(request)
    message = session.flash
    if message:
        state.store.set_flash(session.token, None)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "csrf": session.csrf, "flash": message, **ctx},
        status_code=status_code,
    )


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matched the session's."""
    form = await request.form()
    session = await run_in_threadpool(session_of, request)
    sent = str(form.get("csrf_token", ""))
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(403, gettext("The form has expired: reload the page and retry."))
    return form


Form = Annotated[FormData, Depends(checked_form)]


def require(*roles: str) -> Callable[[Request], User]:
    def dependency(request: Request) -> User:
        user = current_user(request)
        if user is None:
            raise Redirect("/login")
        if user.role not in roles:
            raise HTTPException(403, gettext("You cannot open this page."))
        return user

    return dependency


EtsUser = Annotated[User, Depends(require("ets"))]
AdminUser = Annotated[User, Depends(require("admin"))]
AnalystUser = Annotated[User, Depends(require("analyst", "admin"))]
State = Annotated[WebState, Depends(_state)]
