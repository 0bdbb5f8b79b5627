"""Exchange between separate processes on loopback, over real HTTP.

District A (SQLite registry) sends with ``raccordo exchange send`` (a process per run);
district B (PostgreSQL registry) receives with ``raccordo exchange serve`` (a process);
the pseudonymisation service is the real ``raccordo pseudonymiser serve`` (a process) over
the keys of the test district (``tests.exchange.support.key_district``): only it holds a
pseudonymisation key. Each party has its own exchange home, keys and database. Every
scenario ends with the leak scan of everything every process wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from hub.exchange import frequency
from hub.exchange import package as pk
from hub.exchange.home import Home, init_home
from hub.pseudonyms.pseudonymiser import TOKEN_ENV
from hub.registry import Registry
from hub.registry import tables as t
from tests.exchange.conftest import (
    RECORD_FLOW,
    TODAY,
    share,
    sign_both,
    write_convenzione,
)
from tests.exchange.support import cancel, key_district, pseudonym, seed
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.postgres import PostgresServer
from tests.support.rows import pseudonym as rows_pseudonym
from tests.support.rows import pseudonyms_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
RACCORDO = str(Path(sys.executable).with_name("raccordo"))
CONV = "conv-A-B-2026"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, verify: str | bool = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1, verify=verify)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@dataclass
class World:
    tmp: Path
    a: Home
    b: Home
    url_a: str
    url_b: str
    port_b: int
    port_service: int
    #: Audit entries of the (per-process) service written before this test.
    audit_before: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_b(self) -> None:
        proc = subprocess.Popen(
            [RACCORDO, "exchange", "serve", "--home", str(self.b.path)],
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "b-server.log").open("ab"),
        )
        self.procs["b"] = proc
        _wait(f"http://127.0.0.1:{self.port_b}/v1/status", proc)

    def start_service(self) -> None:
        ws, _ = key_district()
        proc = subprocess.Popen(
            [
                *[sys.executable, "-m", "hub", "pseudonymiser", "serve"],
                *["-c", str(ws / "raccordo.toml"), "--port", str(self.port_service)],
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "service.log").open("ab"),
        )
        self.procs["service"] = proc
        _wait(f"http://127.0.0.1:{self.port_service}/v1/session", proc, timeout=180)

    def conversions(self) -> list[dict[str, object]]:
        """The service's audit log (one entry per conversion) since this test began."""
        audit = key_district()[0] / "logs" / "pseudonymiser" / "audit.jsonl"
        lines = audit.read_text().splitlines() if audit.exists() else []
        return [json.loads(x) for x in lines[self.audit_before :]]

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        proc.wait(timeout=20)

    def send(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                RACCORDO,
                "exchange",
                "send",
                "--home",
                str(self.a.path),
                "--convenzione",
                CONV,
                "--to",
                "DISTRETTO_B",
            ],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
            # A's hub is a client of the service allowed to convert to B's domain.
            env={**os.environ, "COLUMNS": "200", TOKEN_ENV: key_district()[1]},
        )

    def raccordo(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RACCORDO, *args],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200", TOKEN_ENV: key_district()[1]},
        )

    def count_b(self, table: str = "case_episode") -> int:
        reg = Registry.open(self.url_b, migrate=False)
        try:
            return reg.count(table)
        finally:
            reg.close()

    def post(self, p: pk.Package, body: bytes | None = None) -> requests.Response:
        return requests.post(
            f"http://127.0.0.1:{self.port_b}/v1/packages",
            data=p.body if body is None else body,
            headers=p.headers,
            timeout=30,
        )

    def leak_scan(self) -> None:
        service_logs = key_district()[0] / "logs"
        assert_no_leaks(scan_paths([self.tmp, service_logs]) + scan_database(self.url_b))


@pytest.fixture
def world(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[World]:
    port_b, port_service = _free_port(), _free_port()
    url_a = f"sqlite:///{tmp_path}/a.sqlite"
    url_b = postgres_server.url(postgres_server.create_database())
    a = init_home(
        tmp_path / "A",
        party="DISTRETTO_A",
        pseudonym_domain="DOM_A",
        registry_url=url_a,
        pseudonym_service=f"http://127.0.0.1:{port_service}",
    )
    b = init_home(
        tmp_path / "B",
        party="DISTRETTO_B",
        pseudonym_domain="DOM_B",
        registry_url=url_b,
        port=port_b,
    )
    conv = write_convenzione(tmp_path / "shared", a, b, endpoint_b=f"http://127.0.0.1:{port_b}")
    sign_both(conv, a, b)
    share(conv, a, b)
    reg = Registry.open(url_a)
    seed(reg, 40)
    reg.close()
    Registry.open(url_b).close()
    w = World(tmp_path, a, b, url_a, url_b, port_b, port_service)
    w.audit_before = len(w.conversions())
    w.start_service()
    w.start_b()
    yield w
    for name in list(w.procs):
        w.stop(name)


def _receipts(home: Home) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((home.path / "receipts").glob("*.json"))]


def test_happy_path_records_arrive_converted_and_both_logs_verify(world: World) -> None:
    res = world.send()
    assert res.returncode == 0, res.stdout + res.stderr
    assert ": accepted (received 80, loaded 80, unchanged 0" in res.stdout
    assert world.count_b("case_episode") == 40 and world.count_b("subject") == 40
    reg = Registry.open(world.url_b, migrate=False)
    with reg.engine.connect() as conn:
        subjects = set(pseudonyms_of(conn, t.case_episodes))
        columns = conn.execute(sa.select(t.subjects.c.residence_comune_istat)).scalars().all()
    reg.close()
    # B links with its own people: pseudonyms of B's domain, never A's.
    assert subjects == {pseudonym(i, "DOM_B") for i in range(40)}
    assert not subjects & {pseudonym(i) for i in range(40)}
    assert columns == [None] * 40  # a field the convenzione does not let flow stays empty
    (conversion,) = [c for c in world.conversions() if c["convenzione"] == CONV]
    assert (conversion["from_domain"], conversion["to_domain"], conversion["count"]) == (
        "DOM_A",
        "DOM_B",
        40,
    )
    (receipt,) = _receipts(world.a)
    assert receipt["status"] == "accepted" and receipt["log_head"]["log"] == "DISTRETTO_B"
    assert [e["kind"] for e in world.a.log.entries()] == ["converted", "sent", "receipt"]
    assert [e["kind"] for e in world.b.log.entries()] == ["received"]
    # Each party holds the other's signed heads, and each log verifies with them.
    peer_heads_of_b = world.a.path / "peers" / "DISTRETTO_B.heads.jsonl"
    peer_heads_of_a = world.b.path / "peers" / "DISTRETTO_A.heads.jsonl"
    for home, held in ((world.b, peer_heads_of_b), (world.a, peer_heads_of_a)):
        v = world.raccordo("log", "verify", "--home", str(home.path), "--heads", str(held))
        assert v.returncode == 0, v.stdout + v.stderr
    again = world.send()
    assert again.returncode == 0 and "Nothing new for DISTRETTO_B" in again.stdout
    status = world.raccordo("exchange", "status", "--home", str(world.a.path), "--json")
    assert json.loads(status.stdout)["outbound"] == {f"{CONV} → DISTRETTO_B": {"accepted": 1}}
    # The hubs hold exchange keys only (signing and HPKE), never a pseudonymisation key:
    # conversion happened in the service process.
    for home in (world.a, world.b):
        assert sorted(p.name for p in (home.path / "keys").iterdir()) == ["hpke.key", "signing.key"]
        assert not [p for p in home.path.rglob("*") if "keyring" in p.name]
    world.leak_scan()


def _outbox_package(home: Home) -> pk.Package:
    (d,) = [p for p in (home.path / "outbox").iterdir() if p.is_dir()]
    meta = json.loads((d / "meta.json").read_text())
    return pk.Package(d.name, meta["manifest"], (d / "body").read_bytes(), meta["headers"])


def test_replay_is_idempotent(world: World) -> None:
    assert world.send().returncode == 0
    p = _outbox_package(world.a)
    first = _receipts(world.a)[0]
    for _ in range(2):
        r = world.post(p)
        assert r.status_code == 200 and r.json() == first
    assert world.count_b() == 40
    assert [e["kind"] for e in world.b.log.entries()] == ["received", "replayed", "replayed"]
    world.leak_scan()


def test_altered_in_transit_is_refused_and_the_genuine_package_still_arrives(world: World) -> None:
    cf = world.a.convenzioni.get(CONV)
    rows = [
        pk.Row(
            "case_episode",
            "k1",
            {
                "subject": rows_pseudonym("abc"),
                "area": "ANZIANI",
                "opened_on": "2025-01-01",
                "closed_on": None,
            },
        )
    ]
    p = pk.build(world.a, cf, recipient="DISTRETTO_B", rows=rows, period=(TODAY, TODAY))
    body = bytearray(p.body)
    body[100] ^= 0xFF
    r = world.post(p, bytes(body))
    assert r.status_code == 400
    assert r.json()["reasons"][0].startswith("the body does not match its Digest header")
    assert world.count_b() == 0
    r = world.post(p)
    assert r.status_code == 200 and r.json()["counts"]["loaded"] == 1
    kinds = [e["kind"] for e in world.b.log.entries()]
    assert kinds == ["refused", "received"]
    world.leak_scan()


def test_wrong_recipient_is_refused(world: World) -> None:
    c = init_home(world.tmp / "C", party="DISTRETTO_C", pseudonym_domain="DOM_C")
    flow = {**RECORD_FLOW, "to": "DISTRETTO_C"}
    conv = write_convenzione(world.tmp / "ac", world.a, c, conv_id="conv-A-C", flows=[flow])
    sign_both(conv, world.a, c)
    share(conv, world.a, c, world.b)
    cf = world.a.convenzioni.get("conv-A-C")
    rows = [pk.Row("subject", "k", {"subject": "2.x", "sex": "F", "birth_year": 1950})]
    p = pk.build(world.a, cf, recipient="DISTRETTO_C", rows=rows, period=(TODAY, TODAY))
    r = world.post(p)
    assert r.status_code == 400
    assert r.json()["reasons"] == [
        "the package is addressed to DISTRETTO_C, not to DISTRETTO_B (wrong recipient)"
    ]
    assert world.count_b("subject") == 0
    world.leak_scan()


def test_a_field_not_allowed_is_refused_by_the_recipient(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cf = world.a.convenzioni.get(CONV)
    monkeypatch.setattr(pk, "refusals", lambda *a, **k: [])  # a sender that skips its check
    rows = [pk.Row("subject", "k", {"subject": "2.x", "citizenship": "ITA"})]
    p = pk.build(world.a, cf, recipient="DISTRETTO_B", rows=rows, period=(TODAY, TODAY))
    monkeypatch.undo()
    r = world.post(p)
    assert r.status_code == 422
    assert r.json()["reasons"] == [
        "field(s) 'citizenship' of table 'subject' may not flow under convenzione "
        "conv-A-B-2026 (allowed: birth_year, sex, subject)"
    ]
    assert world.count_b("subject") == 0
    (entry,) = world.b.log.find(kind="refused")
    assert "citizenship" in entry["reason"]
    world.leak_scan()


def test_an_expired_convenzione_stops_every_flow(world: World) -> None:
    cf = world.a.convenzioni.get(CONV)
    rows = [pk.Row("subject", "k", {"subject": "2.x", "sex": "F", "birth_year": 1950})]
    early = pk.build(world.a, cf, recipient="DISTRETTO_B", rows=rows, period=(TODAY, TODAY))
    expired = write_convenzione(
        world.tmp / "expired",
        world.a,
        world.b,
        start=TODAY - dt.timedelta(days=100),
        expiry=TODAY - dt.timedelta(days=1),
        endpoint_b=f"http://127.0.0.1:{world.port_b}",
    )
    sign_both(expired, world.a, world.b)
    share(expired, world.a, world.b)
    res = world.send()
    assert res.returncode == 21, res.stdout + res.stderr
    assert f"convenzione {CONV} expired on {TODAY - dt.timedelta(days=1)}" in res.stderr
    r = world.post(early)  # built before; the recipient refuses it too
    assert r.status_code == 422
    assert any("expired on" in x for x in r.json()["reasons"])
    assert world.count_b("subject") == 0
    world.leak_scan()


def test_recipient_down_then_up_loses_nothing_and_duplicates_nothing(world: World) -> None:
    world.stop("b")
    res = world.send()
    assert res.returncode == 23, res.stdout + res.stderr
    assert "stays pending" in res.stderr
    # More records while B is down; then B is back.
    reg = Registry.open(world.url_a)
    seed(reg, 10, start=40)
    reg.close()
    world.start_b()
    res = world.send()
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("package ")]
    assert len(lines) == 2  # the pending package first, then the new rows
    assert "loaded 80" in lines[0] and "loaded 20" in lines[1]
    assert world.count_b("case_episode") == 50 and world.count_b("subject") == 50
    world.leak_scan()


def test_service_down_then_up(world: World) -> None:
    world.stop("service")
    res = world.send()
    assert res.returncode == 23, res.stdout + res.stderr
    assert "pseudonymisation service cannot be reached" in res.stderr
    assert not list((world.a.path / "outbox").iterdir())  # nothing was built or sent
    world.start_service()
    res = world.send()
    assert res.returncode == 0, res.stdout + res.stderr
    assert world.count_b("case_episode") == 40
    world.leak_scan()


def test_an_erasure_at_the_source_reaches_the_recipient_and_is_acknowledged(world: World) -> None:
    assert world.send().returncode == 0
    reg = Registry.open(world.url_a)
    cancel(reg, [0, 1, 2])
    reg.close()
    key = f"{CONV} → DISTRETTO_B"
    st = world.raccordo("erasure", "status", "--home", str(world.a.path), "--json")
    assert json.loads(st.stdout)[key]["unacknowledged_erasures"] == 3, st.stdout + st.stderr
    res = world.send()
    assert res.returncode == 0, res.stdout + res.stderr
    # Their episodes leave A's registry (subjects stay there: the registry keys them by
    # person, not by source record), so they leave B's too, as tombstones.
    assert "deleted 3" in res.stdout
    assert world.count_b("case_episode") == 37 and world.count_b("subject") == 40
    reg = Registry.open(world.url_b, migrate=False)
    with reg.engine.connect() as conn:
        left = set(pseudonyms_of(conn, t.case_episodes))
    reg.close()
    assert not left & {pseudonym(i, "DOM_B") for i in range(3)}
    (tomb_receipt,) = [r for r in _receipts(world.a) if r["counts"].get("deleted")]  # type: ignore[union-attr]
    assert tomb_receipt["status"] == "accepted"  # acknowledged, signed by B
    st = world.raccordo("erasure", "status", "--home", str(world.a.path), "--json")
    assert json.loads(st.stdout)[key] == {
        "acknowledged_rows": 77,
        "unacknowledged_erasures": 0,
        "in_pending_packages": 0,
    }
    world.leak_scan()


def test_an_edited_log_entry_is_found_by_log_verify(world: World) -> None:
    assert world.send().returncode == 0
    entries = world.b.path / "log" / "entries.jsonl"
    entries.write_text(entries.read_text().replace('"loaded":80', '"loaded":8'))
    v = world.raccordo("log", "verify", "--home", str(world.b.path))
    assert v.returncode == 22
    assert "entry #0 edited: it no longer matches its signed head" in v.stderr


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _set(home: Home, **values: str) -> None:
    path = home.path / "exchange.toml"
    lines = [ln for ln in path.read_text().splitlines() if ln.split(" = ")[0] not in values]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


def test_over_https_the_sender_checks_the_recipients_certificate(world: World) -> None:
    cert, key = _self_signed(world.tmp)
    world.stop("b")
    _set(world.b, tls_cert=str(cert), tls_key=str(key))
    https = write_convenzione(
        world.tmp / "https", world.a, world.b, endpoint_b=f"https://127.0.0.1:{world.port_b}"
    )
    sign_both(https, world.a, world.b)
    share(https, world.a, world.b)
    proc = subprocess.Popen(
        [RACCORDO, "exchange", "serve", "--home", str(world.b.path)],
        cwd=world.tmp,
        stdout=subprocess.DEVNULL,
        stderr=(world.tmp / "b-tls.log").open("ab"),
    )
    world.procs["b"] = proc
    _wait(f"https://127.0.0.1:{world.port_b}/v1/status", proc, verify=str(cert))
    # Without trusting that certificate the sender refuses to talk: nothing leaves.
    res = world.send()
    assert res.returncode == 23 and "SSLError" in res.stdout, res.stdout + res.stderr
    _set(world.a, ca_bundle=str(cert))
    res = world.send()
    assert res.returncode == 0, res.stdout + res.stderr
    assert world.count_b("case_episode") == 40
    world.leak_scan()


def test_a_revocation_reaches_the_other_party_and_stops_every_flow(world: World) -> None:
    cf = world.a.convenzioni.get(CONV)
    rows = [pk.Row("subject", "k", {"subject": "2.x", "sex": "F", "birth_year": 1950})]
    early = pk.build(world.a, cf, recipient="DISTRETTO_B", rows=rows, period=(TODAY, TODAY))
    res = world.raccordo(
        "convenzioni",
        "revoke",
        str(cf.path),
        "--home",
        str(world.a.path),
        "--reason",
        "the project ended",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DISTRETTO_B: notified" in res.stdout
    listed = world.raccordo("convenzioni", "list", "--home", str(world.b.path), "--json")
    assert json.loads(listed.stdout)[0]["state"] == "revoked"
    assert world.b.log.find(kind="revoked")[0]["peer"] == "DISTRETTO_A"
    r = world.post(early)
    assert r.status_code == 422
    assert r.json()["reasons"][0].startswith(f"convenzione {CONV} was revoked by DISTRETTO_A")
    res = world.send()
    assert res.returncode == 21 and "was revoked by DISTRETTO_A" in res.stderr
    assert world.count_b("subject") == 0
    world.leak_scan()


def test_a_recipient_that_rewrites_its_log_is_caught_by_the_next_receipt(world: World) -> None:
    assert world.send().returncode == 0
    # B rewrites its history with its own key: self-consistent, but not with what A holds.
    for name in ("entries.jsonl", "heads.jsonl"):
        (world.b.path / "log" / name).unlink()
    world.b.log.append("received", package="0" * 32, convenzione=CONV, peer="DISTRETTO_A", rows=1)
    assert world.raccordo("log", "verify", "--home", str(world.b.path)).returncode == 0
    reg = Registry.open(world.url_a)
    seed(reg, 5, start=40)
    reg.close()
    res = world.send()
    assert res.returncode == 22, res.stdout + res.stderr
    assert "DISTRETTO_B's log of size 2 does not extend the log of size 1" in res.stderr
    assert world.a.log.find(kind="peer-inconsistent")
    assert world.count_b() == 45  # the data itself arrived and was acknowledged


def test_the_other_way_aggregates_from_b_reach_a_after_disclosure_control(world: World) -> None:
    port_a = _free_port()
    both = write_convenzione(
        world.tmp / "both",
        world.a,
        world.b,
        endpoint_a=f"http://127.0.0.1:{port_a}",
        endpoint_b=f"http://127.0.0.1:{world.port_b}",
    )
    sign_both(both, world.a, world.b)
    share(both, world.a, world.b)
    proc = subprocess.Popen(
        [RACCORDO, "exchange", "serve", "--home", str(world.a.path), "--port", str(port_a)],
        cwd=world.tmp,
        stdout=subprocess.DEVNULL,
        stderr=(world.tmp / "a-server.log").open("ab"),
    )
    world.procs["a"] = proc
    _wait(f"http://127.0.0.1:{port_a}/v1/status", proc)
    from hub.observatory.aggregates import refresh

    reg_b = Registry.open(world.url_b)
    seed(reg_b, 30, org="ORG_B")
    refresh(reg_b.engine)
    reg_b.close()
    ledger = world.tmp / "b-ledger.json"
    res = world.raccordo(
        "exchange",
        "send-aggregates",
        "--home",
        str(world.b.path),
        "--convenzione",
        CONV,
        "--to",
        "DISTRETTO_A",
        "--year",
        "2024",
        "--ledger",
        str(ledger),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "→ DISTRETTO_A: accepted" in res.stdout
    (snap,) = (world.a.path / "received" / CONV / "DISTRETTO_B").glob("prese_in_carico.*.json")
    table = json.loads(snap.read_text())["table"]
    assert table["total"] == 30 and table["k"] == 5
    assert all(v in (None, "*") or v == 0 or v >= 5 for row in table["cells"] for v in row)
    assert json.loads(ledger.read_text())["releases"]  # recorded with the open-data ledger
    # And records still flow A → B under the same convenzione.
    assert world.send().returncode == 0
    assert world.count_b() == 30 + 40  # B's own episodes and those received from A
    world.leak_scan()


def test_a_large_extract_goes_in_several_packages_each_acknowledged(world: World) -> None:
    res = world.raccordo(
        "exchange",
        "send",
        "--home",
        str(world.a.path),
        "--convenzione",
        CONV,
        "--to",
        "DISTRETTO_B",
        "--batch",
        "30",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("package ")]
    assert [("loaded 30" in x, "accepted" in x) for x in lines[:2]] == [(True, True)] * 2
    assert len(lines) == 3 and "loaded 20" in lines[2]
    assert world.count_b("case_episode") == 40 and world.count_b("subject") == 40
    assert len(_receipts(world.a)) == 3


def test_a_flow_sooner_than_the_frequency_is_held_back_but_erasures_go(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same agreement, monthly: both parties sign the new file and keep it.
    conv = write_convenzione(
        world.tmp / "monthly",
        world.a,
        world.b,
        endpoint_b=f"http://127.0.0.1:{world.port_b}",
        flows=[{**RECORD_FLOW, "frequency": "monthly"}],
    )
    sign_both(conv, world.a, world.b)
    share(conv, world.a, world.b)
    args = ("exchange", "send", "--home", str(world.a.path), "--convenzione", CONV)
    first = world.raccordo(*args, "--to", "DISTRETTO_B", "--batch", "30")
    # One flow of three packages (one sending run), each acknowledged.
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count(": accepted") == 3
    reg = Registry.open(world.url_a)
    seed(reg, 5, start=40)
    cancel(reg, [0, 1])
    reg.close()
    res = world.send()
    assert res.returncode == 21, res.stdout + res.stderr
    # The erasures went at once; the new people wait for next month, and A says why.
    assert ": accepted (received 2, loaded 2, unchanged 0, deleted 2" in res.stdout
    said = " ".join(res.stderr.split())
    assert "too soon for its frequency" in said
    assert "once a calendar month: a flow already went on" in said
    assert "rows wait" in said and "the next may go from" in said
    assert world.count_b("case_episode") == 38 and world.count_b("subject") == 40
    # B enforces it too, against a sender that does not keep the rule.
    with monkeypatch.context() as m:
        m.setattr(frequency, "refusal", lambda *a, **k: None)
        rows = [
            pk.Row(
                "case_episode",
                "lawless",
                {"subject": pseudonym(41, "DOM_B"), "area": "ANZIANI", "opened_on": "2025-01-02"},
            )
        ]
        p = pk.build(
            world.a,
            world.a.convenzioni.get(CONV),
            recipient="DISTRETTO_B",
            rows=rows,
            period=(TODAY, TODAY),
        )
    r = world.post(p)
    assert r.status_code == 422
    (reason,) = r.json()["reasons"]
    assert reason.startswith(
        f"convenzione {CONV} lets records flow from DISTRETTO_A to DISTRETTO_B once a calendar "
        "month: a flow already went on"
    )
    assert world.count_b("case_episode") == 38
    world.leak_scan()
