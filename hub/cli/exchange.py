"""``raccordo exchange``: homes, keys, the receiving server, sending and status."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.convenzioni import HomeOpt, people_errors
from hub.pseudonyms.pseudonymiser import TOKEN_ENV

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help="Exchange packages with other districts under convenzioni.", no_args_is_help=True
)


@app.command()
@people_errors
def init(
    home: HomeOpt,
    party: Annotated[str, typer.Option(help="This party's code, as in the convenzioni.")],
    domain: Annotated[str, typer.Option(help="This party's pseudonymisation domain.")],
    registry_url: Annotated[
        str, typer.Option(help="Registry receiving records (empty: only sends).")
    ] = "",
    pseudonym_service: Annotated[
        str, typer.Option(help="Base URL of the pseudonymisation service.")
    ] = "",
    port: Annotated[int, typer.Option(help="Port of `raccordo exchange serve`.")] = 18600,
) -> None:
    """Create an exchange home with fresh signing and encryption keys."""
    from hub.exchange.home import init_home

    h = init_home(
        home,
        party=party,
        pseudonym_domain=domain,
        registry_url=registry_url,
        pseudonym_service=pseudonym_service,
        port=port,
    )
    console.print(
        f"Created the exchange home of {h.party} in {h.path}; its private keys are encrypted "
        "with the passphrase in RACCORDO_EXCHANGE_PASSPHRASE (keep it: every command that "
        "signs or receives needs it)."
    )
    console.print("Give the other party your public keys: `raccordo exchange keys --home ...`.")


@app.command("encrypt-keys")
@people_errors
def encrypt_keys_command(home: HomeOpt) -> None:
    """Encrypt the private keys of a home made before keys were encrypted at rest, with the
    passphrase in RACCORDO_EXCHANGE_PASSPHRASE."""
    from hub.exchange.home import encrypt_keys

    done = encrypt_keys(home)
    if done:
        console.print(f"Encrypted {', '.join(done)} in {home / 'keys'}.", soft_wrap=True)
    else:
        console.print(f"The keys in {home / 'keys'} were already encrypted.", soft_wrap=True)


@app.command()
@people_errors
def keys(home: HomeOpt) -> None:
    """This party's public keys, as they go in a convenzione's [[parties]] entry."""
    from hub.exchange.home import open_home

    h = open_home(home)
    print(
        json.dumps(
            {"code": h.party, "pseudonym_domain": h.settings.pseudonym_domain, **h.public_keys()},
            indent=2,
        )
    )


@app.command()
@people_errors
def serve(
    home: HomeOpt,
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: exchange.toml).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: exchange.toml).")] = None,
) -> None:
    """Receive packages from the other parties (POST /v1/packages) until stopped."""
    from hub.exchange.home import open_home
    from hub.exchange.server import serve as run_server

    h = open_home(home)
    host = host or h.settings.host
    port = h.settings.port if port is None else port
    err_console.print(f"{h.party}: receiving packages on http://{host}:{port}/v1/packages")
    run_server(h, host=host, port=port)


@app.command()
@people_errors
def send(
    home: HomeOpt,
    convenzione: Annotated[str, typer.Option(help="The convenzione the package flows under.")],
    to: Annotated[str, typer.Option(help="The recipient's party code.")],
    batch: Annotated[int, typer.Option(help="Rows per package at most.")] = 100_000,
) -> None:
    """Send what the recipient does not hold yet (pending packages first); exits 23 while
    the recipient cannot be reached, with nothing lost: run it again."""
    from hub.exchange.convert import ServiceConverter
    from hub.exchange.errors import LogTampered, PackageRefused, PeerUnavailable
    from hub.exchange.home import open_home
    from hub.exchange.send import send_records
    from hub.registry import Registry

    h = open_home(home)
    if not h.settings.registry_url:
        raise PeerUnavailable(
            "this home has no registry to send from", where=str(h.path / "exchange.toml")
        )
    registry = Registry.open(h.settings.registry_url)
    service = h.settings.pseudonym_service
    # The hub's own client token of the pseudonymisation service (one allowed to convert
    # to the recipient's domain: `raccordo pseudonymiser add-client ... --convert-to DOM`).
    token = os.environ.get(TOKEN_ENV) or None
    converter = ServiceConverter(service, token=token) if service else None
    try:
        results = send_records(h, registry, convenzione, to, converter, batch=batch)
    finally:
        registry.close()
    if not results:
        console.print(f"Nothing new for {to} under {convenzione}.")
        return
    for d in results:
        if d.status == "held":
            continue  # said below, as the refusal it is
        counts = ", ".join(f"{k} {v:,}" for k, v in d.counts.items() if k != "run_id")
        console.print(
            f"package {d.package} → {d.recipient}: {d.status}"
            + (f" ({counts})" if counts else "")
            + (f" — {d.detail}" if d.detail else "")
        )
    warnings = [d.warning for d in results if d.warning]
    for w in warnings:
        err_console.print(f"[red]warning:[/red] {w}", highlight=False)
    last = results[-1]
    if warnings:
        raise LogTampered(
            f"{to}'s flow log is not consistent with the heads it signed before",
            hint="keep peers/*.heads.jsonl and ask the other party to run `raccordo log verify`",
            errors=warnings,
        )
    if last.status == "pending":
        raise PeerUnavailable(
            f"{to} did not acknowledge package {last.package}: it stays pending",
            hint="run the same command again later; nothing is lost or sent twice",
        )
    if last.status == "refused":
        raise PackageRefused(f"{to} refused package {last.package}", errors=[last.detail])
    if last.status == "held":
        raise PackageRefused(
            f"nothing new sent to {to} under {convenzione}: too soon for its frequency",
            hint="run it again when the next period starts (erasures were sent at once)",
            errors=[last.detail],
        )


@app.command()
@people_errors
def status(
    home: HomeOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Packages pending, acknowledged and refused, per convenzione and peer, and the log head."""
    from hub.exchange.home import open_home
    from hub.exchange.send import Outbox

    h = open_home(home, keys=False)  # reads only
    out: dict[str, dict[str, int]] = {}
    for _, meta in Outbox(h).entries():
        m = meta["manifest"]
        slot = out.setdefault(f"{m['convenzione']} → {m['recipient']}", {})
        slot[meta["state"]] = slot.get(meta["state"], 0) + 1
    inbound: dict[str, dict[str, int]] = {}
    for e in h.log.entries():
        if e["kind"] in ("received", "refused", "replayed") and e.get("direction") != "out":
            slot = inbound.setdefault(f"{e.get('convenzione')} ← {e.get('peer')}", {})
            slot[e["kind"]] = slot.get(e["kind"], 0) + 1
    head = h.log.head()
    if as_json:
        print(
            json.dumps(
                {"party": h.party, "outbound": out, "inbound": inbound, "log_head": head}, indent=2
            )
        )
        return
    console.print(f"[bold]{h.party}[/bold]; log: {head['size'] if head else 0} entries")
    if not h.keys_encrypted:
        err_console.print(
            "[red]warning:[/red] this home's private keys are not encrypted: run "
            "`raccordo exchange encrypt-keys --home ...` with RACCORDO_EXCHANGE_PASSPHRASE set",
            highlight=False,
        )
    for k, v in sorted(out.items()):
        console.print(f"out {k}: " + ", ".join(f"{s} {n}" for s, n in sorted(v.items())))
    for k, v in sorted(inbound.items()):
        console.print(f"in  {k}: " + ", ".join(f"{s} {n}" for s, n in sorted(v.items())))


@app.command("send-aggregates")
@people_errors
def send_aggregates_command(
    home: HomeOpt,
    convenzione: Annotated[str, typer.Option(help="The convenzione the tables flow under.")],
    to: Annotated[str, typer.Option(help="The recipient's party code.")],
    year: Annotated[int, typer.Option(help="The year the tables cover.")],
    ledger: Annotated[
        Path,
        typer.Option(help="The disclosure ledger: the same file the open-data export uses."),
    ],
    withdraw: Annotated[
        list[str] | None, typer.Option(help="Indicator to withdraw for this period.")
    ] = None,
) -> None:
    """Send the indicator tables the convenzione names, after disclosure control."""
    from hub.exchange.errors import PackageRefused, PeerUnavailable
    from hub.exchange.home import open_home
    from hub.exchange.send import send_aggregates
    from hub.observatory.disclosure import Ledger
    from hub.observatory.table import Period
    from hub.registry import Registry

    h = open_home(home)
    if not h.settings.registry_url:
        raise PeerUnavailable("this home has no registry", where=str(h.path / "exchange.toml"))
    registry = Registry.open(h.settings.registry_url)
    try:
        d = send_aggregates(
            h,
            registry,
            convenzione,
            to,
            Period.year(year),
            Ledger.load(ledger),
            withdraw=withdraw or (),
        )
    finally:
        registry.close()
    console.print(
        f"package {d.package} → {d.recipient}: {d.status}" + (f" — {d.detail}" if d.detail else "")
    )
    if d.status == "pending":
        raise PeerUnavailable(f"{to} did not acknowledge package {d.package}: it stays pending")
    if d.status == "refused":
        raise PackageRefused(f"{to} refused package {d.package}", errors=[d.detail])


@app.command()
@people_errors
def purge(home: HomeOpt) -> None:
    """Remove received records older than their convenzione's retention at the recipient."""
    from hub.exchange.home import open_home
    from hub.exchange.load import purge_expired
    from hub.registry import Registry

    h = open_home(home)
    if not h.settings.registry_url:
        console.print("This home has no registry: nothing to purge.")
        return
    registry = Registry.open(h.settings.registry_url)
    try:
        for cf in h.convenzioni.all():
            c = cf.convenzione
            for p in c.parties:
                if p.code == h.party:
                    continue
                n = purge_expired(
                    registry,
                    sender=p.code,
                    convenzione=c.id,
                    convenzione_digest=cf.digest,
                    retention=dt.timedelta(days=c.retention_days),
                )
                if n:
                    h.log.append(
                        "erasure", convenzione=c.id, peer=p.code, rows=n, reason="retention"
                    )
                console.print(
                    f"{c.id} from {p.code}: {n:,} rows past {c.retention_days} days removed"
                )
    finally:
        registry.close()


erasure_app = typer.Typer(
    help="Erasures that must reach every registry that received the data.", no_args_is_help=True
)


@erasure_app.command("status")
@people_errors
def erasure_status_command(
    home: HomeOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per convenzione and recipient: rows erased here whose tombstone is not acknowledged yet."""
    from hub.exchange.home import open_home
    from hub.exchange.send import erasure_status
    from hub.registry import Registry

    h = open_home(home, keys=False)  # reads only
    if not h.settings.registry_url:
        console.print("This home has no registry: it sends nothing to erase.")
        return
    registry = Registry.open(h.settings.registry_url)
    out: dict[str, dict[str, int]] = {}
    try:
        for cf in h.convenzioni.all():
            for f in cf.convenzione.flows:
                if f.from_ == h.party and f.kind == "records":
                    out[f"{cf.id} → {f.to}"] = erasure_status(h, registry, cf, f.to)
    finally:
        registry.close()
    if as_json:
        print(json.dumps(out, indent=2))
        return
    for k, v in sorted(out.items()):
        console.print(
            f"{k}: {v['unacknowledged_erasures']:,} erasures not acknowledged"
            f" ({v['in_pending_packages']:,} in pending packages); "
            f"{v['acknowledged_rows']:,} rows held there"
        )
    if any(v["unacknowledged_erasures"] for v in out.values()):
        console.print("Run `raccordo exchange send` to deliver them.")
