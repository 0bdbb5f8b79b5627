"""``ets_form`` through the contract suite, over a registry holding a few Third Sector entries."""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from pathlib import Path

from connectors.ets_form import ETSForm, ETSFormConfig
from hub.registry import Registry
from hub.registry import tables as t
from hub.sdk.testing import connector_contract_tests

_DB = Path(tempfile.mkdtemp(prefix="raccordo-ets-contract-")) / "registry.sqlite"


def _intake() -> str:
    """A registry with 12 entries (two organisations, one deleted), built once."""
    url = f"sqlite:///{_DB}"
    if _DB.exists():
        return url
    reg = Registry.open(url)
    now = dt.datetime.now(dt.UTC)
    with reg.engine.begin() as conn:
        for i in range(12):
            conn.execute(
                t.ets_entries.insert().values(
                    entry_uuid=str(uuid.UUID(int=i + 1)),
                    org="ETS1" if i % 2 else "ETS2",
                    seq=i + 1,
                    subject=None,
                    identifier_kind="none",
                    tag=None,
                    needs="ABIT|ALIM",
                    services_given="PACCO",
                    comune_istat="003106",
                    on=dt.date(2024, 1, 1 + i),
                    referred_by_social_services=bool(i % 3),
                    birth_year=1950 + i,
                    sex="F" if i % 2 else "M",
                    deleted=i == 7,
                    created_by=None,
                    created_at=now,
                    updated_at=now,
                )
            )
    reg.close()
    return url


TestETSFormContract = connector_contract_tests(
    lambda: ETSForm(ETSFormConfig(database_url=_intake(), checkpoint_every=5))
)


def test_reads_in_seq_order_with_deletions() -> None:
    conn = ETSForm(ETSFormConfig(database_url=_intake(), checkpoint_every=5))
    records = [i for i in conn.read("entries", {}) if hasattr(i, "data")]
    assert [r.location for r in records][:2] == ["ets_entries seq 1", "ets_entries seq 2"]
    assert [r.op for r in records].count("delete") == 1
    assert {r.org for r in records} == {"ETS1", "ETS2"}
