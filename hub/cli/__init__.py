"""The ``raccordo`` command.

Every command reads ``raccordo.toml`` from ``--config``, ``RACCORDO_CONFIG``
or the current directory. Errors a user can cause are printed as one
readable message with a hint and a documented exit code (docs/cli.md),
never as a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.cli.connectors_list import list_connectors
from hub.cli.convenzioni import app as convenzioni_app
from hub.cli.exchange import app as exchange_app
from hub.cli.exchange import erasure_app
from hub.cli.export import app as export_app
from hub.cli.export import observatory_app
from hub.cli.keys import app as keys_app
from hub.cli.log import app as log_app
from hub.cli.mappings import app as mappings_app
from hub.cli.options import ConfigOpt
from hub.cli.progress import run_progress
from hub.cli.pseudonymiser import app as pseudonymiser_app
from hub.cli.push import app as push_app
from hub.cli.warnings import app as warnings_app
from hub.cli.web import serve as serve_command
from hub.cli.web import users_app
from hub.config import Config, load_config
from hub.errors import RaccordoError

console = Console()
# soft_wrap: an error line is never broken inside a path or a name (logs stay greppable).
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="raccordo",
    help="Raccordo: pseudonymised district registries fed from the software consortia already use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
connectors_app = typer.Typer(
    help="List installed connector plugins and check configured ones.", no_args_is_help=True
)
quarantine_app = typer.Typer(
    help="Records refused by a sync, with the reason and where.", no_args_is_help=True
)
app.add_typer(connectors_app, name="connectors")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(keys_app, name="keys")
app.add_typer(pseudonymiser_app, name="pseudonymiser")
app.add_typer(mappings_app, name="mappings")
app.add_typer(users_app, name="users")
app.command("serve")(serve_command)
app.add_typer(export_app, name="export")
app.add_typer(observatory_app, name="observatory")
app.add_typer(warnings_app, name="warnings")
app.add_typer(convenzioni_app, name="convenzioni")
app.add_typer(exchange_app, name="exchange")
app.add_typer(log_app, name="log")
app.add_typer(erasure_app, name="erasure")
app.add_typer(push_app, name="push")


def _config(path: Path | None) -> Config:
    return load_config(path)


@app.command()
def init(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Workspace directory to create (may exist, must not hold a raccordo.toml)."
        ),
    ],
    district: Annotated[
        str, typer.Option(help="Code of the district (ambito / DCS).")
    ] = "DISTRETTO",
    district_name: Annotated[str, typer.Option(help="Name of the district.")] = "Distretto",
) -> None:
    """Create a workspace: raccordo.toml, a mappings folder and an encrypted keyring."""
    from hub.workspace import init_workspace

    cfg_path = init_workspace(directory, district=district, district_name=district_name)
    console.print(f"Created [bold]{cfg_path}[/bold]")
    console.print("Next: edit it to add organisations and connectors, then `raccordo sync`.")


@connectors_app.command("list")
def connectors_list() -> None:
    """List installed connector plugins, including those that failed to load."""
    raise typer.Exit(list_connectors(console))


@connectors_app.command("check")
def connectors_check(
    name: Annotated[str, typer.Argument(help="Connector name as configured in raccordo.toml.")],
    config: ConfigOpt = None,
) -> None:
    """Check that a configured connector can reach its source."""
    from hub.orchestration import check  # what the Airflow `check` task runs too

    result = check(config, name)
    if result["ok"]:
        console.print(f"[green]OK[/green] {name}: {escape(str(result['message']))}")
        return
    err_console.print(f"[red]FAILED[/red] {name}: {escape(str(result['message']))}")
    raise typer.Exit(4)


@app.command()
def sync(
    names: Annotated[
        list[str] | None, typer.Argument(help="Connectors to sync (default: every enabled one).")
    ] = None,
    config: ConfigOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    refresh: Annotated[
        bool, typer.Option(help="Refresh the observatory's pre-computed tables afterwards.")
    ] = True,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Read and map every record of the named connectors again (cursor reset).",
        ),
    ] = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push", help="A worker: push to the district hub (push_url in raccordo.toml)."
        ),
    ] = False,
    timings: Annotated[
        bool,
        typer.Option("--timings", help="Print the CPU time each stage of the pipeline took."),
    ] = False,
) -> None:
    """Read, pseudonymise, map, validate and load: one run per connector stream."""
    from hub.pipeline import iter_connectors
    from hub.service import Hub

    cfg = _config(config)
    if full_refresh and not names:
        err_console.print(
            "[red]error[/red] --full-refresh needs the connectors to read again: "
            "raccordo sync --full-refresh NAME"
        )
        raise typer.Exit(2)
    if push or cfg.hub.push_url:  # a worker: the hub loads, no registry here (docs/exchange.md)
        from hub.cli.push import sync_pushing

        pushed = sync_pushing(
            cfg,
            list(iter_connectors(cfg, names)),
            quiet=quiet,
            full_refresh=full_refresh,
            refresh=refresh,
            print_run=_print_run,
        )
        raise typer.Exit(0 if pushed else 7)
    hub = Hub.open(cfg)
    failed = False
    refused_units = 0
    targets = list(iter_connectors(cfg, names))
    if not targets:
        hub.close()
        err_console.print("No enabled connectors in the configuration: nothing to sync.")
        raise typer.Exit(0)
    for name in targets:
        with run_progress(err_console, f"{name}: starting", quiet=quiet) as show:
            try:
                summaries = hub.sync(name, progress=show, full_refresh=full_refresh)
            except RaccordoError as e:
                failed = True
                err_console.print(f"[red]error[/red] {name}: {escape(str(e))}", highlight=False)
                continue
        ids = [s.id for s in summaries]
        warned = hub.registry.warning_counts(ids)
        refused = hub.registry.refused_unit_counts(ids)
        refused_units += sum(refused.values())
        for s in summaries:
            _print_run(s, warned.get(s.id, 0), refused.get(s.id, 0))
    if timings:
        from hub.pipeline import STAGES

        cpu = hub.pipeline.stage_cpu
        total = sum(cpu.values())
        parts = ", ".join(f"{stage} {cpu[stage]:.1f} s" for stage in STAGES if stage in cpu)
        err_console.print(f"CPU by stage: {parts} (total {total:.1f} s)", highlight=False)
    if refresh:
        hub.refresh_after_sync()
    hub.close()
    if failed:
        raise typer.Exit(7)
    if refused_units:  # completed, but whole files / flows / pages were refused (docs/cli.md)
        err_console.print(
            f"{refused_units:,} unit(s) refused whole: see raccordo quarantine list", style="red"
        )
        raise typer.Exit(8)


def _print_run(s: object, warnings: int = 0, refused_units: int = 0) -> None:
    from hub.registry import RunSummary

    assert isinstance(s, RunSummary)
    mark = "[green]✓[/green]" if s.status == "succeeded" else "[red]✗[/red]"
    stream = f"/{s.stream}" if s.stream else ""
    console.print(
        f"{mark} run {s.id} {s.connector}{stream} ({s.mapping} v{s.mapping_version}): "
        f"read {s.read:,} = loaded {s.loaded:,} + unchanged {s.unchanged:,} + "
        + (f"duplicates {s.duplicates:,} + " if s.duplicates else "")
        + f"quarantined {s.quarantined:,}"
        + (f"  · deleted {s.deleted:,}" if s.deleted else "")
        + (f"  · source errors {s.source_errors:,}" if s.source_errors else "")
        + (f" (units refused whole {refused_units:,})" if refused_units else "")
        + (f"  · warnings {warnings:,}" if warnings else "")
    )
    if s.unmapped_codes:
        for table, codes in s.unmapped_codes.items():
            listed = ", ".join(f"{c} ×{n}" for c, n in sorted(codes.items()))
            console.print(f"  codes not in table [bold]{escape(table)}[/bold]: {escape(listed)}")
    if s.quarantined or s.source_errors:
        console.print(f"  see why: raccordo quarantine list --run {s.id}")
    if warnings:
        console.print(f"  data-quality warnings: raccordo warnings list --run {s.id}")


@app.command()
def runs(
    config: ConfigOpt = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The latest sync runs with their accounting."""
    from hub.registry import Registry

    cfg = _config(config)
    registry = Registry.open(cfg.registry_url)
    rows = registry.runs(connector=connector, limit=limit)
    warned = registry.warning_counts([r.id for r in rows])
    if as_json:
        print(
            json.dumps(
                [
                    {**r.__dict__, "balanced": r.balanced, "warnings": warned.get(r.id, 0)}
                    for r in rows
                ],
                default=str,
                indent=2,
            )
        )
        return
    table = Table(title="Runs")
    for col in (
        "run",
        "connector",
        "stream",
        "status",
        "started",
        "read",
        "loaded",
        "unchanged",
        "duplicates",
        "quarantined",
        "warnings",
        "mapping",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.id),
            r.connector,
            r.stream or "",
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            f"{r.read:,}",
            f"{r.loaded:,}",
            f"{r.unchanged:,}",
            f"{r.duplicates:,}",
            f"{r.quarantined:,}",
            f"{warned.get(r.id, 0):,}",
            f"{r.mapping} v{r.mapping_version}",
        )
    console.print(table)


@quarantine_app.command("list")
def quarantine_list(
    config: ConfigOpt = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    run: Annotated[int | None, typer.Option(help="Only this run.")] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Refused records: where they were, which field, which rule, why."""
    from hub.registry import Registry

    cfg = _config(config)
    registry = Registry.open(cfg.registry_url)
    rows = registry.quarantine_entries(connector=connector, run_id=run, limit=limit)
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        console.print("Quarantine is empty for this selection.")
        return
    table = Table(title="Quarantine")
    for col in ("run", "connector", "where", "field", "rule", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["run_id"]),
            r["connector"],
            r["location"],
            r["field"] or "",
            r["rule"],
            r["reason"],
        )
    console.print(table)


@quarantine_app.command("purge")
def quarantine_purge(config: ConfigOpt = None) -> None:
    """Delete quarantine entries past their retention (quarantine_retention_days)."""
    from hub.registry import Registry

    cfg = _config(config)
    registry = Registry.open(cfg.registry_url)
    n = registry.purge_expired_quarantine()
    registry.close()
    console.print(
        f"Removed {n:,} quarantine entries older than {cfg.hub.quarantine_retention_days} days."
    )


report_app = typer.Typer(help="Indicators computed from the registry.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("prese-in-carico")
def report_prese_in_carico(
    config: ConfigOpt = None,
    org: Annotated[
        str | None, typer.Option(help="One organisation (default: the whole district).")
    ] = None,
    year: Annotated[
        list[int] | None, typer.Option(help="Year(s) (default: every year with data).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """People in charge (prese in carico) at 31 October, by target group, with households."""
    from hub.errors import ConfigError
    from hub.observatory.prese_in_carico import prese_in_carico, render, years_with_data
    from hub.registry import Registry

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(
            f"unknown format {fmt!r}", where="--format", hint="use table, csv or json"
        )
    cfg = _config(config)
    if org and org not in cfg.settings.organisations:
        raise ConfigError(
            f"no organisation {org!r}",
            where=str(cfg.path),
            hint="known: " + ", ".join(cfg.settings.organisations),
        )
    registry = Registry.open(cfg.registry_url)
    years = year or years_with_data(registry.engine, org)
    print(render(prese_in_carico(registry.engine, years, org=org), fmt), end="")
    registry.close()


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option(help="Where to create the demo workspace.")] = Path(
        "demo-workspace"
    ),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Exit after loading and printing.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the web app on localhost.")] = 8000,
) -> None:
    """Create a demo district workspace, load it through the real pipeline, print the
    results, then serve the web app with demo accounts (unless --no-serve)."""
    from hub.demo import run_demo

    run_demo(workspace, serve=not no_serve, console=console, port=port)


def main() -> None:
    """Entry point: run the app, turning RaccordoError into a message and its exit code."""
    try:
        app()
    except RaccordoError as e:
        # The message may hold "[connectors.x]" (a TOML table): escaped, not markup.
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
