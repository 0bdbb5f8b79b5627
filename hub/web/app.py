"""The web app: Third Sector entry, restituzione, admin, dashboard, JSON API.

Server-rendered pages (Jinja2 + Bootstrap Italia, no client-side framework),
Italian texts from the translation catalogue. Sessions are server-side (a
random id in an HttpOnly, SameSite=Strict cookie, Secure unless ``[web]
cookie_secure = false``), kept with the login limits and upload jobs in a
store every worker process shares (:mod:`hub.web.store`); every form carries
a CSRF token bound to the session. Authorisation is enforced server-side on
every route: an ETS operator only ever reaches rows of their own organisation.
Routes live in :mod:`hub.web.routers`, one module per audience.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser

from hub.config import Config
from hub.registry import Registry
from hub.web import errors, uploads
from hub.web.labels import CSV_COLUMNS, NEED_LABELS, SERVICE_LABELS
from hub.web.limits import BodyLimit
from hub.web.middleware import Headers, LastResort
from hub.web.pages import SESSION_COOKIE, STATIC, VENDOR, make_templates
from hub.web.routers import admin, api, auth, dashboard, entries, exchange, tokens, upload
from hub.web.state import build_state

__all__ = ["CSV_COLUMNS", "NEED_LABELS", "SERVICE_LABELS", "VENDOR", "create_app"]

API_DESCRIPTION = (
    "Entries of Third Sector organisations (need signals). Authenticate with "
    "`Authorization: Bearer <token>`; a token belongs to one organisation and "
    "reaches only that organisation's entries. The identifier sent is "
    "pseudonymised at once and never stored nor returned."
)


def create_app(config: Config, registry: Registry | None = None) -> FastAPI:
    web = config.settings.web
    state = build_state(config, registry)
    executor: list[Executor] = []

    def upload_executor() -> Executor:
        if not executor:
            executor.append(uploads.make_executor())
        return executor[0]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.writer.close()
        for ex in executor:
            ex.shutdown(wait=True, cancel_futures=False)

    app = FastAPI(
        title="Raccordo — API del Terzo Settore",
        version="1.0.0",
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        lifespan=lifespan,
    )
    # An uploaded CSV holds clear identifiers: keep it in memory (the body cap bounds it),
    # never spooled to a temporary file on disk.
    MultiPartParser.spool_max_size = max(
        MultiPartParser.spool_max_size, web.max_upload_bytes + 64 * 1024
    )
    app.state.web = state
    app.state.templates = make_templates(state)
    app.state.uploads = upload_executor
    errors.install(app)
    # The API first: routes are matched in order, and its submissions are the busiest.
    for module in (api, auth, entries, upload, tokens, admin, dashboard, exchange):
        app.include_router(module.router)
    app.include_router(api.docs_router)
    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    # Outermost last: the last resort wraps everything, the body cap comes before any route.
    app.add_middleware(
        BodyLimit,
        default=web.max_body_bytes,
        per_path={"/caricamento": web.max_upload_bytes + 64 * 1024},
    )
    app.add_middleware(
        Headers,
        cookie_name=SESSION_COOKIE,
        max_age=web.session_hours * 3600,
        secure=web.cookie_secure,
    )
    app.add_middleware(LastResort)
    return app
