"""``raccordo exchange``: homes, keys, the receiving server, sending and status."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.convenzioni import HomeOpt, people_errors

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
    console.print(f"Created the exchange home of {h.party} in {h.path}.")
    console.print("Give the other party your public keys: `raccordo exchange keys --home ...`.")


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
