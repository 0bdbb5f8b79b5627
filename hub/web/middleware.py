"""ASGI middleware of the web app: security headers and the session cookie, and a last
guard that turns any unexpected error into a plain 500 without logging what was sent."""

from __future__ import annotations

import logging
from http.cookies import SimpleCookie

from hub.web.limits import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("raccordo.web")

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; object-src 'none'"
)
NO_STORE_PREFIXES = ("/api/", "/schede", "/restituzione", "/caricamento", "/admin", "/cruscotto")


class Headers:
    """Security headers on every response, and the session cookie when it changed."""

    def __init__(self, app: ASGIApp, *, cookie_name: str, max_age: int, secure: bool) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.secure = secure

    def _cookie(self, value: str) -> bytes:
        c: SimpleCookie = SimpleCookie()
        c[self.cookie_name] = value
        m = c[self.cookie_name]
        m["path"] = "/"
        m["httponly"] = True
        m["samesite"] = "strict"
        m["max-age"] = self.max_age if value else 0
        if self.secure:
            m["secure"] = True
        return m.OutputString().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        path: str = scope["path"]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                if path.startswith(NO_STORE_PREFIXES):
                    extra.append((b"cache-control", b"no-store"))
                headers += [(k, v) for k, v in extra if k not in names]
                token = scope["state"].get("set_cookie")
                if token is not None:
                    headers.append((b"set-cookie", self._cookie(token)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class LastResort:
    """Any exception that escaped the app: a 500 with no detail, and a log line with only
    the route and the exception's type (its message or traceback could hold what was sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as e:
            log.error(
                "internal error on %s %s: %s", scope["method"], scope["path"], type(e).__name__
            )
            if started:
                return
            api = scope["path"].startswith("/api/")
            body = (
                b'{"detail":"internal error"}'
                if api
                else (
                    '<!doctype html><html lang="it"><head><meta charset="utf-8">'
                    "<title>Errore</title></head><body><main><h1>Si è verificato un errore"
                    "</h1><p>Riprova tra qualche minuto; se il problema continua, avvisa "
                    'l\'amministratore.</p><p><a href="/">Torna alla pagina iniziale</a>'
                    "</p></main></body></html>"
                ).encode()
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (
                            b"content-type",
                            b"application/json" if api else b"text/html; charset=utf-8",
                        ),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
