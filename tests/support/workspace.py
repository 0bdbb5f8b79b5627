"""Workspaces for end-to-end tests: a real raccordo.toml, keyring and registry."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from hub.config import load_config
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry, RunSummary
from hub.workspace import init_workspace


def make_workspace(
    directory: Path,
    extra: str,
    *,
    registry_url: str | None = None,
    keys_from: Path | None = None,
    batch_size: int | None = None,
    commit_every: int | None = None,
) -> Path:
    """``raccordo init`` plus the given organisations/connectors; optionally another
    registry, the keyring of another workspace (same pseudonyms), another batch size
    and records per transaction."""
    if keys_from is not None:
        shutil.copytree(keys_from / "keys", directory / "keys")
    cfg = init_workspace(
        directory, district="TEST", district_name="Distretto di prova", extra=extra
    )
    text = cfg.read_text()
    if registry_url:
        text = text.replace(
            'registry_url = "sqlite:///registry.sqlite"', f'registry_url = "{registry_url}"'
        )
    if batch_size:
        text, n = re.subn(r"(?m)^batch_size = [0-9]+$", f"batch_size = {batch_size}", text)
        assert n == 1, "the workspace template no longer sets batch_size"
    if commit_every:
        text, n = re.subn(r"(?m)^commit_every = [0-9]+$", f"commit_every = {commit_every}", text)
        assert n == 1, "the workspace template no longer sets commit_every"
    cfg.write_text(text)
    return directory


def sync(ws: Path, name: str) -> tuple[list[RunSummary], Registry]:
    """Sync one connector through the real pipeline; returns its runs and the open registry."""
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    return Pipeline(cfg, reg, open_keyring(cfg)).sync(name), reg
