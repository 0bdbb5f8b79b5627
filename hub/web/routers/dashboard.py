"""The analyst's dashboard."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from hub.observatory.comuni import parse_comune
from hub.web import accounts, dashboard
from hub.web.i18n import gettext
from hub.web.pages import AnalystUser, State, render

router = APIRouter(include_in_schema=False)


@router.get("/cruscotto")
def dashboard_page(
    request: Request,
    user: AnalystUser,
    state: State,
    anno: int | None = None,
    org: str | None = None,
    comune: str | None = None,
) -> HTMLResponse:
    all_orgs = [
        (str(o["code"]), str(o["name"]))
        for o in accounts.list_organisations(state.engine)
        if o["kind"] in ("ente_gestore", "ets")
    ]
    problems: list[str] = []
    # An analyst bound to a consortium sees that consortium only, whatever the URL says.
    chosen = user.org if user.org else (org or None)
    if chosen and chosen not in {c for c, _ in all_orgs}:
        problems.append(gettext("Unknown organisation: the whole district is shown."))
        chosen = None
    code = parse_comune(comune, state.comuni) if comune else None
    if comune and code is None:
        problems.append(gettext("Unknown comune: choose one of the district from the list."))
    data = dashboard.build(
        state.engine,
        state.comuni,
        year=anno,
        org=chosen,
        comune=code,
        orgs=[] if user.org else all_orgs,
    )
    return render(request, "dashboard.html", d=data, problems=problems)
