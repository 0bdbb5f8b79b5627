"""Exchange's converter against the real pseudonymisation service (a separate process over
HTTP): pseudonyms of district A, converted for district B, equal B's own pseudonyms of the
same people; a domain the district has not allowed is refused with the service's reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import load_config
from hub.exchange.convert import ServiceConverter, convert_rows_values
from hub.exchange.errors import PackageRefused
from hub.pseudonyms import IdentifierType, Keyring, KeySource, Pseudonymiser, parse_identifier
from hub.pseudonyms.service import add_client
from hub.workspace import init_workspace
from tests.pseudonyms.server import Service, running_service
from tests.pseudonyms.test_v2 import synthetic_cfs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Service]]:
    ws = tmp_path_factory.mktemp("district-a")
    init_workspace(ws, district="DCSA", district_name="Distretto A", extra="")
    clients = ws / "keys" / "pseudonymiser-clients.json"
    token = add_client(clients, {"id": "hub-a", "domain": "DCSA", "convert_to": ("DCSB",)})
    with running_service(ws) as svc:
        yield ws, token, svc


def _keyring(ws: Path) -> Keyring:
    cfg = load_config(ws / "raccordo.toml")
    return Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))


def test_converted_pseudonyms_equal_the_recipients_own(service: tuple[Path, str, Service]) -> None:
    ws, token, svc = service
    ring = _keyring(ws)
    people = [parse_identifier(c, IdentifierType.CF) for c in synthetic_cfs(400, seed=11)]
    in_a = [Pseudonymiser(ring, "DCSA").pseudonym(p) for p in people]
    in_b = [Pseudonymiser(ring, "DCSB").pseudonym(p) for p in people]
    converter = ServiceConverter(svc.url, token=token)
    got = convert_rows_values(
        converter,
        from_domain="DCSA",
        to_domain="DCSB",
        purpose="persone seguite in due distretti",
        convenzione="CONV-A-B-2026",
        values=in_a + in_a[:50],  # repeated people are converted once
    )
    assert [got[p] for p in in_a] == in_b
    assert not set(in_a) & set(in_b)  # B never sees A's pseudonyms
    audit = [json.loads(x) for x in (svc.log_dir / "audit.jsonl").read_text().splitlines()]
    assert (audit[-1]["convenzione"], audit[-1]["count"]) == ("CONV-A-B-2026", 400)


def test_a_domain_not_allowed_is_refused(service: tuple[Path, str, Service]) -> None:
    ws, token, svc = service
    one = Pseudonymiser(_keyring(ws), "DCSA").pseudonym(parse_identifier("RSSMRA80A01H501U"))
    with pytest.raises(PackageRefused, match="may not convert to domain DCSC"):
        ServiceConverter(svc.url, token=token).convert(
            from_domain="DCSA",
            to_domain="DCSC",
            purpose="nessuna convenzione",
            convenzione="NONE",
            pseudonyms=[one],
        )


def test_a_value_that_is_not_a_pseudonym_is_refused_before_sending(
    service: tuple[Path, str, Service],
) -> None:
    _, token, svc = service
    with pytest.raises(PackageRefused, match="not a v2 pseudonym"):
        ServiceConverter(svc.url, token=token).convert(
            from_domain="DCSA",
            to_domain="DCSB",
            purpose="prova",
            convenzione="CONV-A-B-2026",
            pseudonyms=["RSSMRA80A01H501U"],
        )
