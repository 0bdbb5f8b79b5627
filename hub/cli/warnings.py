"""``raccordo warnings list``: data-quality warnings of the records that loaded (hub/quality.py).

A warning never refused its record: it points at a value an office should check in its source
(a birth year contradicting the codice fiscale, a comune outside the district, an end before its
start). Like the quarantine, it says where, which field and rule, and why — never a value.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.options import ConfigOpt
from hub.config import load_config

app = typer.Typer(
    help="Data-quality warnings of loaded records (never refusals), with where and why.",
    no_args_is_help=True,
)
console = Console()


@app.command("list")
def warnings_list(
    config: ConfigOpt = None,
    connector: Annotated[str | None, typer.Option(help="Only this connector.")] = None,
    run: Annotated[int | None, typer.Option(help="Only this run.")] = None,
    limit: Annotated[int, typer.Option(help="How many warnings, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Warnings of the latest runs: where, which field, which rule, why."""
    from hub.registry import Registry

    cfg = load_config(config)
    registry = Registry.open(cfg.registry_url)
    try:
        rows = registry.warning_entries(connector=connector, run_id=run, limit=limit)
    finally:
        registry.close()
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        console.print("No warnings for this selection.")
        return
    table = Table(title="Data-quality warnings")
    for col in ("run", "connector", "where", "field", "rule", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["run_id"]), r["connector"], r["location"], r["field"] or "", r["rule"],
            r["message"],
        )  # fmt: skip
    console.print(table)
