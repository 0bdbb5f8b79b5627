"""The WaaS connector against a real local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.siuss_waas import SiussWaasConfig, SiussWaasConnector
from connectors.siuss_waas.fake_server import BASE_TS_MS, FakeWaaS, Flow, flow_from_xml
from hub.config import load_config
from hub.connector import RawRecord, SourceError, StateCheckpoint, expand_parts
from hub.errors import SourceUnavailable
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry
from tests.contract.suite import connector_contract_tests
from tests.e2e.conftest import registry_dump
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.workspace import make_workspace

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inps"
TOKEN = "test-token-1234567890"
MINIMAL = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()


def official_flows() -> list[Flow]:
    return [
        flow_from_xml(p.read_bytes(), BASE_TS_MS + i * 1000, p.stem)
        for i, p in enumerate(sorted(FIXTURES.glob("sample-*.xml")))
    ]


def many_flows(n: int) -> list[Flow]:
    """n one-prestazione flows; some share a timestamp (pages must not lose them)."""
    out = []
    for i in range(n):
        xml = MINIMAL.replace(b"Protocollo fittizio", b"PROT-%d" % i).replace(
            b"H501.PS.INPS.20160423.115235", b"H501.PS.20240101.%07d" % i
        )
        out.append(flow_from_xml(xml, BASE_TS_MS + (i // 3) * 1000, f"f{i}"))
    return out


@pytest.fixture
def server() -> Iterator[FakeWaaS]:
    with FakeWaaS(official_flows() + many_flows(0), token=TOKEN) as srv:
        yield srv


def connector(url: str, **kw: object) -> SiussWaasConnector:
    conn = SiussWaasConnector(
        SiussWaasConfig(
            base_url=url,
            token=SecretStr(TOKEN),
            **{"limit": 2, "timeout_s": 2.0, "backoff_s": 0.05, **kw},
        )
    )  # type: ignore[arg-type]
    return conn


def keys(items: list[object]) -> list[str]:
    return [i.data["protocollo"] for i in items if isinstance(i, RawRecord)]  # type: ignore[attr-defined]


_contract_server = FakeWaaS(official_flows(), token=TOKEN).start()
TestSiussWaasContract = connector_contract_tests(lambda: connector(_contract_server.url))


def test_official_samples_are_pulled_and_the_cursor_advances(server: FakeWaaS) -> None:
    conn = connector(server.url)
    ps = list(expand_parts(conn.read("ps", {})))
    sinba = list(expand_parts(conn.read("sinba", {})))
    assert len([i for i in ps if isinstance(i, RawRecord)]) == 4
    assert len([i for i in sinba if isinstance(i, RawRecord)]) == 1
    final = ps[-1]
    assert isinstance(final, StateCheckpoint) and final.state["since"] == BASE_TS_MS + 2000
    assert [i for i in expand_parts(conn.read("ps", final.state)) if isinstance(i, RawRecord)] == []
    assert all(
        q.get("since") is not None for _, path, q in server.requests if path.endswith("/flussi")
    )
    assert conn.check().ok


def test_flows_sharing_a_timestamp_across_pages_are_neither_lost_nor_repeated() -> None:
    with FakeWaaS(many_flows(11), token=TOKEN) as srv:
        conn = connector(srv.url, limit=2)
        items = list(expand_parts(conn.read("ps", {})))
        assert sorted(keys(items)) == sorted(f"PROT-{i}" for i in range(11))
        # Resume from every checkpoint: exactly the rest, every time.
        all_keys = keys(items)
        for n, item in enumerate(items):
            if isinstance(item, StateCheckpoint):
                before = keys(items[:n])
                assert before + keys(list(expand_parts(conn.read("ps", item.state)))) == all_keys


def test_429_with_retry_after_is_honoured(server: FakeWaaS) -> None:
    server.faults.statuses = [(429, "1")]
    items = list(expand_parts(connector(server.url).read("ps", {})))
    assert len(keys(items)) == 4
    flussi = [ts for ts, path, _ in server.requests if path.endswith("/flussi")]
    assert flussi[1] - flussi[0] >= 0.9  # waited as the server asked


def test_503_twice_and_a_slow_answer_are_retried(server: FakeWaaS) -> None:
    server.faults.statuses = [(503, None), (503, None)]
    server.faults.slow_s, server.faults.slow_requests = 2.5, 1
    items = list(expand_parts(connector(server.url, timeout_s=1.0).read("ps", {})))
    assert len(keys(items)) == 4


def test_retries_exhausted_and_token_refused_say_so_without_the_token(server: FakeWaaS) -> None:
    server.faults.statuses = [(503, None)] * 10
    with pytest.raises(SourceUnavailable) as e:
        list(expand_parts(connector(server.url, max_retries=2).read("ps", {})))
    assert "3 attempts" in str(e.value) and "HTTP 503" in str(e.value)
    assert TOKEN not in str(e.value)
    bad = SiussWaasConnector(SiussWaasConfig(base_url=server.url, token=SecretStr("nope")))
    with pytest.raises(SourceUnavailable, match="refused the token"):
        list(expand_parts(bad.read("ps", {})))
    assert TOKEN not in repr(bad.config)


def test_truncated_base64_refuses_only_that_flow(server: FakeWaaS) -> None:
    bad_id = server.flows[0].id
    server.faults.truncate = {bad_id}
    items = list(expand_parts(connector(server.url).read("ps", {})))
    errors = [i for i in items if isinstance(i, SourceError)]
    assert len(errors) == 1 and "base64" in errors[0].reason and bad_id in errors[0].location
    assert len(keys(items)) == 1  # the minimal sample still arrives


def test_server_down_midway_then_resume_without_duplicates() -> None:
    flows = many_flows(12)
    with FakeWaaS(flows, token=TOKEN) as srv:
        srv.faults.fail_after = 2  # two pages, then connection refused
        conn = connector(srv.url, limit=2, max_retries=1)
        got: list[object] = []
        with pytest.raises(SourceUnavailable, match="connection refused"):
            for item in expand_parts(conn.read("ps", {})):
                got.append(item)
        state = [i for i in got if isinstance(i, StateCheckpoint)][-1].state
        first = keys(got)
        assert 0 < len(first) < 12
        srv.up()
        rest = keys(list(expand_parts(conn.read("ps", state))))
        assert sorted(first + rest) == sorted(f"PROT-{i}" for i in range(12))
        assert len(set(first) & set(rest)) == 0


def _ws(tmp_path: Path, name: str, url: str, keys_from: Path | None = None) -> Path:
    extra = f"""
[organisations.COT]
name = "Ente"
[connectors.w]
type = "siuss_waas"
org = "COT"
[connectors.w.config]
base_url = "{url}"
token = "{TOKEN}"
limit = 3
backoff_s = 0.05
max_retries = 1
"""
    return make_workspace(tmp_path / name, extra, keys_from=keys_from)


def test_faulty_run_then_resume_equals_a_clean_run(tmp_path: Path) -> None:
    flows = many_flows(20) + official_flows()
    flows = [
        Flow(f.id, f.tipo, BASE_TS_MS + n * 500, f.xml)
        for n, f in enumerate(itertools.chain(flows))
    ]
    with FakeWaaS(flows, token=TOKEN) as clean:
        ws_clean = _ws(tmp_path, "clean", clean.url)
        cfg = load_config(ws_clean / "raccordo.toml")
        reg = Registry.open(cfg.registry_url)
        Pipeline(cfg, reg, open_keyring(cfg)).sync("w")
        expected = registry_dump(cfg.registry_url)
        reg.close()
    with FakeWaaS(flows, token=TOKEN) as faulty:
        faulty.faults.fail_after = 3
        ws = _ws(tmp_path, "faulty", faulty.url, keys_from=ws_clean)
        cfg = load_config(ws / "raccordo.toml")
        reg = Registry.open(cfg.registry_url)
        pipeline = Pipeline(cfg, reg, open_keyring(cfg))
        with pytest.raises(Exception, match="connection refused"):
            pipeline.sync("w")
        assert 0 < reg.count("intervention") < len(expected["intervention"])
        faulty.up()
        pipeline.sync("w")
        assert registry_dump(cfg.registry_url) == expected
        failed = [r for r in reg.runs(limit=10) if r.status == "failed"]
        assert failed and "connection refused" in (failed[0].error or "")
        leaks = scan_paths(
            [ws], values={"RSSMRK66C14H501U", "AAABBB39M66A351C"}, names={"MIRKO", "ROSSI"}
        )
        leaks += scan_database(cfg.registry_url, values={"RSSMRK66C14H501U"})
        assert_no_leaks(leaks)
        reg.close()
