"""``raccordo convenzioni``: validate, sign, list, show and revoke agreements."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.errors import RaccordoError
from hub.exchange import convenzioni as cv
from hub.exchange.errors import ConvenzioneError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def people_errors(fn: F) -> F:
    """Print an exchange error as one message (no traceback) and exit with its code.

    ``hub.cli.main`` does the same for every command; doing it here too keeps the
    exit codes when the command is invoked on its own (tests, other front ends).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RaccordoError as e:
            err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


app = typer.Typer(
    help="Convenzioni: the signed agreements every exchange is checked against.",
    no_args_is_help=True,
)

HomeOpt = Annotated[
    Path,
    typer.Option(
        "--home",
        help="The exchange home (folder with exchange.toml and keys).",
        envvar="RACCORDO_EXCHANGE_HOME",
        show_envvar=True,
    ),
]


@app.command()
@people_errors
def validate(
    files: Annotated[list[Path], typer.Argument(help="Convenzione files (TOML).")],
) -> None:
    """Check files against the convenzione schema; every problem names its field."""
    failed = 0
    for f in files:
        try:
            cf = cv.load(f)
        except ConvenzioneError as e:
            failed += 1
            console.print(f"[red]✗[/red] {escape(str(e))}", highlight=False)
            continue
        console.print(
            f"[green]✓[/green] {escape(str(f))}: {cf.id} — {cf.state()}"
            + (f" (signed by {', '.join(cf.signed_by)})" if cf.signed_by else "")
        )
    if failed:
        raise typer.Exit(ConvenzioneError.exit_code)


@app.command()
@people_errors
def sign(
    file: Annotated[Path, typer.Argument(help="The convenzione file to sign.")],
    home: HomeOpt,
) -> None:
    """Sign the file as this home's party (after reading it: the signature covers every byte)."""
    from hub.exchange.home import open_home

    h = open_home(home)
    cf = cv.sign(file, h.party, h.signing_key)
    console.print(
        f"Signed {cf.id} as {h.party}. State: {cf.state()}"
        + (f"; still to sign: {', '.join(cf.unsigned)}" if cf.unsigned else "")
    )


@app.command("list")
@people_errors
def list_(
    home: HomeOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The convenzioni of this home with their state."""
    from hub.exchange.home import open_home

    h = open_home(home, keys=False)
    rows = h.convenzioni.all()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "state": c.state(),
                        "parties": [p.code for p in c.convenzione.parties],
                        "start": str(c.convenzione.start),
                        "expiry": str(c.convenzione.expiry),
                        "signed_by": c.signed_by,
                        "file": str(c.path),
                    }
                    for c in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        console.print(f"No convenzioni in {h.path / 'convenzioni'}.")
        return
    table = Table(title="Convenzioni")
    for col in ("id", "state", "parties", "from", "to", "signed by"):
        table.add_column(col)
    for c in rows:
        table.add_row(
            c.id,
            c.state(),
            ", ".join(p.code for p in c.convenzione.parties),
            str(c.convenzione.start),
            str(c.convenzione.expiry),
            ", ".join(c.signed_by) or "-",
        )
    console.print(table)


@app.command()
@people_errors
def show(
    conv_id: Annotated[str, typer.Argument(help="The convenzione's id.")],
    home: HomeOpt,
) -> None:
    """What a convenzione lets flow, in each direction, and why it is (not) in force."""
    from hub.exchange.home import open_home

    cf = open_home(home, keys=False).convenzioni.get(conv_id)
    c = cf.convenzione
    console.print(f"[bold]{escape(c.id)}[/bold] — {escape(c.title)}")
    console.print(
        f"state: {cf.state()}" + (f" ({cf.why_not_active()})" if cf.why_not_active() else "")
    )
    console.print(f"purpose: {c.purpose} — {escape(c.purpose_description)}")
    console.print(f"legal basis: {escape(c.legal_basis)}")
    console.print(
        f"in force: {c.start} → {c.expiry}; retention at recipient: {c.retention_days} days"
    )
    for p in c.parties:
        console.print(
            f"party {p.code}: {escape(p.name)} (domain {p.pseudonym_domain})"
            + (" — signed" if p.code in cf.signatures else " — not signed")
        )
    for f in c.flows:
        what = (
            "; ".join(f"{t}: {', '.join(fs)}" for t, fs in f.tables.items())
            if f.kind == "records"
            else "; ".join(f"{n} (k ≥ {i.k})" for n, i in f.indicators.items())
        )
        console.print(f"flow {f.from_} → {f.to}, {f.kind}, {f.frequency}: {escape(what)}")


@app.command()
@people_errors
def revoke(
    file: Annotated[Path, typer.Argument(help="The convenzione file.")],
    home: HomeOpt,
    reason: Annotated[str, typer.Option(help="Why, for the other party and the record.")],
    notify: Annotated[
        bool, typer.Option(help="Send the signed revocation to the other parties' endpoints.")
    ] = True,
) -> None:
    """Withdraw from a convenzione: every flow under it stops, on both sides once notified."""
    import requests

    from hub.exchange.home import open_home

    h = open_home(home)
    rev = cv.revoke(file, h.party, h.signing_key, reason, dt.datetime.now(dt.UTC))
    cf = cv.load(file)
    h.log.append("revoked", convenzione=cf.id, peer=h.party, reason=reason[:300])
    document = cv.revocation_document(file)
    for p in cf.convenzione.parties:
        if p.code == h.party or not p.endpoint or not notify:
            continue
        try:
            resp = requests.post(
                p.endpoint.rstrip("/") + "/v1/revocations",
                json=document,
                timeout=30,
                verify=h.settings.ca_bundle or True,
            )
            ok = resp.status_code == 200
            detail = "" if ok else f"HTTP {resp.status_code}"
        except requests.RequestException as e:
            ok, detail = False, type(e).__name__
        console.print(
            f"{p.code}: notified"
            if ok
            else f"{p.code}: NOT notified ({detail}); give it {file.name}.revoked"
        )
    console.print(
        f"Revoked by {rev.by} at {rev.at}. Nothing flows under it from here on; "
        "the other party's packages are refused with this reason."
    )
