"""CSV upload: the file becomes a background job; its page shows progress, then the report."""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import UploadFile

from hub.web import uploads
from hub.web.i18n import gettext
from hub.web.labels import NEED_LABELS, SERVICE_LABELS
from hub.web.pages import EtsUser, Form, State, render

router = APIRouter(include_in_schema=False)


def _page(request: Request, status: int = 200, **ctx: object) -> HTMLResponse:
    return render(
        request,
        "upload.html",
        status,
        columns=[(c, gettext(uploads.COLUMN_LABELS[c])) for c in uploads.COLUMN_LABELS],
        need_values=[gettext(v) for v in NEED_LABELS.values()],
        service_values=[gettext(v) for v in SERVICE_LABELS.values()],
        **ctx,
    )


@router.get("/caricamento")
def upload_page(request: Request, user: EtsUser) -> HTMLResponse:
    return _page(request, job=None)


@router.get("/caricamento/modello.csv")
def upload_template(user: EtsUser, state: State) -> Response:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";")
    first = next(iter(state.comuni.values()), None)
    w.writerows(uploads.template_rows(first.name if first else ""))
    return Response(
        "\ufeff" + buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="modello-schede.csv"'},
    )


@router.post("/caricamento")
async def upload(request: Request, user: EtsUser, form: Form, state: State) -> Response:
    assert user.org
    file = form.get("file")
    if not isinstance(file, UploadFile):
        return _page(request, 422, job=None, error=gettext("Choose a CSV file."))
    limit = state.config.settings.web.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        return _page(request, 413, job=None, error=gettext("The file is too large."))
    job = state.store.new_job(user.org)
    request.app.state.uploads().submit(
        uploads.run_in_process, state.config, job, user.org, user.id, data
    )
    return RedirectResponse(f"/caricamento/{job}", 303)


@router.get("/caricamento/{job}")
def upload_job(job: str, request: Request, user: EtsUser, state: State) -> HTMLResponse:
    assert user.org
    found = state.store.job(job[:40], user.org)
    if found is None:
        raise HTTPException(404, gettext("No such upload."))
    return _page(request, job=found)
