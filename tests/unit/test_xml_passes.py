"""The two streaming passes of hub.inputs.xml: same verdicts, messages and order as reading
every element, memory bounded whatever the document holds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from connectors.siuss.flows import iter_flow
from hub.connector import RawRecord, SourceError, expand_parts
from hub.inputs import xml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inps"
NS = "http://inps.it/Casellario"
HEAD = f'<?xml version="1.0" encoding="UTF-8"?>\n<Flusso xmlns="{NS}">\n'.encode()
HEADER = (
    b'<IdentificazioneFlusso Nome="B019.PS.20240101.0000001"><Ente Codice="CISS" '
    b'Denominazione="CISS" CFOperatore="RSSMRA80A01H501U" Indirizzo="B019"/>'
    b"</IdentificazioneFlusso>\n"
)


def _beneficiary(i: int) -> bytes:
    return (
        f'<Beneficiario CodiceFiscale="RSSMRA80A01H501U"><Anagrafica Cognome="ROSSI" '
        f'Nome="MARIO" AnnoNascita="1980" LuogoNascita="B019" Genere="1" '
        f'CodiceCittadinanza="380"/><Indirizzo CodiceComune="003024" CodiceNazione="380" '
        f'CodiceRegione="01"/><PrestazioniSociali TipoOperazione="I" PresenzaProvaMezzi="1" '
        f'CodicePrestazione="A1.09" DenominazionePrestazione="Telesoccorso" '
        f'ProtocolloDomanda="P{i}" DataInizioPrestazione="2024-01-01" PresaCarico="1" '
        f'AreaUtenza="2" ImportoMensile="150.00"/></Beneficiario>\n'
    ).encode()


def _flow(n: int, extra: dict[int, bytes] | None = None) -> bytes:
    """A PS flow of ``n`` beneficiaries (about 500 bytes each), ``extra`` inserted before
    the i-th (``n``: before the end of the root)."""
    extra = extra or {}
    parts = [HEAD, HEADER]
    for i in range(n):
        parts.append(extra.get(i, b""))
        parts.append(_beneficiary(i))
    parts.append(extra.get(n, b""))
    parts.append(b"</Flusso>\n")
    return b"".join(parts)


def _verdict(fn: object, doc: bytes) -> tuple[str, int] | None:
    try:
        fn(doc, None, root="Flusso")  # type: ignore[operator]
    except xml.UnsafeOrInvalidXML as e:
        return e.reason, e.line or 0
    return None


def _per_element(doc: bytes, schema: None, *, root: str) -> None:
    xml.check_prolog(doc)
    xml._validate_per_element(doc, schema, root=root)


def test_tree_builder_limits_refuse_the_file_in_the_first_pass() -> None:
    # A parser target that builds nothing would accept both: only libxml2's tree builder
    # enforces them, and the second pass builds the tree.
    deep = _flow(100, {50: b"<a>" * 300 + b"</a>" * 300})
    verdict = _verdict(xml.validate, deep)
    assert verdict is not None and "Excessive depth" in verdict[0]
    assert verdict == _verdict(_per_element, deep)
    huge = _flow(100, {50: b"<a>" + b" " * 10_500_000 + b"</a>"})
    verdict = _verdict(xml.validate, huge)
    assert verdict is not None and "Text node too long" in verdict[0]
    assert verdict == _verdict(_per_element, huge)
    items = list(expand_parts(iter_flow(deep, stream="ps", unit="u", location_prefix="f")))
    assert len(items) == 1 and isinstance(items[0], SourceError)


def test_broken_documents_get_the_verdict_and_line_of_a_per_element_read() -> None:
    rng = random.Random(3)
    docs = [p.read_bytes() for p in sorted(FIXTURES.glob("sample-*.xml"))]
    docs.append(_flow(300))  # several 32 KiB blocks
    cases = []
    for doc in docs:
        for _ in range(25):
            cut = rng.randint(1, len(doc) - 1)
            cases.append(doc[:cut])
            pos = rng.randint(0, len(doc) - 1)
            edit = rng.choice([b"<", b">", b"&", b'"', b"\x00", b"&nbsp;", b"</x>", b"<x:a/>"])
            cases.append(doc[:pos] + edit + doc[pos + 1 :])
    cases.append(b'<?xml version="1.0"?>\n<Other xmlns="urn:x"><a/></Other>\n')
    refused = 0
    for doc in cases:
        verdict = _verdict(xml.validate, doc)
        assert verdict == _verdict(_per_element, doc), doc[:80]
        refused += verdict is not None
    assert refused > len(cases) // 2


def test_an_undefined_entity_names_the_line_of_the_last_complete_element() -> None:
    doc = _flow(40, {30: b"&nbsp;"})
    reason, line = _verdict(xml.validate, doc) or ("", 0)
    assert "not well-formed" in reason
    # libxml2 gives no line here: the one of the last complete element, the beneficiary
    # before it (line 1 the prolog, 2 the root, 3 the header, 4 + i the i-th beneficiary).
    assert line == 4 + 29
    assert (reason, line) == _verdict(_per_element, doc)


def test_unexpected_children_come_in_their_place_across_blocks() -> None:
    foo = b"<Foo/>"
    doc = _flow(
        400,
        {0: foo, 1: b"<SINBA/>", 150: foo * 3, 151: b"<Foo>" + b"x" * 70_000 + b"</Foo>", 400: foo},
    )
    wanted = {"IdentificazioneFlusso", "Beneficiario"}
    tagged = [(el.tag, el.sourceline) for el in xml.iter_top_elements(doc, wanted)]
    every = [(el.tag, el.sourceline) for el in xml.iter_top_elements(doc)]
    assert tagged == every
    assert len(tagged) == 1 + 400 + 1 + 1 + 3 + 1 + 1
    assert tagged[-1] == (f"{{{NS}}}Foo", 404)


def test_many_unexpected_children_do_not_pile_up_between_expected_ones() -> None:
    # 200,000 unexpected elements between two beneficiaries: the parser does not report
    # them, so they are dropped after each block read, not kept until the next one ends.
    doc = _flow(2, {1: b"<Foo/>" * 200_000})
    wanted = {"IdentificazioneFlusso", "Beneficiario"}
    most = 0
    count = 0
    for el in xml.iter_top_elements(doc, wanted):
        most = max(most, len(el.getparent()))
        count += 1
    assert count == 1 + 2 + 200_000
    assert most < 10_000, most


def test_records_are_the_same_with_unexpected_children_about() -> None:
    doc = _flow(120, {3: b"<Foo/>", 60: b"<SINBA/>", 120: b"<Foo/>"})
    items = list(expand_parts(iter_flow(doc, stream="ps", unit="u", location_prefix="f")))
    records = [i for i in items if isinstance(i, RawRecord)]
    skipped = [i for i in items if isinstance(i, SourceError)]
    assert len(records) == 120
    assert [e.location for e in skipped] == ["f line 7", "f line 64", "f line 124"]
    assert [e.field for e in skipped] == ["Foo", "SINBA", "Foo"]
    assert records[7].data["protocollo"] == "P7" and records[7].data["ente"] == "CISS"
    assert records[7].location == "f line 11"


@pytest.mark.parametrize("size", [0, 1, 2])
def test_a_flow_with_no_or_few_records(size: int) -> None:
    doc = _flow(size)
    assert _verdict(xml.validate, doc) is None
    items = list(expand_parts(iter_flow(doc, stream="ps", unit="u", location_prefix="f")))
    assert sum(isinstance(i, RawRecord) for i in items) == size


def _in_last(doc: bytes, old: bytes, new: bytes) -> bytes:
    """``doc`` with the last ``old`` replaced by ``new``: a fault in the flow's last record."""
    at = doc.rindex(old)
    return doc[:at] + new + doc[at + len(old) :]


def _in_middle(doc: bytes, what: bytes) -> bytes:
    return doc[: len(doc) // 2] + what + doc[len(doc) // 2 :]


#: Faults the one-pass check must see, by name.
FAULTS = {
    "cut short at the end": lambda d: d[:-12],
    "cut short inside a tag": lambda d: d[: len(d) // 2],
    "a mismatched end tag": lambda d: _in_last(d, b"</Beneficiario>", b"</Beneficiari>"),
    "a stray ampersand": lambda d: _in_middle(d, b"&"),
    "bytes that are not UTF-8": lambda d: _in_middle(d, b"\xff\xfe"),
    "a second root": lambda d: d + b"<Flusso/>",
    "text after the root": lambda d: d + b"garbage",
    "a value the schema refuses": lambda d: _in_last(d, b'AreaUtenza="2"', b'AreaUtenza="99"'),
    "a required attribute missing": lambda d: _in_last(d, b'PresaCarico="1" ', b""),
    "an element the schema does not allow": lambda d: _in_last(
        d, b"<Indirizzo", b"<Foo/><Indirizzo"
    ),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_conforms_is_false_for_a_flow_broken_anywhere(case: str) -> None:
    """The one-pass check in libxml2 (what lets the SIUSS reader skip the per-record checks)
    says no to every kind of fault, the last of the flow's records included."""
    from connectors.siuss.flows import schema_for

    schema = schema_for("Beneficiario")
    good = _flow(300)
    assert xml.conforms(good, schema, root="Flusso")
    bad = FAULTS[case](good)
    assert bad != good
    assert not xml.conforms(bad, schema, root="Flusso"), case


def test_conforms_refuses_an_unsafe_document_as_validate_does() -> None:
    from connectors.siuss.flows import schema_for

    doc = _flow(3).replace(
        HEAD, HEAD.replace(b"<Flusso", b'<!DOCTYPE x [<!ENTITY e "x">]>\n<Flusso')
    )
    with pytest.raises(xml.UnsafeOrInvalidXML, match="DOCTYPE"):
        xml.conforms(doc, schema_for("Beneficiario"), root="Flusso")
    assert not xml.conforms(_flow(3), schema_for("Beneficiario"), root="Other")
