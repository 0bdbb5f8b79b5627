"""``raccordo log``: check the tamper-evident log of flows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.convenzioni import HomeOpt, people_errors
from hub.exchange.errors import LogTampered

console = Console(soft_wrap=True)

app = typer.Typer(
    help="The tamper-evident log of every package sent or received.", no_args_is_help=True
)


@app.command()
@people_errors
def verify(
    home: HomeOpt,
    heads: Annotated[
        list[Path] | None,
        typer.Option(
            help="JSON lines of this log's signed heads held by the other party "
            "(from its receipts or packages): finds a log cut off together with its heads."
        ),
    ] = None,
) -> None:
    """Find every edited, deleted, reordered or truncated entry, and say which."""
    from hub.exchange import crypto
    from hub.exchange.home import open_home
    from hub.exchange.log import verify as verify_log

    h = open_home(home)
    external = []
    for f in heads or []:
        external += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    report = verify_log(h.path / "log", crypto.public_b64(h.signing_key), external)
    if report.ok:
        console.print(
            f"[green]OK[/green] log of {h.party}: {report.entries:,} entries, "
            f"{report.heads:,} signed heads, all consistent."
        )
        return
    raise LogTampered(
        f"the log of {h.party} was altered: {len(report.problems)} problem(s)",
        where=str(h.path / "log"),
        hint="restore entries.jsonl from a backup and check it again; "
        "the other party's copies of the heads tell which version is genuine",
        errors=report.problems,
    )
