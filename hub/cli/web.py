"""``raccordo serve`` and ``raccordo users``: the web app and its accounts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import ConfigOpt
from hub.config import load_config

console = Console()


users_app = typer.Typer(
    help="Accounts of the web app (admin, ETS operators, analysts).", no_args_is_help=True
)


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on ([web] host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on ([web] port).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes ([web] workers, default 1)."),
    ] = None,
) -> None:
    """Serve the web app: Third Sector entry, restituzione, dashboard, JSON API."""
    from hub.web.serve import serve_app

    serve_app(load_config(config), console=console, host=host, port=port, workers=workers)


def _engine(config: Path | None):  # type: ignore[no-untyped-def]
    from hub.registry import Registry

    return Registry.open(load_config(config).registry_url).engine


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="User name for signing in.")],
    role: Annotated[str, typer.Option(help="admin, ets or analyst.")],
    org: Annotated[
        str | None,
        typer.Option(help="Organisation code (required for ets; a consortium for analysts)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user; the password is asked twice and never shown."""
    from hub.web import accounts

    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = accounts.create_user(_engine(config), username, password, role, org)
    console.print(
        f"Created {user.role} [bold]{user.username}[/bold]" + (f" ({org})" if org else "")
    )


@users_app.command("password")
def users_password(
    username: Annotated[str, typer.Argument(help="User whose password to change.")],
    config: ConfigOpt = None,
) -> None:
    """Set a new password for a user."""
    from hub.web import accounts

    password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    accounts.set_password(_engine(config), username, password)
    console.print(f"Password of [bold]{username}[/bold] changed")


@users_app.command("list")
def users_list(config: ConfigOpt = None) -> None:
    """List users with their role and organisation."""
    from hub.web import accounts

    for u in accounts.list_users(_engine(config)):
        state = "" if u["active"] else " (disabled)"
        console.print(f"{u['username']:<20} {u['role']:<8} {u['org'] or '-'}{state}")
