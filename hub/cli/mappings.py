"""``raccordo mappings``: check mapping files before a sync uses them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hub.errors import MappingFileError
from hub.mappings import load_mapping, mapping_json_schema_text

app = typer.Typer(
    help="Check declarative mapping files and print their JSON Schema.", no_args_is_help=True
)

#: Where ``validate`` looks when given no files (relative to the current directory).
DEFAULT_DIR = Path("mappings")


def _targets(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.toml")) if p.is_dir() else [p])
    return out


@app.command()
def validate(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Mapping files or folders of them (default: every *.toml in ./mappings).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate mapping files; print each error with its location. Exit 6 if any is invalid."""
    targets = _targets(files) if files else _targets([DEFAULT_DIR]) if DEFAULT_DIR.is_dir() else []
    if not targets:
        where = ", ".join(str(f) for f in files) if files else f"./{DEFAULT_DIR}"
        typer.echo(f"No mapping files found in {where}.", err=True)
        raise typer.Exit(MappingFileError.exit_code)
    bad = 0
    for f in targets:
        try:
            spec = load_mapping(f)
        except MappingFileError as e:
            bad += 1
            typer.echo(f"INVALID {e.where or f}: {e.message}")
            for err in e.errors:
                typer.echo(f"  - {err}")
            if e.hint:
                typer.echo(f"  hint: {e.hint}")
            continue
        n = len(spec.records)
        typer.echo(f"OK {spec.name} {spec.version} ({n} record{'s' if n != 1 else ''})  {f}")
    if bad:
        typer.echo(f"{bad} of {len(targets)} mapping files invalid.", err=True)
        raise typer.Exit(MappingFileError.exit_code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of mapping files (what docs/schema/mapping.schema.json holds)."""
    typer.echo(mapping_json_schema_text(), nl=False)
