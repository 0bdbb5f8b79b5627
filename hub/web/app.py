"""The web app: Third Sector entry, restituzione, admin, JSON API.

Server-rendered pages (Jinja2 + Bootstrap Italia, no client-side framework),
Italian texts from the translation catalogue. Sessions are signed cookies
(HttpOnly, SameSite=Strict, Secure unless ``[web] cookie_secure = false``);
every form carries a CSRF token bound to the session; logins are rate-limited.
Authorisation is enforced here, server-side, on every route: an ETS operator
only ever reaches rows of their own organisation.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import logging
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError
from starlette.middleware.sessions import SessionMiddleware

from hub.config import Config
from hub.pipeline import open_keyring
from hub.pseudonyms import Pseudonymiser, open_pseudonymiser
from hub.registry import Registry
from hub.schema.models import Need, ServiceGiven
from hub.web import accounts, intake, restituzione
from hub.web.accounts import User
from hub.web.comuni import Comune, load_comuni, parse_comune
from hub.web.i18n import gettext, translations

HERE = FilePath(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = STATIC / "vendor" / "bootstrap-italia"
log = logging.getLogger("raccordo.web")

#: Row ids in URLs: bounded, so a huge number is a clean 422, not a database error.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]

#: Labels of the closed lists, as message ids (translated in the catalogue).
NEED_LABELS = {
    Need.ECONOMIC: "Economic",
    Need.HOUSING: "Housing",
    Need.WORK: "Work",
    Need.FOOD: "Food",
    Need.HEALTH: "Health",
    Need.LONELINESS: "Loneliness, relations",
    Need.FAMILY: "Family, parenting",
    Need.LEGAL: "Legal, bureaucratic",
    Need.OTHER: "Other",
}
SERVICE_LABELS = {
    ServiceGiven.FOOD_PARCEL: "Food parcel",
    ServiceGiven.CLOTHING: "Clothing",
    ServiceGiven.LISTENING: "Listening, orientation",
    ServiceGiven.HOUSING_SUPPORT: "Housing support",
    ServiceGiven.JOB_ORIENTATION: "Job orientation",
    ServiceGiven.LEGAL_HELP: "Legal, bureaucratic help",
    ServiceGiven.EDUCATIONAL: "Educational, school support",
    ServiceGiven.GOODS: "Goods donation",
    ServiceGiven.TRANSPORT: "Transport",
    ServiceGiven.OTHER: "Other",
}
CSV_COLUMNS = (
    "tipo_identificativo",
    "identificativo",
    "comune_istat",
    "bisogni",
    "servizi",
    "data",
    "inviato_dai_servizi",
    "anno_nascita",
    "sesso",
)


@dataclass
class WebState:
    config: Config
    engine: sa.Engine
    pseudonymiser: Pseudonymiser
    comuni: dict[str, Comune]
    limiter: LoginLimiter
    writer: intake.IntakeWriter


class LoginLimiter:
    """Failed logins per (address, user name) in a sliding window, in memory.

    One process serves the app (``raccordo serve``); behind several workers
    each keeps its own window, which only makes the limit looser by that factor.
    """

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        q = self._failures[key]
        now = time.monotonic()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, addr: str, username: str) -> bool:
        return len(self._recent((addr, username.casefold()))) >= self.attempts

    def failed(self, addr: str, username: str) -> None:
        self._recent((addr, username.casefold())).append(time.monotonic())

    def succeeded(self, addr: str, username: str) -> None:
        self._failures.pop((addr, username.casefold()), None)


def _secret_key(config: Config) -> str:
    path = config.resolve(config.settings.web.secret_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def create_app(config: Config, registry: Registry | None = None) -> FastAPI:
    web = config.settings.web
    registry = registry or Registry.open(config.registry_url)
    keyring = open_keyring(config)
    comuni = load_comuni(config.resolve(web.comuni_file) if web.comuni_file else None)
    state = WebState(
        config=config,
        engine=registry.engine,
        pseudonymiser=open_pseudonymiser(config, keyring),
        comuni=comuni,
        limiter=LoginLimiter(web.login_attempts, web.login_window_minutes * 60),
        writer=intake.IntakeWriter(registry.engine),
    )
    app = FastAPI(
        title="Raccordo — API del Terzo Settore",
        version="1.0.0",
        description=(
            "Entries of Third Sector organisations (need signals). Authenticate with "
            "`Authorization: Bearer <token>`; a token belongs to one organisation and "
            "reaches only that organisation's entries. The identifier sent is "
            "pseudonymised at once and never stored nor returned."
        ),
        docs_url="/api/docs",
        swagger_ui_oauth2_redirect_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.web = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.add_extension("jinja2.ext.i18n")
    templates.env.install_gettext_translations(translations(), newstyle=True)  # type: ignore[attr-defined]
    templates.env.globals.update(
        need_labels=NEED_LABELS,
        service_labels=SERVICE_LABELS,
        comuni=comuni,
        district_name=config.hub.district_name or config.hub.district,
        vendor_ok=(VENDOR / "css" / "bootstrap-italia.min.css").exists(),
    )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "font-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.url.path.startswith(("/api/", "/schede", "/restituzione")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=_secret_key(config),
        session_cookie="raccordo_session",
        max_age=web.session_hours * 3600,
        same_site="strict",
        https_only=web.cookie_secure,
    )

    @app.exception_handler(_Redirect)
    async def _redirect(request: Request, exc: _Redirect) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # -- helpers ------------------------------------------------------------------
    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        user = current_user(request)
        return templates.TemplateResponse(
            request,
            name,
            {"user": user, "csrf": csrf_token(request), **ctx},
            status_code=status_code,
        )

    def current_user(request: Request) -> User | None:
        uid = request.session.get("uid")
        if not isinstance(uid, int):
            return None
        user = accounts.get_user(state.engine, uid)
        if user is None:
            request.session.clear()
        return user

    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return token

    async def checked_form(request: Request) -> Any:
        form = await request.form()
        sent = str(form.get("csrf_token", ""))
        expected = request.session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
            raise HTTPException(403, gettext("The form has expired: reload the page and retry."))
        return form

    def require(*roles: str) -> Callable[[Request], User]:
        def dependency(request: Request) -> User:
            user = current_user(request)
            if user is None:
                raise _Redirect("/login")
            if user.role not in roles:
                raise HTTPException(403, gettext("You cannot open this page."))
            return user

        return dependency

    ets_user = Depends(require("ets"))
    admin_user = Depends(require("admin"))
    analyst_user = Depends(require("analyst", "admin"))

    # -- pages ----------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        user = current_user(request)
        if user is None:
            return RedirectResponse("/login", 303)
        target = {"ets": "/schede", "admin": "/admin", "analyst": "/cruscotto"}[user.role]
        return RedirectResponse(target, 303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return render(request, "login.html")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await checked_form(request)
        username = str(form.get("username", ""))[:80]
        password = str(form.get("password", ""))[:200]
        addr = request.client.host if request.client else "-"
        if state.limiter.blocked(addr, username):
            return render(
                request,
                "login.html",
                429,
                error=gettext("Too many failed attempts: wait a few minutes and retry."),
            )
        user = accounts.authenticate(state.engine, username, password)
        if user is None:
            state.limiter.failed(addr, username)
            return render(request, "login.html", 401, error=gettext("Wrong user name or password."))
        state.limiter.succeeded(addr, username)
        request.session.clear()
        request.session["uid"] = user.id
        request.session["csrf"] = secrets.token_urlsafe(32)
        return RedirectResponse("/", 303)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    # -- ETS: entries -------------------------------------------------------------------
    @app.get("/schede", include_in_schema=False)
    def entries_page(request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        rows = intake.entries_of(state.engine, user.org)
        saved = request.query_params.get("salvata")
        return render(request, "entries.html", entries=rows, saved=saved)

    @app.get("/schede/nuova", include_in_schema=False)
    def new_entry_page(request: Request, user: User = ets_user) -> HTMLResponse:
        return render(request, "entry_form.html", values=_blank_values(), errors={})

    @app.post("/schede", include_in_schema=False)
    async def create_entry(request: Request, user: User = ets_user) -> Response:
        return await _entry_form_post(request, user, None)

    async def _entry_form_post(
        request: Request, user: User, editing: dict[str, Any] | None
    ) -> Response:
        """The form, new or edited: checked, pseudonymised, stored (never echoing a code)."""
        assert user.org
        form = await checked_form(request)
        values: dict[str, Any] = {
            "entry_id": str(form.get("entry_id", "")),
            "identifier_kind": str(form.get("identifier_kind", "cf")),
            "identifier": str(form.get("identifier", ""))[:40],
            "comune": str(form.get("comune", "")),
            "needs": [str(v) for v in form.getlist("needs")],
            "services_given": [str(v) for v in form.getlist("services_given")],
            "on": str(form.get("on", "")),
            "referred": str(form.get("referred", "0")),
            "birth_year": str(form.get("birth_year", "")),
            "sex": str(form.get("sex", "")),
        }
        keep = editing is not None and values["identifier_kind"] == "keep"
        errors: dict[str, str] = {}
        code = parse_comune(values["comune"], state.comuni)
        if code is None:
            errors["comune"] = gettext("Choose a comune of the district from the list.")
        kind = "none" if keep else values["identifier_kind"]
        raw: dict[str, Any] = {
            "entry_id": (editing or {}).get("entry_uuid") or values["entry_id"] or None,
            "identifier_kind": kind,
            "identifier": values["identifier"] if kind != "none" else "",
            "comune_istat": code or "000000",
            "needs": values["needs"],
            "services_given": values["services_given"],
            "on": values["on"] or dt.date.today().isoformat(),
            "referred_by_social_services": values["referred"] == "1",
            "birth_year": values["birth_year"] or None,
            "sex": values["sex"] or None,
        }
        if kind == "cf" or (keep and editing and editing["identifier_kind"] != "none"):
            raw["birth_year"] = raw["sex"] = None
        entry: intake.EntryInput | None = None
        try:
            entry = intake.EntryInput.model_validate(raw)
        except ValidationError as e:
            errors.update(_form_errors(e))
        if entry is not None and not errors:
            try:
                prepared = intake.prepare(
                    entry, org=user.org, pseudonymiser=state.pseudonymiser, comuni=state.comuni
                )
                if editing is None:
                    state.writer.submit(prepared, org=user.org, user_id=user.id)
                elif not intake.update(
                    state.engine, editing["id"], prepared, org=user.org, keep_person=keep
                ):
                    raise HTTPException(404, gettext("No such entry."))
            except intake.IntakeProblem as p:
                errors[p.field if p.field != "comune_istat" else "comune"] = gettext(p.message)
        if errors:
            values["identifier"] = ""  # never echo an identifier back into the page
            return render(
                request, "entry_form.html", 422, values=values, errors=errors, editing=editing
            )
        return RedirectResponse("/schede?salvata=1", 303)

    @app.get("/schede/{entry_id}/modifica", include_in_schema=False)
    def edit_entry_page(entry_id: RowId, request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        row = intake.entry_of(state.engine, user.org, entry_id)
        if row is None:
            raise HTTPException(404, gettext("No such entry."))
        com = state.comuni.get(row["comune_istat"])
        values = {
            "entry_id": row["entry_uuid"],
            "identifier_kind": "keep",
            "identifier": "",
            "comune": com.label if com else row["comune_istat"],
            "needs": row["needs"],
            "services_given": row["services_given"],
            "on": row["on"].isoformat(),
            "referred": "1" if row["referred_by_social_services"] else "0",
            "birth_year": "" if row["birth_year"] is None else str(row["birth_year"]),
            "sex": row["sex"] or "",
        }
        return render(request, "entry_form.html", values=values, errors={}, editing=row)

    @app.post("/schede/{entry_id}/modifica", include_in_schema=False)
    async def edit_entry(entry_id: RowId, request: Request, user: User = ets_user) -> Response:
        assert user.org
        row = intake.entry_of(state.engine, user.org, entry_id)
        if row is None:
            raise HTTPException(404, gettext("No such entry."))
        return await _entry_form_post(request, user, row)

    @app.get("/schede/{entry_id}", include_in_schema=False)
    def entry_page(entry_id: RowId, request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        row = intake.entry_of(state.engine, user.org, entry_id)
        if row is None:
            raise HTTPException(404, gettext("No such entry."))
        return render(request, "entry.html", entry=row)

    @app.post("/schede/{entry_id}/elimina", include_in_schema=False)
    async def delete_entry(entry_id: RowId, request: Request, user: User = ets_user) -> Response:
        assert user.org
        await checked_form(request)
        if not intake.delete(state.engine, entry_id, org=user.org):
            raise HTTPException(404, gettext("No such entry."))
        return RedirectResponse("/schede", 303)

    @app.get("/restituzione", include_in_schema=False)
    def restituzione_page(request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        data = restituzione.build(
            state.engine, user.org, state.comuni, k=config.settings.observatory.k
        )
        return render(request, "restituzione.html", r=data)

    # -- ETS: CSV upload ---------------------------------------------------------------
    @app.get("/caricamento", include_in_schema=False)
    def upload_page(request: Request, user: User = ets_user) -> HTMLResponse:
        return render(request, "upload.html", report=None)

    @app.get("/caricamento/modello.csv", include_in_schema=False)
    def upload_template(user: User = ets_user) -> Response:
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=";")
        w.writerow(CSV_COLUMNS)
        first = next(iter(state.comuni), "000000")
        w.writerow(
            [
                "none",
                "",
                first,
                "food|housing",
                "food_parcel",
                dt.date.today().isoformat(),
                "0",
                "1980",
                "F",
            ]
        )
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="modello-schede.csv"'},
        )

    @app.post("/caricamento", include_in_schema=False)
    async def upload(request: Request, user: User = ets_user) -> Response:
        assert user.org
        form = await checked_form(request)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return render(
                request, "upload.html", 422, report=None, error=gettext("Choose a CSV file.")
            )
        data = await upload.read(web.max_upload_bytes + 1)
        if len(data) > web.max_upload_bytes:
            return render(
                request, "upload.html", 413, report=None, error=gettext("The file is too large.")
            )
        report = _load_csv(data, user)
        return render(request, "upload.html", report=report)

    # -- ETS: API tokens ----------------------------------------------------------------
    @app.get("/token", include_in_schema=False)
    def tokens_page(request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        return render(
            request,
            "tokens.html",
            tokens=accounts.list_tokens(state.engine, user.org),
            new_token=None,
        )

    @app.post("/token", include_in_schema=False)
    async def create_token(request: Request, user: User = ets_user) -> HTMLResponse:
        assert user.org
        form = await checked_form(request)
        token = accounts.create_token(state.engine, user.org, str(form.get("label", "")))
        return render(
            request,
            "tokens.html",
            tokens=accounts.list_tokens(state.engine, user.org),
            new_token=token,
        )

    @app.post("/token/{token_id}/revoca", include_in_schema=False)
    async def revoke_token(token_id: RowId, request: Request, user: User = ets_user) -> Response:
        assert user.org
        await checked_form(request)
        if not accounts.revoke_token(state.engine, user.org, token_id):
            raise HTTPException(404, gettext("No such token."))
        return RedirectResponse("/token", 303)

    # -- admin --------------------------------------------------------------------------
    @app.get("/admin", include_in_schema=False)
    def admin_page(request: Request, user: User = admin_user) -> HTMLResponse:
        return render(
            request,
            "admin.html",
            users=accounts.list_users(state.engine),
            orgs=accounts.list_organisations(state.engine),
            message=None,
        )

    @app.post("/admin/organisations", include_in_schema=False)
    async def admin_create_org(request: Request, user: User = admin_user) -> Response:
        form = await checked_form(request)
        try:
            accounts.create_organisation(
                state.engine,
                str(form.get("code", "")),
                str(form.get("name", "")),
                str(form.get("kind", "ets")),
                config.hub.district,
            )
        except accounts.AccountError as e:
            return _admin_error(request, e)
        return RedirectResponse("/admin", 303)

    @app.post("/admin/users", include_in_schema=False)
    async def admin_create_user(request: Request, user: User = admin_user) -> Response:
        form = await checked_form(request)
        try:
            accounts.create_user(
                state.engine,
                str(form.get("username", "")),
                str(form.get("password", "")),
                str(form.get("role", "")),
                str(form.get("org", "")) or None,
            )
        except accounts.AccountError as e:
            return _admin_error(request, e)
        return RedirectResponse("/admin", 303)

    @app.post("/admin/users/{user_id}/stato", include_in_schema=False)
    async def admin_toggle_user(
        user_id: RowId, request: Request, user: User = admin_user
    ) -> Response:
        form = await checked_form(request)
        if user_id == user.id:
            raise HTTPException(400, gettext("You cannot disable yourself."))
        accounts.set_active(state.engine, user_id, str(form.get("active", "0")) == "1")
        return RedirectResponse("/admin", 303)

    def _admin_error(request: Request, e: accounts.AccountError) -> HTMLResponse:
        return render(
            request,
            "admin.html",
            422,
            users=accounts.list_users(state.engine),
            orgs=accounts.list_organisations(state.engine),
            message=e.message,
        )

    # -- analyst --------------------------------------------------------------------------
    @app.get("/cruscotto", include_in_schema=False)
    def dashboard_page(
        request: Request,
        user: User = analyst_user,
        anno: int | None = None,
        org: str | None = None,
        comune: str | None = None,
    ) -> HTMLResponse:
        from hub.web import dashboard

        all_orgs = [
            (str(o["code"]), str(o["name"]))
            for o in accounts.list_organisations(state.engine)
            if o["kind"] in ("ente_gestore", "ets")
        ]
        # An analyst bound to a consortium sees that consortium only, whatever the URL says.
        chosen = user.org if user.org else (org or None)
        if chosen and chosen not in {c for c, _ in all_orgs}:
            chosen = None
        data = dashboard.build(
            state.engine,
            state.comuni,
            year=anno,
            org=chosen,
            comune=parse_comune(comune, state.comuni) if comune else None,
            orgs=[] if user.org else all_orgs,
        )
        return render(request, "dashboard.html", d=data)

    # -- JSON API ---------------------------------------------------------------------------
    app.include_router(_api_router(state))

    def _load_csv(data: bytes, user: User) -> list[dict[str, Any]]:
        assert user.org
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
        reader = csv.DictReader(io.StringIO(text), delimiter=";" if ";" in text[:500] else ",")
        report: list[dict[str, Any]] = []
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            return [
                {
                    "line": 1,
                    "ok": False,
                    "message": gettext("Missing columns: ") + ", ".join(missing),
                }
            ]
        for n, row in enumerate(reader, start=2):
            try:
                entry = intake.EntryInput.model_validate(
                    {
                        "identifier_kind": (row.get("tipo_identificativo") or "none")
                        .strip()
                        .lower(),
                        "identifier": row.get("identificativo") or "",
                        "comune_istat": (row.get("comune_istat") or "").strip(),
                        "needs": [
                            x.strip() for x in (row.get("bisogni") or "").split("|") if x.strip()
                        ],
                        "services_given": [
                            x.strip() for x in (row.get("servizi") or "").split("|") if x.strip()
                        ],
                        "on": (row.get("data") or "").strip() or dt.date.today().isoformat(),
                        "referred_by_social_services": (
                            row.get("inviato_dai_servizi") or "0"
                        ).strip()
                        in ("1", "si", "sì", "SI"),
                        "birth_year": (row.get("anno_nascita") or "").strip() or None,
                        "sex": (row.get("sesso") or "").strip().upper() or None,
                        # one idempotency key per (organisation, file content, line): a file
                        # uploaded twice is stored once
                        "entry_id": str(
                            uuid.uuid5(uuid.NAMESPACE_URL, f"{user.org}:{hash_of(data)}:{n}")
                        ),
                    }
                )
                prepared = intake.prepare(
                    entry, org=user.org, pseudonymiser=state.pseudonymiser, comuni=state.comuni
                )
                _, created = state.writer.submit(prepared, org=user.org, user_id=user.id)
                report.append(
                    {
                        "line": n,
                        "ok": True,
                        "message": gettext("saved") if created else gettext("already loaded"),
                    }
                )
            except ValidationError as e:
                msgs = "; ".join(f"{k}: {v}" for k, v in _form_errors(e).items())
                report.append({"line": n, "ok": False, "message": msgs})
            except intake.IntakeProblem as p:
                report.append({"line": n, "ok": False, "message": gettext(p.message)})
        return report

    return app


def hash_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _blank_values() -> dict[str, Any]:
    return {
        "entry_id": str(uuid.uuid4()),
        "identifier_kind": "cf",
        "identifier": "",
        "comune": "",
        "needs": [],
        "services_given": [],
        "on": dt.date.today().isoformat(),
        "referred": "0",
        "birth_year": "",
        "sex": "",
    }


_FIELD_OF = {"comune_istat": "comune", "referred_by_social_services": "referred"}


def _form_errors(e: ValidationError) -> dict[str, str]:
    """Validation errors by form field, in Italian, without echoing any input."""
    out: dict[str, str] = {}
    for err in e.errors():
        loc = [str(x) for x in err["loc"]]
        name = _FIELD_OF.get(loc[0], loc[0]) if loc else "form"
        if err["type"] == "value_error" and not loc:
            name = "identifier"
        msg = {
            "needs": gettext("Tick at least one need."),
            "comune": gettext("Choose a comune of the district from the list."),
            "on": gettext("Write a valid date, not in the future."),
            "birth_year": gettext("Write the birth year with four digits."),
            "sex": gettext("Choose M or F."),
        }.get(name, gettext("Check this field."))
        if not loc:
            text = str(err.get("msg", ""))
            if "future" in text:
                name, msg = "on", gettext("Write a valid date, not in the future.")
            elif "missing" in text:
                msg = gettext("Write the identifier, or choose 'not available'.")
        out.setdefault(name, msg)
    return out


# -- JSON API --------------------------------------------------------------------------
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
    #: that does not match the schema, FastAPI's list of validation errors.
    detail: str | list[dict[str, Any]]


class ComuneOut(BaseModel):
    istat: str
    name: str


_bearer = HTTPBearer(auto_error=False, description="Token of an organisation (rac_...)")


def _api_router(state: WebState) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["entries"])
    unauthorised: dict[int | str, dict[str, Any]] = {401: {"model": ApiError}}

    def api_org(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        org = accounts.token_org(state.engine, creds.credentials)
        if org is None:
            raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
        return org

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
    def list_entries(org: str = Depends(api_org), limit: int = 100) -> list[EntryOut]:
        """The organisation's own entries, newest first (no identifiers)."""
        limit = max(1, min(limit, 1000))
        return [out(r) for r in intake.entries_of(state.engine, org, limit=limit)]

    @router.post(
        "/entries",
        status_code=201,
        responses={**unauthorised, 200: {"model": EntryCreated}, 422: {"model": ApiError}},
    )
    def create_entry(
        entry: intake.EntryInput, response: Response, org: str = Depends(api_org)
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
    def get_entry(entry_id: RowId, org: str = Depends(api_org)) -> EntryOut:
        row = intake.entry_of(state.engine, org, entry_id)
        if row is None:
            raise HTTPException(404, "no such entry")
        return out(row)

    @router.delete(
        "/entries/{entry_id}", status_code=204, responses={**unauthorised, 404: {"model": ApiError}}
    )
    def delete_entry(entry_id: RowId, org: str = Depends(api_org)) -> Response:
        if not intake.delete(state.engine, entry_id, org=org):
            raise HTTPException(404, "no such entry")
        return Response(status_code=204)

    @router.get("/comuni", tags=["vocabularies"], responses=unauthorised)
    def list_comuni(org: str = Depends(api_org)) -> list[ComuneOut]:
        """The district's comuni, for ``comune_istat``."""
        return [ComuneOut(istat=c.istat, name=c.name) for c in state.comuni.values()]

    return router
