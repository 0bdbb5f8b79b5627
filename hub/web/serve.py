"""``raccordo serve``: run the web app with uvicorn."""

from __future__ import annotations

import uvicorn
from rich.console import Console

from hub.config import Config
from hub.web.app import VENDOR, create_app


def serve_app(
    config: Config, *, console: Console, host: str | None = None, port: int | None = None
) -> None:
    web = config.settings.web
    host = host or web.host
    port = port or web.port
    if not (VENDOR / "css").exists():
        console.print(
            "[yellow]Bootstrap Italia is not installed: pages will be unstyled. "
            "Run scripts/build-assets.sh (make does it).[/yellow]"
        )
    app = create_app(config)
    console.print(f"Serving on [bold]http://{host}:{port}/[/bold] (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
