"""The analyst's dashboard."""

from __future__ import annotations

import csv
import io
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from hub.observatory.comuni import parse_comune
from hub.observatory.disclosure import protect_release
from hub.observatory.indicators import latest_year, release_tables
from hub.observatory.report import cell
from hub.observatory.restituzione import locked_ledger
from hub.observatory.table import Period
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
    query = urlencode({k: v for k, v in (("anno", data.year), ("org", data.org)) if v})
    return render(request, "dashboard.html", d=data, problems=problems, query=query)


@router.get("/cruscotto/tabella/{table_id}.csv")
def table_csv(
    table_id: str,
    user: AnalystUser,
    state: State,
    anno: int | None = None,
    org: str | None = None,
) -> Response:
    """What a chart shows, as CSV, through the disclosure control and the ledger of
    releases (what leaves the dashboard is a release like the open data)."""
    chosen = user.org if user.org else (org or None)
    year = anno or dashboard.default_year(state.engine) or latest_year(state.engine)
    if year is None:
        raise HTTPException(404, gettext("No data yet."))
    tables = {
        tb.id: dashboard.labelled(tb, state.comuni)
        for tb in release_tables(state.engine, Period.year(year), org=chosen)
    }
    if table_id not in tables:
        raise HTTPException(404, gettext("No such table."))
    k = state.config.settings.observatory.k
    with locked_ledger(state.config.ledger_path) as ledger:
        release = protect_release([tables[table_id]], k, ledger)
        ledger.record(release, f"cruscotto {table_id} {year} {chosen or 'distretto'}")
    (pt,) = release.tables
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";")
    w.writerow([pt.spec.row_label, *pt.spec.col_headings, gettext("Total")])
    for i, heading in enumerate(pt.spec.row_headings):
        w.writerow([heading, *(cell(v, k) for v in pt.cells[i]), cell(pt.row_totals[i], k)])
    w.writerow([gettext("Total"), *(cell(v, k) for v in pt.col_totals), cell(pt.total, k)])
    return Response(
        "\ufeff" + buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{table_id}-{year}.csv"'},
    )
