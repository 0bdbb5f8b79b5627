"""``raccordo keys``: create and inspect the pseudonymisation keyring."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import ConfigOpt
from hub.errors import KeyringError
from hub.pseudonyms import Keyring, KeySource

app = typer.Typer(
    help="Create and inspect the pseudonymisation keyring (never shows secrets).",
    no_args_is_help=True,
)

KeyringOpt = Annotated[
    Path | None, typer.Option(help="Keyring file (default: the one named in raccordo.toml).")
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(help="Key file unlocking it (default: keyring_key_file in raccordo.toml)."),
]


def _paths(
    keyring: Path | None, key_file: Path | None, config: Path | None
) -> tuple[Path, Path | None]:
    if keyring is not None:
        return keyring, key_file
    from hub.config import load_config

    cfg = load_config(config)
    return cfg.keyring_path, key_file or cfg.keyring_key_file


@app.command()
def init(keyring: KeyringOpt = None, key_file: KeyFileOpt = None, config: ConfigOpt = None) -> None:
    """Create a new keyring. Without a key in the environment, a key file is generated."""
    console = Console()
    path, kf = _paths(keyring, key_file, config)
    try:
        source = KeySource.from_env(kf)
        created_key = None
    except KeyringError:
        kf = kf or path.with_suffix(".key")
        source = KeySource.generate_key_file(kf)
        created_key = kf
    Keyring.create(path, source)
    console.print(f"Keyring created: [bold]{path}[/bold]")
    if created_key:
        console.print(
            f"Key file created: [bold]{created_key}[/bold] (mode 0600). Back it up "
            "offline and keep it off the registry server: without it the keyring "
            "cannot be opened, and whoever has both can re-identify pseudonyms."
        )


@app.command()
def status(
    keyring: KeyringOpt = None, key_file: KeyFileOpt = None, config: ConfigOpt = None
) -> None:
    """Show the keyring's epochs and how it is locked (no secrets)."""
    console = Console()
    path, kf = _paths(keyring, key_file, config)
    st = Keyring.open(path, KeySource.from_env(kf)).status()
    console.print(f"Keyring {st.path} (format {st.format}, locked by {st.kdf})")
    for epoch, created in st.epochs:
        mark = " (current)" if epoch == st.current_epoch else ""
        console.print(f"  epoch {epoch}: created {created}{mark}")
