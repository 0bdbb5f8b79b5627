"""``raccordo pseudonymiser``: run the district's pseudonymisation service, manage its clients."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import ConfigOpt

app = typer.Typer(
    help="The district's pseudonymisation service: the only holder of the keys when "
    "consortia run their own workers (docs/pseudonymisation.md).",
    no_args_is_help=True,
)

ClientsOpt = Annotated[
    Path | None,
    typer.Option(help="Clients file (default: pseudonymiser-clients.json beside the keyring)."),
]


def _clients_path(clients: Path | None, config: Path | None) -> Path:
    if clients is not None:
        return clients
    from hub.config import load_config

    return load_config(config).keyring_path.with_name("pseudonymiser-clients.json")


@app.command("add-client")
def add_client(
    client_id: Annotated[
        str, typer.Argument(metavar="ID", help="The client's id, e.g. a consortium code.")
    ],
    domain: Annotated[
        str | None, typer.Option(help="Its pseudonymisation domain (default: this district's).")
    ] = None,
    daily_quota: Annotated[
        int, typer.Option(help="Identifiers it may have pseudonymised in any 24 hours.")
    ] = 200_000,
    per_minute: Annotated[int, typer.Option(help="Identifiers per minute.")] = 100_000,
    convert_to: Annotated[
        list[str] | None,
        typer.Option(help="A domain it may convert pseudonyms to (repeatable; a convenzione)."),
    ] = None,
    rotate: Annotated[
        bool, typer.Option(help="May rotate its registry's pseudonyms (the district hub).")
    ] = False,
    clients: ClientsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a client and print its token, once (only its SHA-256 is stored)."""
    from hub.config import load_config
    from hub.pseudonyms.service import add_client as add

    path = _clients_path(clients, config)
    if domain is None:
        domain = load_config(config).pseudonym_domain
    token = add(
        path,
        {
            "id": client_id,
            "domain": domain,
            "daily_quota": daily_quota,
            "per_minute": per_minute,
            "convert_to": tuple(convert_to or ()),
            "rotate": rotate,
        },
    )
    console = Console()
    console.print(f"Client [bold]{client_id}[/bold] added to {path} (domain {domain}).")
    console.print("Its token (shown only now; give it to the client's worker as a secret):")
    print(token)


@app.command("remove-client")
def remove_client(
    client_id: Annotated[str, typer.Argument(metavar="ID", help="The client to revoke.")],
    clients: ClientsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a client (a lost or stolen token); restart the service afterwards."""
    from hub.pseudonyms.service import remove_client as remove

    path = _clients_path(clients, config)
    remove(path, client_id)
    Console().print(f"Client {client_id} removed from {path}; restart the service to apply it.")


@app.command("clients")
def list_clients(clients: ClientsOpt = None, config: ConfigOpt = None) -> None:
    """List the clients, their domains, limits and rights (never a token)."""
    from hub.pseudonyms.service import load_clients

    path = _clients_path(clients, config)
    console = Console()
    doc = load_clients(path)
    if not doc.clients:
        console.print(f"No clients in {path}: add one with `raccordo pseudonymiser add-client`.")
    for c in doc.clients:
        rights = ", ".join(
            [*(f"convert to {d}" for d in c.convert_to), *(["rotate"] if c.rotate else [])]
        )
        console.print(
            f"{c.id}: domain {c.domain}, {c.daily_quota} identifiers/24 h, {c.per_minute}/min"
            + (f"; {rights}" if rights else "")
        )


@app.command("verify-audit")
def verify_audit(
    log_dir: Annotated[
        Path | None, typer.Option(help="The service's log folder (default as for serve).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check that no line of the conversion audit log was removed or edited."""
    from hub.config import load_config
    from hub.errors import RaccordoError
    from hub.pseudonyms.service import first_broken_line

    path = (log_dir or load_config(config).resolve("logs/pseudonymiser")) / "audit.jsonl"
    if not path.is_file():
        Console().print(f"No audit log at {path}: no conversion was made.")
        return
    broken = first_broken_line(path)
    if broken is not None:
        raise RaccordoError(
            f"the audit log's chain breaks at line {broken}: a line before it was removed or "
            "edited, or this line was",
            where=str(path),
            hint="compare with the last backup of the log; report it to the district's DPO",
        )
    lines = len(path.read_bytes().splitlines())
    Console().print(f"Audit log {path}: {lines} conversions, chain intact.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (the district's network).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8780,
    clients: ClientsOpt = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="Request and audit logs (default: logs/pseudonymiser by raccordo.toml)."),
    ] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    insecure_http: Annotated[
        bool, typer.Option(help="Allow plain HTTP on an address other than localhost.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Serve blinded pseudonymisation, domain conversion and rotation over HTTP(S)."""
    import ipaddress

    import uvicorn

    from hub.errors import ConfigError

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not (ssl_certfile and ssl_keyfile) and not insecure_http:
        raise ConfigError(
            f"refusing to serve tokens and pseudonymisation over plain HTTP on {host}",
            where="raccordo pseudonymiser serve --host",
            hint="give --ssl-certfile and --ssl-keyfile (or put a TLS proxy in front and "
            "pass --insecure-http)",
        )

    from hub.config import load_config
    from hub.pseudonyms import Keyring, KeySource
    from hub.pseudonyms.service import create_service_app, load_clients

    cfg = load_config(config)
    keyring = Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))
    path = _clients_path(clients, config)
    doc = load_clients(path)
    logs = log_dir or cfg.resolve("logs/pseudonymiser")
    app_ = create_service_app(keyring, doc, logs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Console(stderr=True).print(
        f"Pseudonymisation service on {'https' if ssl_certfile else 'http'}://{host}:{port} "
        f"({len(doc.clients)} clients from {path}; logs in {logs})"
    )
    uvicorn.run(
        app_,
        host=host,
        port=port,
        access_log=False,  # our request log has the counts; paths and addresses are enough
        log_level="warning",
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
