"""A changed SIUSS flow file is re-read at the cost of its changed parts, with the same
result (the oracle of tests/support/parts.py: two registries, one skipping the parts it
holds as they are, one reading every record of every changed file)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

import connectors.siuss.flows as flows
from tests.support.parts import assert_skipping_changes_nothing, second_registry_url
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


def test_skipping_the_parts_of_a_flow_held_changes_nothing_but_what_is_read(
    registry_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skipping, skipping_in = _workspace(tmp_path / "skipping", registry_url, None)
    reading, reading_in = _workspace(
        tmp_path / "reading", second_registry_url(registry_url, tmp_path, request), skipping
    )
    inboxes = {skipping: skipping_in, reading: reading_in}

    def check(what: str, skipped_read: int, all_read: int) -> None:
        if what in ("one amount changed", "mended"):
            # The flow holds about 50 parts (64 elements each on average): one or two read.
            assert 1 <= skipped_read <= 2 < all_read, (what, skipped_read, all_read)
        if what.startswith("changed elsewhere"):
            # The part holding the broken beneficiary or the repeat is read again too.
            assert 2 <= skipped_read <= 4 < all_read, (what, skipped_read, all_read)

    assert_skipping_changes_nothing(
        monkeypatch,
        reader=flows,
        connector="files",
        skipping=skipping,
        reading=reading,
        versions=_versions(),
        write=lambda ws, beneficiaries: _write(inboxes[ws], beneficiaries),
        check=check,
    )
