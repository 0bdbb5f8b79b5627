"""A changed SIUSS flow file is re-read at the cost of its changed parts, with the same
result (the oracle of tests/e2e/test_csv_parts.py: two registries, one skipping the parts
it holds as they are, one reading every record of every changed file)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

import connectors.siuss.flows as flows
from hub.config import load_config
from hub.pipeline import Pipeline, open_keyring
from hub.registry import Registry, RunSummary
from tests.e2e.conftest import registry_dump
from tests.e2e.test_csv_parts import _counters, _second_url
from tests.support.workspace import make_workspace

MINIMAL = (
    Path(__file__).resolve().parents[1] / "fixtures" / "inps" / "sample-ps_psa_sina-minimal.xml"
).read_bytes()
START, END = MINIMAL.index(b"<Beneficiario"), MINIMAL.index(b"</Flusso>")
ONE = MINIMAL[START:END]


def _beneficiary(i: int, amount: str = "200.0", *, op: str = "I", cf: bytes = b"") -> bytes:
    b = ONE.replace(b"Protocollo fittizio", b"P%d" % i).replace(
        b'ImportoMensile="200.0"', f'ImportoMensile="{amount}"'.encode()
    )
    b = b.replace(b'TipoOperazione="I"', f'TipoOperazione="{op}"'.encode())
    return b.replace(b"RSSMRK66C14H501U", cf) if cf else b


def _versions() -> Iterable[tuple[str, list[bytes]]]:
    flow = [_beneficiary(i) for i in range(3000)]
    yield "first read", flow
    flow[1500] = _beneficiary(1500, "999.0")
    yield "one amount changed", flow
    flow[700:700] = [_beneficiary(i) for i in range(9000, 9003)]
    del flow[2000:2005]
    yield "beneficiaries inserted and deleted", flow
    broken = _beneficiary(9100, cf=b"RSSMRK6XC14H501U")  # breaks the XSD: skipped alone
    flow.insert(100, broken)
    yield "a beneficiary breaking the schema", flow
    flow[1300] = _beneficiary(1300, "13.0")
    yield "changed elsewhere, the broken one still there", flow
    flow.remove(broken)
    yield "mended", flow
    flow.insert(2500, _beneficiary(5, op="C"))  # a repeat of P5 in the same flow: a duplicate
    yield "a cancellation repeating a record of the flow", flow
    flow[400] = _beneficiary(400, "4.0")
    yield "changed elsewhere, the cancellation still there", flow


def _write(inbox: Path, beneficiaries: list[bytes]) -> None:
    (inbox / "flusso.xml").write_bytes(MINIMAL[:START] + b"".join(beneficiaries) + MINIMAL[END:])


def _workspace(root: Path, url: str, keys_from: Path | None) -> tuple[Path, Path]:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    extra = f"""
[organisations.ENTE]
name = "Ente"
[connectors.files]
type = "siuss_files"
org = "ENTE"
[connectors.files.config]
inbox = "{inbox}"
flows = ["ps"]
"""
    ws = make_workspace(root / "ws", extra, registry_url=url, keys_from=keys_from, batch_size=700)
    return ws, inbox


def _sync(ws: Path) -> tuple[RunSummary, dict[str, list[tuple[object, ...]]], set[Any]]:
    cfg = load_config(ws / "raccordo.toml")
    reg = Registry.open(cfg.registry_url)
    try:
        (run,) = Pipeline(cfg, reg, open_keyring(cfg)).sync("files")
        quarantine = {
            (q["location"], q["rule"], q["reason"], q["field"]) for q in reg.quarantine_entries()
        }
    finally:
        reg.close()
    return run, registry_dump(cfg.registry_url), quarantine


def test_skipping_the_parts_of_a_flow_held_changes_nothing_but_what_is_read(
    registry_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skipping, skipping_in = _workspace(tmp_path / "skipping", registry_url, None)
    reading, reading_in = _workspace(
        tmp_path / "reading", _second_url(registry_url, tmp_path, request), skipping
    )
    read_parts: list[int] = []
    offered = flows.in_parts

    def counting(rows: Iterable[Any], **kw: Any) -> Any:
        build: Callable[[Any], Any] = kw.pop("build")

        def counted(part_rows: Any) -> Any:
            read_parts[-1] += 1
            return build(part_rows)

        return offered(rows, build=counted, **kw)

    monkeypatch.setattr(flows, "in_parts", counting)
    for what, beneficiaries in _versions():
        _write(skipping_in, beneficiaries)
        _write(reading_in, beneficiaries)
        read_parts.append(0)
        run, rows, quarantine = _sync(skipping)
        skipped_read = read_parts[-1]
        with monkeypatch.context() as m:
            m.setattr(Pipeline, "_known_part", lambda *_: None)
            read_parts.append(0)
            expected_run, expected_rows, expected_quarantine = _sync(reading)
        assert run.balanced, what
        assert _counters(run) == _counters(expected_run), what
        assert rows == expected_rows, what
        assert quarantine == expected_quarantine, what
        if what in ("one amount changed", "mended"):
            # The flow holds about 20 parts (256 KiB of elements at most each).
            assert 1 <= skipped_read <= 2 < read_parts[-1], (what, skipped_read, read_parts[-1])
        if what.startswith("changed elsewhere"):
            # The part holding the broken beneficiary or the cancellation is read again too.
            assert 2 <= skipped_read <= 4 < read_parts[-1], (what, skipped_read, read_parts[-1])
