"""Error answers: Italian HTML pages for pages, JSON for the API, never an echo of the input.

A validation error of the API lists where and what (location, message, type) but
never the value sent nor a field name the client made up: either could be a
codice fiscale. A page gets an Italian page with what to do next.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.web import intake
from hub.web.i18n import gettext
from hub.web.pages import Redirect, render

#: Field names a location may show; anything else is replaced.
_KNOWN = set(intake.EntryInput.model_fields) | {"body", "query", "path", "header", "cookie"}

TITLES = {
    400: "The request is not valid",
    401: "Sign in to continue",
    403: "Access denied",
    404: "Page not found",
    405: "The request is not valid",
    413: "The request is too large.",
    422: "Some data are not valid",
    429: "Too many requests",
    500: "Something went wrong",
}
MESSAGES = {
    404: "The page or the item you looked for does not exist (or was deleted).",
    422: "Check the data you sent and retry.",
    500: "Retry in a few minutes; if the problem continues, tell the administrator.",
}


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in errors:
        loc = [
            part if isinstance(part, int) or part in _KNOWN else "(unknown field)"
            for part in err.get("loc", ())
        ]
        msg = str(err.get("msg", ""))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.append(
            {"loc": loc, "msg": msg.encode("utf-8", "replace").decode(), "type": err.get("type")}
        )
    return out


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def error_page(request: Request, status: int, message: str | None = None) -> Response:
    title = gettext(TITLES.get(status, "Something went wrong"))
    text = message or gettext(
        MESSAGES.get(status, MESSAGES[422] if status < 500 else MESSAGES[500])
    )
    return await run_in_threadpool(render, request, "error.html", status, title=title, message=text)


def install(app: FastAPI) -> None:
    @app.exception_handler(Redirect)
    async def _redirect(request: Request, exc: Redirect) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)
        return await error_page(request, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        detail: str | None = exc.detail if isinstance(exc.detail, str) else None
        # Starlette's own English reasons ("Not Found") are replaced by ours.
        if detail in ("Not Found", "Method Not Allowed", "Bad Request", "Unauthorized"):
            detail = None
        return await error_page(request, exc.status_code, detail)
