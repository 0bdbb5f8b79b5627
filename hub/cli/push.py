"""``raccordo push``: the district hub's side of push mode (workers' batches in, receipts out).

The worker's side is ``raccordo sync --push`` (or ``[hub] push_url``); see docs/exchange.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hub.cli.convenzioni import HomeOpt, people_errors
from hub.cli.options import ConfigOpt
from hub.cli.progress import run_progress
from hub.config import Config
from hub.errors import RaccordoError
from hub.registry import RunSummary

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help="Push mode: the district hub receives its consortia workers' batches.",
    no_args_is_help=True,
)


@app.command()
@people_errors
def serve(
    home: HomeOpt,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 18700,
) -> None:
    """Receive the workers' pushed batches (POST /v1/push) and load them until stopped."""
    from hub.service import serve_push

    console.print(f"Receiving pushed batches on http://{host}:{port}/v1/push")
    serve_push(config, home, host=host, port=port)


@app.command("add-worker")
@people_errors
def add_worker(
    worker: Annotated[str, typer.Argument(help="The worker's code (e.g. the consortium's).")],
    home: HomeOpt,
    org: Annotated[
        list[str], typer.Option("--org", help="An organisation the worker speaks for (repeat).")
    ],
    out: Annotated[Path, typer.Option(help="Folder to write the worker's push folder to.")],
) -> None:
    """Register a worker and write its push folder (its signing key, the hub's public keys)."""
    from hub.exchange.home import open_home
    from hub.exchange.push import add_worker as register

    w = register(open_home(home), worker, list(org), out)
    console.print(
        f"Registered worker {w.settings.worker} for {', '.join(org)} on {w.settings.hub}. "
        f"Copy {out} to the worker (it holds its private key, encrypted with the passphrase "
        "in RACCORDO_PUSH_WORKER_PASSPHRASE) and set [hub] push_home to it; the worker sets "
        "that passphrase as RACCORDO_EXCHANGE_PASSPHRASE."
    )


@app.command("encrypt-key")
@people_errors
def encrypt_key(
    folder: Annotated[Path, typer.Argument(help="The worker's push folder ([hub] push_home).")],
) -> None:
    """On a worker: encrypt a push folder's key written before keys were encrypted, with the
    passphrase in RACCORDO_EXCHANGE_PASSPHRASE."""
    from hub.exchange.push import encrypt_worker_key

    if encrypt_worker_key(folder):
        console.print(f"Encrypted {folder / 'keys' / 'signing.key'}.", soft_wrap=True)
    else:
        console.print(f"{folder / 'keys' / 'signing.key'} was already encrypted.", soft_wrap=True)


def sync_pushing(
    cfg: Config,
    targets: list[str],
    *,
    quiet: bool,
    full_refresh: bool,
    refresh: bool,
    print_run: Callable[[RunSummary], None],
) -> bool:
    """``raccordo sync`` in push mode: each connector's runs loaded by the hub; True if all
    succeeded."""
    from hub.service import push_sync

    ok = True
    for name in targets:
        with run_progress(err_console, f"{name}: pushing", quiet=quiet, target=" → hub") as show:
            try:
                summaries = push_sync(
                    cfg, name, progress=show, full_refresh=full_refresh, refresh=refresh
                )
            except RaccordoError as e:
                ok = False
                err_console.print(f"[red]error[/red] {name}: {escape(str(e))}", highlight=False)
                continue
        for s in summaries:
            print_run(s)
    return ok
