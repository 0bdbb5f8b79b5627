"""``raccordo serve``: run the web app with uvicorn, in one or several worker processes.

With several workers each process builds its own app from the configuration file
(named in an environment variable the workers inherit); sessions, login limits
and upload jobs live in the shared state store, so any worker serves any request.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from rich.console import Console

from hub.config import Config, load_config
from hub.web.app import create_app
from hub.web.pages import VENDOR

CONFIG_ENV = "RACCORDO_WEB_CONFIG"


def app_from_environment() -> FastAPI:
    """The app of one worker process (uvicorn's factory)."""
    return create_app(load_config(os.environ[CONFIG_ENV]))


def serve_app(
    config: Config,
    *,
    console: Console,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    web = config.settings.web
    host = host or web.host
    port = port or web.port
    workers = workers or web.workers
    if not (VENDOR / "css").exists():
        console.print(
            "[yellow]Bootstrap Italia is not installed: pages will be unstyled. "
            "Run scripts/build-assets.sh (make does it).[/yellow]"
        )
    console.print(
        f"Serving on [bold]http://{host}:{port}/[/bold] with {workers} worker"
        f"{'s' if workers > 1 else ''} (Ctrl+C to stop)"
    )
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
        return
    os.environ[CONFIG_ENV] = str(config.path.resolve())
    uvicorn.run(
        "hub.web.serve:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
