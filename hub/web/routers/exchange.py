"""Exchange between districts, for people: flows per convenzione (analysts) and the
convenzioni with their state (administrators).

Read only, from the hub's exchange home (``[hub] exchange_home``) through
:mod:`hub.exchange.overview`: the pages never read a private key, never send nor sign.
An analyst bound to an organisation sees only the convenzioni it is party to.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from hub.exchange import overview
from hub.exchange.errors import ExchangeError
from hub.exchange.home import Home, open_home
from hub.registry import Registry
from hub.web.i18n import gettext
from hub.web.pages import AdminUser, AnalystUser, State, render
from hub.web.state import WebState

router = APIRouter(include_in_schema=False)


def _home(state: WebState) -> tuple[Home | None, str | None]:
    """The exchange home, or why there is none (in Italian)."""
    setting = state.config.hub.exchange_home
    if not setting:
        return None, gettext("This hub has no exchange home: set [hub] exchange_home.")
    path: Path = state.config.resolve(setting)
    try:
        return open_home(path, keys=False), None
    except ExchangeError:
        return None, gettext("The exchange home of [hub] exchange_home cannot be read.")


def _local(at: str | None) -> str:
    """An ISO timestamp as an Italian date and time (UTC)."""
    if not at:
        return "—"
    try:
        when = dt.datetime.fromisoformat(at)
    except ValueError:
        return "—"
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%d/%m/%Y %H:%M") + " UTC"


@router.get("/cruscotto/scambi")
def flows_page(request: Request, user: AnalystUser, state: State) -> HTMLResponse:
    home, problem = _home(state)
    data: list[overview.ConvenzioneFlows] = []
    party = None
    if home is not None:
        party = home.party
        data = overview.flows(home, Registry(state.engine), org=user.org)
    return render(
        request, "exchange_flows.html", convenzioni=data, party=party, problem=problem, when=_local
    )


@router.get("/admin/convenzioni")
def convenzioni_page(request: Request, user: AdminUser, state: State) -> HTMLResponse:
    home, problem = _home(state)
    views: list[overview.ConvenzioneView] = []
    broken: list[overview.Broken] = []
    party = None
    if home is not None:
        party = home.party
        views, broken = overview.convenzioni(home)
    return render(
        request,
        "exchange_convenzioni.html",
        convenzioni=views,
        broken=broken,
        party=party,
        problem=problem,
        when=_local,
    )
