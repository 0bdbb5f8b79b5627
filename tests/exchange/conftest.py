"""Two parties' exchange homes and a convenzione between them, signed by both."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.exchange import convenzioni as cv
from hub.exchange import keyfile
from hub.exchange.home import Home, init_home
from hub.exchange.keyfile import PASSPHRASE_ENV

TODAY = dt.date.today()
#: The passphrase the test homes' keys are encrypted with (docs/exchange.md, "Keys at rest").
PASSPHRASE = "passphrase of the test homes"


@pytest.fixture(autouse=True)
def exchange_passphrase(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every process a test starts inherits it, as a hub's service would. Keys written
    here take a cheap scrypt (the cost is in each file's header, read from there)."""
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    # Push workers made here get the same one (on a real hub: the worker's own).
    monkeypatch.setenv(keyfile.WORKER_PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.setattr(keyfile, "SCRYPT_N", 2**10)
    return PASSPHRASE


RECORD_FLOW: dict[str, Any] = {
    "from": "DISTRETTO_A",
    "to": "DISTRETTO_B",
    "kind": "records",
    # The scenarios send several times a day; tests/exchange/test_frequency.py checks limits.
    "frequency": "on_demand",
    "tables": {
        "subject": ["subject", "birth_year", "sex"],
        "case_episode": ["subject", "area", "opened_on", "closed_on"],
    },
}
AGGREGATE_FLOW: dict[str, Any] = {
    "from": "DISTRETTO_B",
    "to": "DISTRETTO_A",
    "kind": "aggregates",
    "frequency": "on_demand",
    "indicators": {"prese_in_carico": {"k": 5}},
}


def party_entry(home: Home, name: str, endpoint: str = "") -> dict[str, str]:
    return {
        "code": home.party,
        "name": name,
        "endpoint": endpoint,
        "pseudonym_domain": home.settings.pseudonym_domain,
        **home.public_keys(),
    }


def write_convenzione(
    folder: Path,
    a: Home,
    b: Home,
    *,
    conv_id: str = "conv-A-B-2026",
    start: dt.date | None = None,
    expiry: dt.date | None = None,
    flows: list[dict[str, Any]] | None = None,
    endpoint_b: str = "",
    endpoint_a: str = "",
) -> Path:
    text = cv.draft_toml(
        conv_id=conv_id,
        title="Continuità della presa in carico tra i distretti A e B",
        purpose="continuita-presa-in-carico",
        purpose_description="People followed by both districts, and transfers between them.",
        legal_basis="Art. 2-sexies d.lgs. 196/2003; accordo ex art. 15 l. 241/1990",
        start=start or TODAY - dt.timedelta(days=30),
        expiry=expiry or TODAY + dt.timedelta(days=365),
        retention_days=365,
        parties=[
            party_entry(a, "Distretto A", endpoint_a),
            party_entry(b, "Distretto B", endpoint_b),
        ],
        flows=flows or [RECORD_FLOW, AGGREGATE_FLOW],
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{conv_id}.toml"
    path.write_text(text)
    return path


def sign_both(path: Path, a: Home, b: Home) -> None:
    cv.sign(path, a.party, a.signing_key)
    cv.sign(path, b.party, b.signing_key)


def share(path: Path, *homes: Home) -> None:
    """Copy a convenzione file and its signatures into each home, as both parties keep it."""
    for h in homes:
        dest = h.path / "convenzioni"
        for suffix in ("", ".sig", ".revoked"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                (dest / src.name).write_bytes(src.read_bytes())


@dataclass
class Parties:
    a: Home
    b: Home
    conv: Path


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    a = init_home(tmp_path / "A", party="DISTRETTO_A", pseudonym_domain="DOM_A")
    b = init_home(tmp_path / "B", party="DISTRETTO_B", pseudonym_domain="DOM_B")
    conv = write_convenzione(tmp_path / "shared", a, b)
    sign_both(conv, a, b)
    share(conv, a, b)
    return Parties(a, b, conv)
