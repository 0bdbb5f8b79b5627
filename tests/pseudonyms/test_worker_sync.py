"""A consortium worker with no keyring syncs through the district's service, and its
registry holds exactly the pseudonyms an embedded sync computes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.synthetic import SyntheticConfig, SyntheticConnector
from hub.config import load_config
from hub.connector import RawRecord
from hub.errors import KeyringError
from hub.pseudonyms.service import add_client
from tests.e2e.conftest import SYNTHETIC
from tests.pseudonyms.server import running_service
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.workspace import make_workspace, sync


def _subjects(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {r[0] for r in conn.execute(sa.text("SELECT subject FROM subjects"))}
    engine.dispose()
    return rows


def test_worker_without_keyring_syncs_through_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    district = make_workspace(tmp_path / "district", SYNTHETIC.format(count=2_000))
    (embedded,) = sync(district, "syn")[0]
    token = add_client(
        district / "keys" / "pseudonymiser-clients.json", {"id": "SYN", "domain": "TEST"}
    )
    worker = make_workspace(tmp_path / "worker", SYNTHETIC.format(count=2_000))
    shutil.rmtree(worker / "keys")  # the worker holds no key at all
    with running_service(district) as svc:
        cfg = worker / "raccordo.toml"
        cfg.write_text(
            cfg.read_text().replace("[hub]\n", f'[hub]\npseudonymiser_url = "{svc.url}"\n', 1)
        )
        monkeypatch.delenv("RACCORDO_PSEUDONYMISER_TOKEN", raising=False)
        with pytest.raises(Exception, match="no token for the pseudonymisation service"):
            sync(worker, "syn")
        monkeypatch.setenv("RACCORDO_PSEUDONYMISER_TOKEN", token)
        (remote,) = sync(worker, "syn")[0]
        logs = svc.log_dir
    assert (remote.read, remote.loaded, remote.quarantined) == (
        embedded.read,
        embedded.loaded,
        embedded.quarantined,
    )
    d_url = load_config(district / "raccordo.toml").registry_url
    w_url = load_config(worker / "raccordo.toml").registry_url
    assert _subjects(w_url) == _subjects(d_url) and len(_subjects(w_url)) > 100
    assert not (worker / "keys").exists()

    cfs, names = set(), set()
    for item in SyntheticConnector(SyntheticConfig(count=2_000, bad_ratio=0.03, seed=11)).read(
        "cases", {}
    ):
        if isinstance(item, RawRecord):
            cfs.add(str(item.data["cf"]))
            names.update({str(item.data["cognome"]), str(item.data["nome"])})
    assert_no_leaks(
        scan_paths([worker, logs], names=names, values=cfs)
        + scan_database(w_url, names=names, values=cfs)
    )


def test_without_service_or_keyring_the_error_says_what_to_do(tmp_path: Path) -> None:
    worker = make_workspace(tmp_path / "w", SYNTHETIC.format(count=10))
    shutil.rmtree(worker / "keys")
    with pytest.raises(KeyringError, match="no key to unlock the keyring") as e:
        sync(worker, "syn")
    assert "pseudonymiser_url" in str(e.value)
