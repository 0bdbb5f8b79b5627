"""Rotation of a hub registry whose keys only the pseudonymisation service holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import load_config
from hub.pseudonyms.service import add_client
from tests.e2e.conftest import SYNTHETIC
from tests.pseudonyms.server import running_service
from tests.pseudonyms.test_rotation import _pseudonyms
from tests.support.workspace import make_workspace, sync


def _point_to(ws: Path, url: str) -> None:
    cfg = ws / "raccordo.toml"
    text = re.sub(r'(?m)^pseudonymiser_url = ".*"\n', "", cfg.read_text())
    cfg.write_text(text.replace("[hub]\n", f'[hub]\npseudonymiser_url = "{url}"\n', 1))


def test_hub_rotates_through_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    district = make_workspace(tmp_path / "service", SYNTHETIC.format(count=500))
    token = add_client(
        district / "keys" / "pseudonymiser-clients.json",
        {"id": "HUB", "domain": "TEST", "rotate": True},
    )
    hub = make_workspace(tmp_path / "hub", SYNTHETIC.format(count=500))
    shutil.rmtree(hub / "keys")
    monkeypatch.setenv("RACCORDO_PSEUDONYMISER_TOKEN", token)
    with running_service(district) as svc:
        _point_to(hub, svc.url)
        sync(hub, "syn")[1].close()
    url = load_config(hub / "raccordo.toml").registry_url
    assert all(p.startswith("v2.1.") for v in _pseudonyms(url).values() for p in v)

    cmd = [sys.executable, "-m", "hub", "keys"]
    added = subprocess.run(
        [*cmd, "add-epoch", "-c", str(district / "raccordo.toml")], capture_output=True, text=True
    )
    assert added.returncode == 0, added.stderr
    with running_service(district) as svc:
        _point_to(hub, svc.url)
        rotated = subprocess.run(
            [*cmd, "rotate", "--batch", "100", "-c", str(hub / "raccordo.toml")],
            capture_output=True,
            text=True,
            env={**os.environ, "RACCORDO_PSEUDONYMISER_TOKEN": token},
        )
        assert rotated.returncode == 0, rotated.stderr
        assert "converted to epoch 2" in rotated.stdout
        log = (svc.log_dir / "requests.jsonl").read_text()
        assert '"endpoint": "reepoch"' in log
    after = _pseudonyms(url)
    assert all(p.startswith("v2.2.") for v in after.values() for p in v)

    fresh = make_workspace(tmp_path / "fresh", SYNTHETIC.format(count=500), keys_from=district)
    sync(fresh, "syn")[1].close()
    assert _pseudonyms(load_config(fresh / "raccordo.toml").registry_url) == after
