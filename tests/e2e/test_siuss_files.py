"""SIUSS XML files through the real pipeline: official samples, attacks, cancellations."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.siuss_files import SiussFilesConfig, SiussFilesConnector
from hub.registry import Registry, RunSummary
from hub.registry import tables as t
from tests.contract.suite import connector_contract_tests
from tests.support.leakscan import assert_no_leaks, scan_database, scan_paths
from tests.support.workspace import make_workspace, sync

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inps"
SAMPLES = sorted(FIXTURES.glob("sample-*.xml"))
SAMPLE_CFS = {
    "AAABBB39M66A351C",
    "RSSMRK66C14H501U",
    "XXXXXX80P20B501B",
    "CCCDDD25A42H199X",
    "GHBLDE25A42H199X",
}
SAMPLE_NAMES = {"MIRKO", "ROSSI", "AAA", "BBB"}

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Flusso [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Flusso xmlns="http://inps.it/Casellario">&x;</Flusso>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Flusso xmlns="http://inps.it/Casellario">&lol3;</Flusso>"""


def _inbox(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for s in SAMPLES:
        shutil.copy(s, inbox / s.name)
    return inbox


def _workspace(tmp_path: Path, registry_url: str, inbox: Path) -> Path:
    extra = f"""
[organisations.ENTE]
name = "Ente"
[connectors.files]
type = "siuss_files"
org = "ENTE"
[connectors.files.config]
inbox = "{inbox}"
"""
    return make_workspace(tmp_path / "ws", extra, registry_url=registry_url)


def _sync(ws: Path) -> tuple[dict[str, RunSummary], Registry]:
    runs, reg = sync(ws, "files")
    return {r.mapping: r for r in runs}, reg


def _sync_flow(
    tmp_path: Path, flow: bytes, name: str = "flow.xml"
) -> tuple[dict[str, RunSummary], Registry]:
    """One sync of an inbox holding ``flow`` alone (as ``name``), into a SQLite registry."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / name).write_bytes(flow)
    return _sync(_workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox))


TestSiussFilesContract = connector_contract_tests(
    lambda: SiussFilesConnector(SiussFilesConfig(inbox=FIXTURES, pattern="sample-*.xml"))
)


def test_official_samples_load_and_bad_codes_are_explained(
    tmp_path: Path, registry_url: str
) -> None:
    ws = _workspace(tmp_path, registry_url, _inbox(tmp_path))
    runs, reg = _sync(ws)
    ps, sinba = runs["siuss_ps"], runs["siuss_sinba"]
    # sample-0: three prestazioni of a CF whose check character is wrong; minimal: one good.
    assert (ps.read, ps.loaded, ps.quarantined) == (4, 1, 3)
    assert (sinba.read, sinba.loaded) == (1, 1)
    q = reg.quarantine_entries(limit=100)
    assert {e["rule"] for e in q} == {"cf_check_char"}
    assert {e["location"] for e in q} == {
        "sample-ps_psa_sina-0.xml line 8",
        "sample-ps_psa_sina-0.xml line 20",
        "sample-ps_psa_sina-0.xml line 27",
    }
    assert all("check character" in e["reason"] for e in q)
    assert reg.count("intervention") == 1 and reg.count("assessment") == 2
    assert reg.count("case_episode") == 2  # one PS presa in carico, one SINBA case
    leaks = scan_paths([ws], names=SAMPLE_NAMES, values=SAMPLE_CFS)
    leaks += scan_database(
        reg.engine.url.render_as_string(hide_password=False), names=SAMPLE_NAMES, values=SAMPLE_CFS
    )
    assert_no_leaks(leaks)
    reg.close()


def test_attacks_and_broken_files_are_refused_while_good_files_load(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    (inbox / "xxe.xml").write_bytes(XXE)
    (inbox / "laughs.xml").write_bytes(LAUGHS)
    good = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()
    (inbox / "truncated.xml").write_bytes(good[: len(good) // 2])
    (inbox / "invalid.xml").write_bytes(good.replace(b'PresaCarico="1"', b'PresaCarico="7"'))
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox)
    runs, reg = _sync(ws)
    assert runs["siuss_ps"].source_errors == 4
    assert runs["siuss_ps"].loaded == 1
    entries = reg.quarantine_entries(limit=100)
    refused = {e["location"].split(" ")[0]: e["reason"] for e in entries if e["kind"] == "source"}
    assert "DOCTYPE" in refused["xxe.xml"] and "DOCTYPE" in refused["laughs.xml"]
    assert "truncated" in refused["truncated.xml"]
    # Its one beneficiary breaks the XSD: refused alone (a record), not as a whole unit.
    assert "invalid.xml" not in refused
    (invalid,) = [e for e in entries if e["location"].startswith("invalid.xml")]
    assert invalid["kind"] == "record" and invalid["field"] == "PresaCarico"
    assert "official schema" in invalid["reason"] and "PresaCarico" in invalid["reason"]
    assert runs["siuss_sinba"].loaded == 1
    reg.close()


def test_cancellation_changed_file_and_unchanged_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    minimal = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()
    (inbox / "a.xml").write_bytes(minimal)
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox)
    runs, reg = _sync(ws)
    assert reg.count("intervention") == 1
    # Unchanged file: not read again.
    runs, reg = _sync(ws)
    assert runs["siuss_ps"].read == 0
    # A later flow cancels the prestazione (TipoOperazione="C").
    (inbox / "b.xml").write_bytes(minimal.replace(b'TipoOperazione="I"', b'TipoOperazione="C"'))
    runs, reg = _sync(ws)
    assert runs["siuss_ps"].deleted == 1
    assert reg.count("intervention") == 0 and reg.count("case_episode") == 0
    # a.xml changes: a second prestazione appears, then is removed again.
    (inbox / "b.xml").unlink()
    two = minimal.replace(
        b"</Beneficiario>",
        minimal[minimal.index(b"<PrestazioniSociali") : minimal.index(b"</Beneficiario>")].replace(
            b"A2.16", b"A1.09"
        )
        + b"</Beneficiario>",
    )
    (inbox / "a.xml").write_bytes(two)
    runs, reg = _sync(ws)
    assert reg.count("intervention") == 2
    (inbox / "a.xml").write_bytes(minimal.replace(b"A2.16", b"A1.09"))
    runs, reg = _sync(ws)
    assert runs["siuss_ps"].removed == 1
    with reg.engine.connect() as conn:
        codes = [r[0] for r in conn.execute(sa.select(t.interventions.c.service_code))]
    assert codes == ["A1.09"]
    reg.close()


PARSE_ONLY = """
import sys
from pathlib import Path

from connectors.siuss.flows import iter_flow
from hub.connector import RawRecord, SourceError, expand_parts

n = refused = 0
flow = iter_flow(Path(sys.argv[1]), stream="ps", unit="big", location_prefix="big")
for item in expand_parts(flow):
    if isinstance(item, SourceError):
        assert item.rule == "xsd" and item.field == "CodiceFiscale", item
        refused += 1
    n += isinstance(item, RawRecord)
# VmHWM: this process image's own peak (ru_maxrss would include the forking parent's).
hwm = [line for line in Path("/proc/self/status").read_text().splitlines()
       if line.startswith("VmHWM:")][0]
print(n, refused, int(hwm.split()[1]))
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_file(tmp_path: Path) -> None:
    """Peak memory of a process reading a large flow (one beneficiary in a thousand
    breaking the XSD, each refused alone) stays far below the file's size."""
    minimal = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()
    start, end = minimal.index(b"<Beneficiario"), minimal.index(b"</Flusso>")
    one = minimal[start:end]
    big = tmp_path / "big.xml"
    with big.open("wb") as f:
        f.write(minimal[:start])
        for i in range(150_000):
            b = one.replace(b"Protocollo fittizio", b"P%d" % i)
            if i % 1000 == 7:
                b = b.replace(b"RSSMRK66C14H501U", b"RSSMRK6XC14H501U")
            f.write(b)
        f.write(b"</Flusso>")
    size = big.stat().st_size
    assert size > 240 * 1024 * 1024  # about 250 MiB
    script = tmp_path / "parse.py"
    script.write_text(PARSE_ONLY)
    res = subprocess.run(
        [sys.executable, str(script), str(big)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    count, refused, peak_kib = (int(x) for x in res.stdout.split())
    assert (count, refused) == (149_850, 150)
    assert peak_kib * 1024 < 80 * 1024 * 1024, (
        f"peak RSS {peak_kib / 1024:.0f} MiB for a {size / 2**20:.0f} MiB file"
    )


def _flow_of(beneficiaries: list[bytes]) -> bytes:
    minimal = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()
    start, end = minimal.index(b"<Beneficiario"), minimal.index(b"</Flusso>")
    return minimal[:start] + b"".join(beneficiaries) + minimal[end:]


def _beneficiary(i: int) -> bytes:
    minimal = (FIXTURES / "sample-ps_psa_sina-minimal.xml").read_bytes()
    start, end = minimal.index(b"<Beneficiario"), minimal.index(b"</Flusso>")
    return minimal[start:end].replace(b"Protocollo fittizio", b"P%d" % i)


def test_one_beneficiary_breaking_the_xsd_is_quarantined_alone(
    tmp_path: Path, registry_url: str
) -> None:
    """An omocodic-looking CF with a letter where the INPS pattern wants a digit: that
    beneficiary alone is refused, at its own line, naming the field; the others load."""
    bad = _beneficiary(2).replace(b"RSSMRK66C14H501U", b"RSSMRK6XC14H501U")
    flow = _flow_of([_beneficiary(1), bad, _beneficiary(3), _beneficiary(4)])
    bad_line = flow[: flow.index(b"RSSMRK6XC14H501U")].count(b"\n") + 1
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "flow.xml").write_bytes(flow)
    ws = _workspace(tmp_path, registry_url, inbox)
    runs, reg = _sync(ws)
    ps = runs["siuss_ps"]
    assert (ps.read, ps.loaded, ps.quarantined, ps.source_errors) == (3, 3, 0, 1)
    assert reg.count("intervention") == 3
    (entry,) = reg.quarantine_entries(limit=100)
    assert entry["location"] == f"flow.xml line {bad_line}"
    assert entry["rule"] == "xsd" and entry["field"] == "CodiceFiscale"
    assert "beneficiary refused" in entry["reason"] and "pattern" in entry["reason"]
    assert "RSSMRK6X" not in str(entry)
    leaks = scan_paths([ws], names=SAMPLE_NAMES, values={*SAMPLE_CFS, "RSSMRK6XC14H501U"})
    assert_no_leaks(leaks)
    reg.close()


def test_an_invalid_header_refuses_the_whole_file(tmp_path: Path) -> None:
    flow = _flow_of([_beneficiary(1), _beneficiary(2)]).replace(b'Codice="H501"', b'Codice=""')
    runs, reg = _sync_flow(tmp_path, flow)
    assert (runs["siuss_ps"].loaded, runs["siuss_ps"].source_errors) == (0, 1)
    (entry,) = reg.quarantine_entries(limit=100)
    assert entry["rule"] == "xsd_header" and entry["field"] == "Codice"
    assert entry["location"] == "flow.xml line 3"
    assert "nothing loaded" in entry["reason"] and "header" in entry["reason"]
    reg.close()


def test_a_bad_sinba_record_is_quarantined_alone(tmp_path: Path) -> None:
    sinba = (FIXTURES / "sample-sinba-1.xml").read_bytes()
    start, end = sinba.index(b"<SINBA "), sinba.index(b"</Flusso>")
    one = sinba[start:end]
    bad = one.replace(b'Disabilita="1"', b'Disabilita="9"').replace(b"PROVA BENEF", b"B2")
    flow = sinba[:start] + one + bad + one.replace(b"PROVA BENEF", b"B3") + sinba[end:]
    runs, reg = _sync_flow(tmp_path, flow, "sinba.xml")
    s = runs["siuss_sinba"]
    assert (s.loaded, s.source_errors) == (2, 1)
    (entry,) = reg.quarantine_entries(limit=100)
    assert entry["field"] == "Disabilita" and "SINBA record refused" in entry["reason"]
    line = flow[: flow.index(b"B2")].count(b"\n") + 1
    assert entry["location"] == f"sinba.xml line {line}"
    reg.close()


def _counting_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the whole-flow checking passes of the reads: :func:`hub.inputs.xml.conforms`
    (well-formed and following the official schema) and :func:`hub.inputs.xml.validate`
    (well-formed alone, read when the first says no)."""
    from connectors.siuss import flows

    calls: list[str] = []
    for name in ("conforms", "validate"):
        real = getattr(flows, name)

        def counted(*args: object, _real: object = real, _name: str = name, **kw: object) -> object:
            calls.append(_name)
            return _real(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(flows, name, counted)
    return calls


def _counting_element_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the checks of single elements against the record schema."""
    from connectors.siuss import flows

    calls: list[int] = []
    real = flows.schema_problems

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flows, "schema_problems", counted)
    return calls


def test_a_conforming_flow_past_the_check_point_is_not_checked_element_by_element(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checking pass of a long flow validates it against the official schema too: when
    the whole flow follows it, the elements after the check point are not checked again."""
    from connectors.siuss import flows

    monkeypatch.setattr(flows, "HELD_ELEMENTS", 40)
    checks, each = _counting_checks(monkeypatch), _counting_element_checks(monkeypatch)
    runs, reg = _sync_flow(tmp_path, _flow_of([_beneficiary(i) for i in range(300)]))
    assert (runs["siuss_ps"].read, runs["siuss_ps"].loaded) == (300, 300)
    assert checks == ["conforms"]
    # Those read before the check point were checked one by one; none of those after.
    assert 40 < len(each) < 300
    reg.close()


def test_a_schema_fault_after_the_check_point_still_refuses_that_beneficiary_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checking pass says no (one beneficiary past the check point breaks the XSD): the
    flow is well-formed, so each element is checked alone and only that one is refused."""
    from connectors.siuss import flows

    monkeypatch.setattr(flows, "HELD_ELEMENTS", 40)
    checks = _counting_checks(monkeypatch)
    beneficiaries = [_beneficiary(i) for i in range(300)]
    beneficiaries[250] = beneficiaries[250].replace(b"RSSMRK66C14H501U", b"RSSMRK6XC14H501U")
    flow = _flow_of(beneficiaries)
    bad_line = flow[: flow.index(b"RSSMRK6XC14H501U")].count(b"\n") + 1
    runs, reg = _sync_flow(tmp_path, flow)
    ps = runs["siuss_ps"]
    assert (ps.read, ps.loaded, ps.source_errors) == (299, 299, 1)
    assert checks == ["conforms", "validate"]
    (entry,) = reg.quarantine_entries(limit=100)
    assert entry["location"] == f"flow.xml line {bad_line}"
    assert entry["rule"] == "xsd" and entry["field"] == "CodiceFiscale"
    reg.close()


@pytest.mark.parametrize("held", [40, 4096], ids=["checked-midway", "held-to-the-end"])
def test_a_flow_broken_near_its_end_loads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: int
) -> None:
    """Its first parts are read in the same pass that finds the break (held, not loaded):
    refused whole, whether the pass checked the rest first (more than ``HELD_ELEMENTS``)
    or held every part to the end."""
    from connectors.siuss import flows

    monkeypatch.setattr(flows, "HELD_ELEMENTS", held)
    flow = _flow_of([_beneficiary(i) for i in range(300)])
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cut = flow[: len(flow) - 60]
    (inbox / "flow.xml").write_bytes(cut)
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox)
    runs, reg = _sync(ws)
    ps = runs["siuss_ps"]
    assert (ps.read, ps.loaded, ps.source_errors) == (0, 0, 1)
    assert reg.count("intervention") == 0
    (entry,) = reg.quarantine_entries(limit=100)
    assert "nothing loaded" in entry["reason"] and "truncated" in entry["reason"]
    last_line = cut.count(b"\n") + 1
    assert entry["location"] == f"flow.xml line {last_line}"
    reg.close()


def test_a_re_read_of_a_flow_with_one_change_reads_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first read of a flow longer than ``HELD_ELEMENTS`` checks it in a pass of its own;
    re-reading it with one beneficiary changed (in its middle) needs no such pass: the
    changed part is held until the end of the one pass, then loaded."""
    from connectors.siuss import flows

    monkeypatch.setattr(flows, "HELD_ELEMENTS", 150)  # more than a part, half the flow
    checks = _counting_checks(monkeypatch)
    beneficiaries = [_beneficiary(i) for i in range(300)]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "flow.xml").write_bytes(_flow_of(beneficiaries))
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox)
    runs, reg = _sync(ws)
    assert (runs["siuss_ps"].read, runs["siuss_ps"].loaded, checks) == (300, 300, ["conforms"])
    reg.close()
    beneficiaries[150] = beneficiaries[150].replace(b"A2.16", b"A1.09")
    (inbox / "flow.xml").write_bytes(_flow_of(beneficiaries))
    checks.clear()
    runs, reg = _sync(ws)
    ps = runs["siuss_ps"]
    assert (ps.read, ps.loaded, ps.unchanged, ps.source_errors) == (300, 1, 299, 0)
    assert checks == []
    with reg.engine.connect() as conn:
        codes = sorted(r[0] for r in conn.execute(sa.select(t.interventions.c.service_code)))
    assert codes == ["A1.09"] + ["A2.16"] * 299
    reg.close()


def test_a_truncated_sinba_flow_is_refused_on_its_own_stream(tmp_path: Path) -> None:
    sinba = (FIXTURES / "sample-sinba-1.xml").read_bytes()
    runs, reg = _sync_flow(tmp_path, sinba[: len(sinba) - 40], "sinba.xml")
    s = runs["siuss_sinba"]
    assert (s.read, s.loaded, s.source_errors) == (0, 0, 1)
    assert runs["siuss_ps"].source_errors == 0  # said once
    (entry,) = reg.quarantine_entries(limit=100)
    assert entry["location"].startswith("sinba.xml line ") and "truncated" in entry["reason"]
    reg.close()


def test_a_new_version_refused_for_its_header_keeps_what_the_old_one_loaded(
    tmp_path: Path,
) -> None:
    """A refused unit is not complete: what its earlier version loaded stays."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    flow = _flow_of([_beneficiary(1), _beneficiary(2)])
    (inbox / "flow.xml").write_bytes(flow)
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path}/r.sqlite", inbox)
    runs, reg = _sync(ws)
    assert reg.count("intervention") == 2
    reg.close()
    (inbox / "flow.xml").write_bytes(flow.replace(b'Codice="H501"', b'Codice=""'))
    runs, reg = _sync(ws)
    ps = runs["siuss_ps"]
    assert (ps.loaded, ps.removed, ps.source_errors) == (0, 0, 1)
    assert reg.count("intervention") == 2
    reg.close()
