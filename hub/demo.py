"""``raccordo demo``: a fictional district loaded through the real pipeline.

Creates (or reuses) a workspace with a synthetic source, syncs it with the
same code path as ``raccordo sync`` and prints the run accounting and what
the registry now holds.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from hub.config import load_config
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry
from hub.registry import tables as t
from hub.workspace import init_workspace

DEMO_CONNECTORS = """
[organisations.SYN]
name = "Consorzio sintetico di prova"
kind = "ente_gestore"

[connectors.synthetic_demo]
type = "synthetic"
org = "SYN"
mapping = "synthetic.toml"
description = "Synthetic case records: valid, repeated and deliberately bad ones"
[connectors.synthetic_demo.config]
count = 10000
bad_ratio = 0.03
seed = 7
"""


def run_demo(workspace: Path, *, serve: bool, console: Console) -> None:
    cfg_path = workspace / "raccordo.toml"
    if not cfg_path.exists():
        init_workspace(workspace, district="DEMO", district_name="Distretto dimostrativo",
                       extra=DEMO_CONNECTORS)
        console.print(f"Demo workspace created in [bold]{workspace.resolve()}[/bold]")
    cfg = load_config(cfg_path)
    registry = Registry.open(cfg.registry_url)
    pipeline = Pipeline(cfg, registry, open_keyring(cfg))
    for name, c in cfg.settings.connectors.items():
        if not c.enabled:
            continue
        for s in pipeline.sync(name):
            console.print(
                f"run {s.id} {s.connector}: read {s.read:,} = loaded {s.loaded:,} + "
                f"unchanged {s.unchanged:,} + quarantined {s.quarantined:,}"
            )
    table = Table(title="Registry contents by organisation")
    table.add_column("table")
    orgs = list(cfg.settings.organisations)
    for org in orgs:
        table.add_column(org, justify="right")
    for kind, tbl in t.RECORD_TABLES.items():
        table.add_row(tbl.name, *[f"{registry.count(kind, org=o):,}" for o in orgs])
    console.print(table)
    console.print(f"Why records were refused: raccordo quarantine list --config {cfg_path}")
    console.print(f"All runs: raccordo runs --config {cfg_path}")
    registry.close()
    if serve:
        console.print("The web app is not part of this version yet: nothing to serve.")
