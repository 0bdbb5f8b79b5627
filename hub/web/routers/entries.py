"""A Third Sector operator's entries: list, form, edit, delete, download; the restituzione."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from hub.observatory import restituzione
from hub.observatory.comuni import parse_comune
from hub.web import intake, listing
from hub.web.accounts import User
from hub.web.i18n import gettext
from hub.web.labels import NEED_LABELS, SERVICE_LABELS
from hub.web.pages import EtsUser, Form, State, flash, render

router = APIRouter(include_in_schema=False)

#: Row ids in URLs: bounded, so a huge number is a clean 422, not a database error.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _date(value: str) -> dt.date | None:
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _filters(request: Request) -> tuple[listing.Filters, dict[str, str], list[str]]:
    q = request.query_params
    raw = {k: q.get(k, "")[:40] for k in ("etichetta", "dal", "al", "bisogno")}
    problems: list[str] = []
    since = _date(raw["dal"]) if raw["dal"] else None
    until = _date(raw["al"]) if raw["al"] else None
    if (raw["dal"] and since is None) or (raw["al"] and until is None):
        problems.append(gettext("Write dates as dd/mm/yyyy."))
    need = raw["bisogno"] if raw["bisogno"] in {n.value for n in NEED_LABELS} else ""
    if raw["bisogno"] and not need:
        problems.append(gettext("Choose a need from the list."))
    return listing.Filters(raw["etichetta"], since, until, need), raw, problems


@router.get("/schede")
def entries_page(request: Request, user: EtsUser, state: State) -> HTMLResponse:
    assert user.org
    filters, raw, problems = _filters(request)
    try:
        number = max(1, int(request.query_params.get("pagina", "1")))
    except ValueError:
        number = 1
    total = listing.count(state.engine, user.org, filters)
    pages = max(1, -(-total // listing.PAGE_SIZE))
    number = min(number, pages)
    rows = listing.page(state.engine, user.org, filters, number=number)
    query = urlencode({k: v for k, v in raw.items() if v})
    saved = request.query_params.get("salvata")
    return render(
        request,
        "entries.html",
        entries=rows,
        saved=saved,
        total=total,
        page=number,
        pages=pages,
        filters=raw,
        problems=problems,
        query=query,
    )


@router.get("/schede.csv")
def entries_csv(request: Request, user: EtsUser, state: State) -> Response:
    """The organisation's own entries (no identifier: the tag only), as shown in the list."""
    assert user.org
    filters, _, _ = _filters(request)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";")
    w.writerow(
        [
            gettext("Date"),
            gettext("Person"),
            gettext("Comune"),
            gettext("Needs"),
            gettext("Services given"),
            gettext("Referred by the social services"),
        ]
    )
    for e in listing.every(state.engine, user.org, filters):
        com = state.comuni.get(e["comune_istat"])
        w.writerow(
            [
                e["on"].strftime("%d/%m/%Y"),
                e["tag"] or gettext("anonymous"),
                com.name if com else e["comune_istat"],
                ", ".join(gettext(NEED_LABELS[n]) for n in e["needs"] if n in NEED_LABELS),
                ", ".join(
                    gettext(SERVICE_LABELS[s]) for s in e["services_given"] if s in SERVICE_LABELS
                ),
                gettext("yes") if e["referred_by_social_services"] else gettext("no"),
            ]
        )
    return Response(
        "\ufeff" + buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="schede.csv"'},
    )


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


@router.get("/schede/nuova")
def new_entry_page(request: Request, user: EtsUser) -> HTMLResponse:
    return render(request, "entry_form.html", values=_blank_values(), errors={})


@router.post("/schede")
def create_entry(request: Request, user: EtsUser, form: Form, state: State) -> Response:
    return _entry_form_post(request, user, form, state, None)


_FIELD_OF = {"comune_istat": "comune", "referred_by_social_services": "referred"}


def form_errors(e: ValidationError) -> dict[str, str]:
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


def _entry_form_post(
    request: Request, user: User, form: FormData, state: State, editing: dict[str, Any] | None
) -> Response:
    """The form, new or edited: checked, pseudonymised, stored (never echoing a code)."""
    assert user.org
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
    on = values["on"]
    parsed_on = _date(on) if on else dt.date.today()
    raw: dict[str, Any] = {
        "entry_id": (editing or {}).get("entry_uuid") or values["entry_id"] or None,
        "identifier_kind": kind,
        "identifier": values["identifier"] if kind != "none" else "",
        "comune_istat": code or "000000",
        "needs": values["needs"],
        "services_given": values["services_given"],
        "on": parsed_on.isoformat() if parsed_on else on,
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
        errors.update(form_errors(e))
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


def _own(state: State, user: User, entry_id: int) -> dict[str, Any]:
    assert user.org
    row = intake.entry_of(state.engine, user.org, entry_id)
    if row is None:
        raise HTTPException(404, gettext("No such entry."))
    return row


@router.get("/schede/{entry_id}/modifica")
def edit_entry_page(entry_id: RowId, request: Request, user: EtsUser, state: State) -> HTMLResponse:
    row = _own(state, user, entry_id)
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


@router.post("/schede/{entry_id}/modifica")
def edit_entry(
    entry_id: RowId, request: Request, user: EtsUser, form: Form, state: State
) -> Response:
    row = _own(state, user, entry_id)
    return _entry_form_post(request, user, form, state, row)


@router.get("/schede/{entry_id}")
def entry_page(entry_id: RowId, request: Request, user: EtsUser, state: State) -> HTMLResponse:
    return render(request, "entry.html", entry=_own(state, user, entry_id))


@router.get("/schede/{entry_id}/elimina")
def delete_entry_page(
    entry_id: RowId, request: Request, user: EtsUser, state: State
) -> HTMLResponse:
    """Asks for confirmation before deleting."""
    return render(request, "entry_delete.html", entry=_own(state, user, entry_id))


@router.post("/schede/{entry_id}/elimina")
def delete_entry(
    entry_id: RowId, request: Request, user: EtsUser, form: Form, state: State
) -> Response:
    assert user.org
    if not intake.delete(state.engine, entry_id, org=user.org):
        raise HTTPException(404, gettext("No such entry."))
    flash(request, gettext("Entry deleted."))
    return RedirectResponse("/schede", 303)


@router.get("/restituzione")
def restituzione_page(request: Request, user: EtsUser, state: State) -> HTMLResponse:
    assert user.org
    config = state.config
    data = restituzione.build(
        state.engine,
        user.org,
        state.comuni,
        k=config.settings.observatory.k,
        district=config.hub.district,
        ledger_path=config.ledger_path,
    )
    return render(request, "restituzione.html", r=data)
