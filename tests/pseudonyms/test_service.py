"""The pseudonymisation service as a real process over HTTP: blinded evaluation equals the
embedded pseudonymiser, quotas refuse and log, conversion is audited, logs leak nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import load_config
from hub.pseudonyms import (
    IdentifierType,
    Keyring,
    KeySource,
    Pseudonymiser,
    group,
    parse_identifier,
)
from hub.pseudonyms.remote import RemotePseudonymiser, ServiceError
from hub.pseudonyms.service import add_client, verify_chain
from hub.workspace import init_workspace
from tests.pseudonyms.server import Service, running_service
from tests.pseudonyms.test_v2 import synthetic_cfs
from tests.support.leakscan import assert_no_leaks, scan_paths

District = tuple[Path, dict[str, str], Service]


@pytest.fixture(scope="module")
def district(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, dict[str, str], Service]]:
    ws = tmp_path_factory.mktemp("district")
    init_workspace(ws, district="TEST", district_name="Distretto di prova", extra="")
    clients = ws / "keys" / "pseudonymiser-clients.json"
    tokens = {
        "worker": add_client(clients, {"id": "worker", "domain": "TEST"}),
        "small": add_client(
            clients, {"id": "small", "domain": "TEST", "daily_quota": 500, "per_minute": 10_000}
        ),
        "hub": add_client(
            clients,
            {"id": "hub", "domain": "TEST", "convert_to": ("OTHER",), "rotate": True},
        ),
    }
    with running_service(ws) as svc:
        yield ws, tokens, svc


def _keyring(ws: Path) -> Keyring:
    cfg = load_config(ws / "raccordo.toml")
    return Keyring.open(cfg.keyring_path, KeySource.from_env(cfg.keyring_key_file))


def _idents(n: int) -> list:  # type: ignore[type-arg]
    out = [parse_identifier(c, IdentifierType.CF) for c in synthetic_cfs(n, seed=3)]
    out.append(parse_identifier("STP1234567890123"))
    out.append(parse_identifier("X-9", IdentifierType.LOCAL, namespace="ENTE1"))
    return out


def test_remote_equals_embedded(district: District) -> None:
    ws, tokens, svc = district
    idents = _idents(2_500)
    remote = RemotePseudonymiser(svc.url, tokens["worker"], batch_size=1_000)
    embedded = Pseudonymiser(_keyring(ws), "TEST")
    assert (remote.domain, remote.epoch) == ("TEST", embedded.epoch)
    got = remote.pseudonymise_many(idents)
    assert got == embedded.pseudonymise_many(idents)
    assert remote.pseudonym(idents[0]) == embedded.pseudonym(idents[0])
    # The worker's record key is its own, not the district's.
    assert remote.key_hash("a", "b") != embedded.key_hash("a", "b")
    lines = [json.loads(x) for x in (svc.log_dir / "requests.jsonl").read_text().splitlines()]
    evaluated = [x for x in lines if x["client"] == "worker" and x["endpoint"] == "evaluate"]
    assert [x["count"] for x in evaluated] == [1_000, 1_000, 502]
    assert all(set(x) <= {"time", "client", "endpoint", "count", "outcome", "epoch"} for x in lines)


def test_the_service_sees_only_blinded_elements(
    district: District,
) -> None:
    """Two blinded requests for the same identifier send unrelated elements."""
    _, tokens, svc = district
    remote = RemotePseudonymiser(svc.url, tokens["worker"])
    sent: list[list[str]] = []
    call = remote._call

    def spy(method: str, path: str, body: dict | None) -> dict:  # type: ignore[type-arg]
        if body:
            sent.append(body["elements"])
        return call(method, path, body)

    remote._call = spy  # type: ignore[method-assign]
    ident = parse_identifier("RSSMRA80A01H501U")
    a = remote.pseudonymise_many([ident])
    remote._cache.clear()
    b = remote.pseudonymise_many([ident])
    assert a == b and sent[0] != sent[1]
    from hub.pseudonyms.pseudonymiser import b64url, hash_input

    assert b64url(group.hash_to_group(hash_input(ident, "TEST"))) not in sent[0] + sent[1]


def test_over_quota_is_refused_and_logged(district: District) -> None:
    _, tokens, svc = district
    remote = RemotePseudonymiser(svc.url, tokens["small"])
    idents = _idents(600)
    remote.pseudonymise_many(idents[:400])
    with pytest.raises(ServiceError, match=r"HTTP 429.*quota of 500") as e:
        remote.pseudonymise_many(idents[400:])
    assert "raise the quota" in str(e.value)
    lines = [json.loads(x) for x in (svc.log_dir / "requests.jsonl").read_text().splitlines()]
    refused = [x for x in lines if x["client"] == "small" and x["outcome"] == "refused_quota"]
    assert [x["count"] for x in refused] == [len(idents) - 400]
    assert "client small refused" in svc.stderr.read_text()


def test_unknown_token_is_refused(district: District) -> None:
    _, _, svc = district
    with pytest.raises(ServiceError, match="HTTP 401") as e:
        RemotePseudonymiser(svc.url, "not-a-token")
    assert "token is wrong" in str(e.value)
    with pytest.raises(ServiceError, match="cannot reach"):
        RemotePseudonymiser("http://127.0.0.1:1", "x", timeout=2)


def test_conversion_a_to_b_equals_direct_and_is_audited(
    district: District,
) -> None:
    import requests

    from hub.pseudonyms.pseudonymiser import b64url, unb64url

    ws, tokens, svc = district
    ring = _keyring(ws)
    idents = _idents(300)[:300]
    in_a = Pseudonymiser(ring, "TEST").pseudonymise_many(idents)
    direct_b = Pseudonymiser(ring, "OTHER").pseudonymise_many(idents)
    body = {
        "to_domain": "OTHER",
        "purpose": "trasferimento di presa in carico",
        "convenzione": "CONV-2026-07",
        "pseudonyms": [b64url(x) for x in in_a],
    }
    auth = {"Authorization": f"Bearer {tokens['hub']}"}
    r = requests.post(svc.url + "/v1/convert", json=body, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert [unb64url(x) for x in r.json()["pseudonyms"]] == direct_b
    audit = [json.loads(x) for x in (svc.log_dir / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["client"] == "hub" and audit[-1]["count"] == 300
    assert (audit[-1]["purpose"], audit[-1]["convenzione"]) == (body["purpose"], "CONV-2026-07")
    assert len(audit[-1]["digest"]) == 64 and verify_chain(svc.log_dir / "audit.jsonl")
    assert not any(b64url(x) in (svc.log_dir / "audit.jsonl").read_text() for x in in_a)

    local = requests.post(
        svc.url + "/v1/convert", json={**body, "kind": "local"}, headers=auth, timeout=30
    )
    assert local.status_code == 422 and "LOCAL pseudonyms are never converted" in local.text
    other = requests.post(
        svc.url + "/v1/convert", json={**body, "to_domain": "THIRD"}, headers=auth, timeout=30
    )
    assert other.status_code == 403
    worker = {"Authorization": f"Bearer {tokens['worker']}"}
    denied = requests.post(svc.url + "/v1/convert", json=body, headers=worker, timeout=30)
    assert denied.status_code == 403
    assert len((svc.log_dir / "audit.jsonl").read_text().splitlines()) == len(audit)


def test_bad_requests_are_explained_without_echoing_values(
    district: District,
) -> None:
    import requests

    _, tokens, svc = district
    auth = {"Authorization": f"Bearer {tokens['worker']}"}
    cf = "RSSMRA80A01H501U"
    r = requests.post(svc.url + "/v1/evaluate", json={"elements": [cf]}, headers=auth, timeout=30)
    assert r.status_code == 422 and cf not in r.text
    r = requests.post(
        svc.url + "/v1/evaluate", json={"elements": ["A" * 43]}, headers=auth, timeout=30
    )
    assert r.status_code == 422 and "not a ristretto255 element" in r.text


def test_service_logs_leak_nothing(district: District) -> None:
    _, tokens, svc = district
    remote = RemotePseudonymiser(svc.url, tokens["worker"])
    codes = synthetic_cfs(200, seed=3)
    remote.pseudonymise_many([parse_identifier(c, IdentifierType.CF) for c in codes])
    assert_no_leaks(
        scan_paths([svc.log_dir, svc.stderr], values=[*codes, "STP1234567890123", "X-9"])
    )


def test_oversized_bodies_are_refused(district: District) -> None:
    import requests

    _, tokens, svc = district
    auth = {"Authorization": f"Bearer {tokens['worker']}", "Content-Type": "application/json"}
    r = requests.post(svc.url + "/v1/evaluate", data=b"x" * 2_000_000, headers=auth, timeout=30)
    assert r.status_code == 413 and "at most 10000 elements" in r.json()["error"]


def test_plain_http_off_localhost_is_refused(district: District) -> None:
    import subprocess
    import sys

    ws, _, _ = district
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "pseudonymiser",
            "serve",
            "--host",
            "0.0.0.0",
            "-c",
            str(ws / "raccordo.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3 and "plain HTTP" in res.stderr and "--ssl-certfile" in res.stderr


def test_clients_listed_revoked_and_audit_log_verified(tmp_path: Path) -> None:
    import subprocess
    import sys

    from hub.pseudonyms.service import remove_client

    ws = tmp_path / "ws"
    init_workspace(ws, district="TEST", district_name="Distretto di prova", extra="")
    clients = ws / "keys" / "pseudonymiser-clients.json"
    token = add_client(clients, {"id": "a", "domain": "TEST", "convert_to": ("OTHER",)})
    add_client(clients, {"id": "b", "domain": "TEST"})
    cmd = [sys.executable, "-m", "hub", "pseudonymiser"]
    cfg = ["-c", str(ws / "raccordo.toml")]
    listed = subprocess.run([*cmd, "clients", *cfg], capture_output=True, text=True)
    assert "a: domain TEST" in listed.stdout and "convert to OTHER" in listed.stdout
    assert token not in listed.stdout and token not in clients.read_text()
    remove_client(clients, "b")
    listed = subprocess.run([*cmd, "clients", *cfg], capture_output=True, text=True)
    assert "b: domain" not in listed.stdout

    log = ws / "logs" / "pseudonymiser" / "audit.jsonl"
    from hub.pseudonyms.service import _JsonLines

    lines = _JsonLines(log, chain=True)
    for n in range(3):
        lines.append({"count": n})
    ok = subprocess.run([*cmd, "verify-audit", *cfg], capture_output=True, text=True)
    assert ok.returncode == 0 and "3 conversions, chain intact" in ok.stdout
    text = log.read_text().splitlines()
    log.write_text("\n".join([text[0], text[2]]) + "\n")  # a line removed
    bad = subprocess.run([*cmd, "verify-audit", *cfg], capture_output=True, text=True)
    assert bad.returncode == 1 and "breaks at line 2" in bad.stderr
