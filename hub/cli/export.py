"""``raccordo export``: tables that leave the registry, after disclosure control."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from hub.cli.options import ConfigOpt

if TYPE_CHECKING:
    import sqlalchemy as sa

    from hub.config import Config

app = typer.Typer(help="Export published tables (after disclosure control).", no_args_is_help=True)
console = Console()


def _check_org(cfg: Config, org: str | None) -> None:
    from hub.errors import ConfigError

    if org is not None and org not in cfg.settings.organisations:
        raise ConfigError(
            f"no organisation {org!r}",
            where=str(cfg.path),
            hint="known: " + ", ".join(cfg.settings.organisations),
        )


def _year(engine: sa.Engine, year: int | None) -> int:
    """The year asked for, or the latest year with data."""
    from hub.errors import ConfigError
    from hub.observatory.indicators import latest_year

    y = year or latest_year(engine)
    if y is None:
        raise ConfigError(
            "the registry holds no dated records: nothing to export",
            where="--year",
            hint="run `raccordo sync` first, or pass --year",
        )
    return y


@app.command("opendata")
def opendata(
    config: ConfigOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: opendata/<period>[-<org>]).")
    ] = None,
    year: Annotated[
        int | None, typer.Option(help="Calendar year (default: the latest year with data).")
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="One organisation (default: the whole district).")
    ] = None,
) -> None:
    """Suppressed CSV and JSON for every published table, with a data dictionary."""
    from hub.config import load_config
    from hub.observatory.disclosure import Ledger
    from hub.observatory.opendata import export_opendata
    from hub.observatory.table import Period
    from hub.registry import Registry

    cfg = load_config(config)
    _check_org(cfg, org)
    registry = Registry.open(cfg.registry_url)
    try:
        period = Period.year(_year(registry.engine, year))
        folder = out or cfg.base_dir / "opendata" / (period.label + (f"-{org}" if org else ""))
        ledger = Ledger.load(cfg.ledger_path)
        result = export_opendata(
            registry.engine, folder, period, org=org, k=cfg.observatory.k, ledger=ledger
        )
    finally:
        registry.close()
    console.print(
        f"Wrote {result.tables} tables ({result.suppressed} values suppressed, "
        f"k = {cfg.observatory.k}) to [bold]{result.folder}[/bold]"
    )
    console.print(f"Release recorded in {cfg.ledger_path} (confidential: do not publish it).")


@app.command("report")
def report(
    comune: Annotated[
        str | None, typer.Option(help="ISTAT code of a comune of the district (6 digits).")
    ] = None,
    org: Annotated[str | None, typer.Option(help="Code of an organisation.")] = None,
    year: Annotated[
        int | None,
        typer.Option(help="Calendar year (default: each table's latest complete year)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: reports/).")] = None,
    config: ConfigOpt = None,
) -> None:
    """A restituzione report (HTML, PDF, JSON) for one comune or one organisation.

    Same disclosure control as the open-data export; the release is recorded in the ledger.
    """
    from hub.config import load_config
    from hub.errors import ConfigError
    from hub.observatory.disclosure import Ledger
    from hub.observatory.report import build_report
    from hub.registry import Registry
    from hub.web.comuni import load_comuni

    if (comune is None) == (org is None):
        raise ConfigError(
            "say which report: --comune ISTAT or --org CODE (one of them)", where="options"
        )
    cfg = load_config(config)
    web = cfg.settings.web
    comuni = load_comuni(cfg.resolve(web.comuni_file) if web.comuni_file else None)
    if comune is not None and comune not in comuni:
        raise ConfigError(
            f"{comune!r} is not a comune of the district",
            where="--comune",
            hint="use the six-digit ISTAT code, e.g. 003106 for Novara",
        )
    _check_org(cfg, org)
    registry = Registry.open(cfg.registry_url)
    try:
        _year(registry.engine, year)  # an empty registry is refused
        result = build_report(
            registry.engine,
            out or cfg.base_dir / "reports",
            year=year,  # None: each table its own latest complete year
            comuni=comuni,
            k=cfg.observatory.k,
            ledger=Ledger.load(cfg.ledger_path),
            district_name=cfg.hub.district_name or cfg.hub.district,
            org=org,
            comune=comune,
            org_name=cfg.settings.organisations[org].name if org else None,
        )
    finally:
        registry.close()
    console.print(
        f"Wrote {result.html} ({result.tables} tables, {result.suppressed} values suppressed, "
        f"k = {cfg.observatory.k})"
    )
    if result.pdf:
        console.print(f"Wrote {result.pdf}")
    else:
        console.print(f"[yellow]No PDF: {result.pdf_problem}[/yellow]")
    console.print(f"Release recorded in {cfg.ledger_path} (confidential: do not publish it).")


observatory_app = typer.Typer(help="The observatory's pre-computed tables.", no_args_is_help=True)


@observatory_app.command("refresh")
def observatory_refresh(
    config: ConfigOpt = None,
) -> None:
    """Recompute the indicator tables for every year with data (`sync` does it too)."""
    import time

    from hub.config import load_config
    from hub.observatory.aggregates import refresh
    from hub.registry import Registry

    cfg = load_config(config)
    registry = Registry.open(cfg.registry_url)
    start = time.perf_counter()
    try:
        n = refresh(registry.engine)
    finally:
        registry.close()
    console.print(f"Stored {n} indicator tables in {time.perf_counter() - start:.1f} s.")
