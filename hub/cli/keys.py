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
    if path.with_name("rotation-progress.json").exists():
        console.print(
            "  [yellow]a rotation is unfinished[/yellow]: run `raccordo keys rotate` to finish it"
        )


BatchOpt = Annotated[int, typer.Option(help="Rows converted per transaction.")]


@app.command()
def rotate(batch: BatchOpt = 10_000, config: ConfigOpt = None) -> None:
    """Start a new epoch and convert every pseudonym of the registry to it.

    No source is read again and no identifier is needed: each pseudonym is multiplied by
    ``k_new · k_old⁻¹``. Stop syncs first. Resumable: if it is interrupted, run it again.
    With ``[hub] pseudonymiser_url`` the service converts (its operator first adds the epoch
    with ``raccordo keys add-epoch`` on the service's machine).
    """
    _rotate(batch, config, keyring_only=False)


def _rotate(batch: int, config: Path | None, *, keyring_only: bool) -> None:
    from hub.config import load_config
    from hub.pseudonyms.rotation import (
        TODAY_BINARY_TABLES,
        TODAY_JSON_COLUMNS,
        RotationProgress,
        keyring_converter,
        rotate_columns,
        today_registry_columns,
    )
    from hub.registry import Registry

    console = Console()
    cfg = load_config(config)
    if cfg.hub.pseudonymiser_url and not keyring_only:
        from hub.pseudonyms import open_pseudonymiser
        from hub.pseudonyms.remote import RemotePseudonymiser, remote_epoch_converter

        client = open_pseudonymiser(cfg)
        assert isinstance(client, RemotePseudonymiser)
        to_epoch, convert = remote_epoch_converter(client)
        progress = RotationProgress(cfg.resolve("rotation-progress.json"))
        doc = progress.load() or {"to_epoch": to_epoch, "done": {}}
    else:
        ring = Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))
        progress = RotationProgress(cfg.keyring_path.with_name("rotation-progress.json"))
        doc = progress.load() or {"to_epoch": max(ring.epochs) + 1, "done": {}}
        progress.save(doc)  # first: a crash before the keyring is saved resumes here
        if ring.current_epoch < int(str(doc["to_epoch"])):
            ring.rotate()
        to_epoch = ring.current_epoch
        if keyring_only:
            progress.clear()
            console.print(f"Epoch {to_epoch} added and made current (no registry converted).")
            return
        convert = keyring_converter(ring, cfg.pseudonym_domain, to_epoch)
    if int(str(doc["to_epoch"])) != to_epoch:
        raise KeyringError(
            f"an unfinished rotation to epoch {doc['to_epoch']} is recorded, but the key "
            f"holder's current epoch is {to_epoch}",
            where=str(progress.path),
            hint="finish that rotation with the same keys, or remove the file if the keyring "
            "was restored from a backup",
        )
    done = doc["done"]
    assert isinstance(done, dict)
    resumed = bool(done)
    registry = Registry.open(cfg.registry_url)

    def mark(column: str, last_id: int) -> None:
        done[column] = last_id
        progress.save(doc)

    report = rotate_columns(
        registry.engine,
        today_registry_columns(),
        convert,
        to_epoch,
        batch=batch,
        start=done,
        on_batch=mark,
        json_columns=TODAY_JSON_COLUMNS,
        binary_tables=TODAY_BINARY_TABLES,
    )
    registry.close()
    progress.clear()
    console.print(
        f"{'Resumed and finished' if resumed else 'Finished'}: {report.converted} pseudonyms "
        f"converted to epoch {to_epoch} ({report.already} were already in it)."
    )
    console.print(
        "When backups made before the rotation are no longer needed, destroy the old key "
        "with `raccordo keys retire EPOCH`."
    )


@app.command("add-epoch")
def add_epoch(config: ConfigOpt = None) -> None:
    """Add a new current epoch to the keyring only (on the pseudonymisation service's
    machine, before the district hub runs `raccordo keys rotate` through the service)."""
    _rotate(0, config, keyring_only=True)


@app.command()
def retire(
    epoch: Annotated[int, typer.Argument(help="The epoch whose key is destroyed.")],
    config: ConfigOpt = None,
) -> None:
    """Destroy the key of an old epoch, once no pseudonym of the registry uses it."""
    from hub.config import load_config
    from hub.pseudonyms.rotation import (
        TODAY_BINARY_TABLES,
        TODAY_JSON_COLUMNS,
        epochs_in_use,
        json_mentions_epoch,
        today_registry_columns,
    )
    from hub.registry import Registry

    cfg = load_config(config)
    ring = Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))
    if epoch == ring.current_epoch or epoch not in ring.epochs:
        ring.retire(epoch)  # refuses, saying why
    registry = Registry.open(cfg.registry_url)
    used = epochs_in_use(registry.engine, today_registry_columns(), TODAY_BINARY_TABLES)
    in_json = json_mentions_epoch(registry.engine, TODAY_JSON_COLUMNS, epoch)
    registry.close()
    if epoch in used or in_json:
        raise KeyringError(
            f"pseudonyms of epoch {epoch} are still in the registry",
            where=cfg.registry_url,
            hint="run `raccordo keys rotate` (it resumes an interrupted rotation) first",
        )
    ring.retire(epoch)
    Console().print(f"The key of epoch {epoch} is destroyed; the keyring keeps {ring.epochs}.")
