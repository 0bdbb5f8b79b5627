"""Options shared by every ``raccordo`` subcommand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Path of raccordo.toml (default: $RACCORDO_CONFIG or ./raccordo.toml).",
        envvar="RACCORDO_CONFIG",
        show_envvar=True,
    ),
]
