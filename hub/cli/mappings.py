"""``raccordo mappings``: check mapping files before a sync uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.errors import MappingFileError
from hub.mappings import load_mapping, mapping_json_schema

app = typer.Typer(
    help="Check declarative mapping files and print their JSON Schema.", no_args_is_help=True
)


@app.command()
def validate(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Mapping files (default: every *.toml in ./mappings)."),
    ] = None,
) -> None:
    """Validate mapping files; print each error with its location. Exit 6 if any is invalid."""
    console = Console()
    targets = files or sorted(Path("mappings").glob("*.toml"))
    if not targets:
        console.print("No mapping files found (looked in ./mappings).")
        raise typer.Exit(0)
    bad = 0
    for f in targets:
        try:
            spec = load_mapping(f)
        except MappingFileError as e:
            bad += 1
            console.print(f"[red]INVALID[/red] {e}", highlight=False)
            continue
        console.print(
            f"[green]OK[/green] {f}: {spec.name} version {spec.version} "
            f"({len(spec.records)} record types)",
            highlight=False,
        )
    if bad:
        raise typer.Exit(MappingFileError.exit_code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of mapping files (for editors)."""
    print(json.dumps(mapping_json_schema(), indent=2))
