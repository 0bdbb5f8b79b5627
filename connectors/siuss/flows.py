"""SIUSS flows → raw records, through the hardened XML entry point.

Both flows have the root ``Flusso`` in the namespace ``http://inps.it/Casellario``;
the first element after ``IdentificazioneFlusso`` tells which: ``Beneficiario``
(PS/PSA with the nested SINA assessment) or ``SINBA`` (child protection).
A unit (a file, a WaaS flow) that is hostile, not well-formed or whose header
breaks the XSD yields one :class:`SourceError` and no record; otherwise each
record element is validated alone against its part of the XSD, and one that
breaks it yields a :class:`SourceError` at its own line while the others load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from hub.connector import (
    FieldRole,
    FieldSpec,
    RawRecord,
    ReadItem,
    SourceError,
    Stream,
    UnitComplete,
)
from hub.inputs.parts import in_parts
from hub.inputs.xml import (
    Source,
    UnsafeOrInvalidXML,
    conforms,
    element_schema,
    first_child_name,
    iter_top_elements,
    load_schema,
    root_name,
    schema_problems,
    validate,
)
from hub.pseudonyms import IdentifierType

XSD_DIR = Path(__file__).resolve().parent / "xsd"
STREAM_PS = "ps"
STREAM_SINBA = "sinba"
FLOW_OF_STREAM = {STREAM_PS: "Beneficiario", STREAM_SINBA: "SINBA"}

D = FieldRole.DATA
PS_STREAM = Stream(
    STREAM_PS,
    fields=(
        FieldSpec("ente", description="Ente@Codice"),
        FieldSpec("flow", description="IdentificazioneFlusso@Nome"),
        FieldSpec("cf", FieldRole.IDENTIFIER, "Beneficiario@CodiceFiscale (CF or provisional)"),
        FieldSpec("cognome", FieldRole.PERSONAL),
        FieldSpec("nome", FieldRole.PERSONAL),
        FieldSpec("luogo_nascita", FieldRole.PERSONAL),
        FieldSpec("cf_operatore", FieldRole.PERSONAL, "the operator's own codice fiscale"),
        *(
            FieldSpec(n, D)
            for n in (
                "anno_nascita",
                "genere",
                "cittadinanza",
                "comune_residenza",
                "tipo_operazione",
                "codice_prestazione",
                "area_utenza",
                "data_inizio",
                "data_fine",
                "data_erogazione",
                "data_evento",
                "importo",
                "quota_utente",
                "presa_carico",
                "protocollo",
                "carattere",
                "sina",
                "sina_avq",
                "sina_mobilita",
                "sina_invalidita",
                "sina_invciv",
            )
        ),
    ),
    source_key=("ente", "cf", "codice_prestazione", "protocollo", "data_inizio"),
    description="One record per PrestazioniSociali, with its Beneficiario and SINA",
)
SINBA_STREAM = Stream(
    STREAM_SINBA,
    fields=(
        FieldSpec("ente"),
        FieldSpec("flow"),
        FieldSpec(
            "id_beneficiario",
            FieldRole.IDENTIFIER,
            "IDBeneficiario (local to the ente)",
            IdentifierType.LOCAL,
            namespace_field="ente",
        ),
        FieldSpec("cf_operatore", FieldRole.PERSONAL),
        *(
            FieldSpec(n, D)
            for n in (
                "anno_nascita",
                "disabilita",
                "data_prima_segnalazione",
                "prestazioni",
                "cittadinanza_residenza",
                "luogo_vita",
            )
        ),
    ),
    source_key=("ente", "id_beneficiario"),
    description="One record per SINBA (child protection) entry",
)
STREAMS = {STREAM_PS: PS_STREAM, STREAM_SINBA: SINBA_STREAM}


HEADER = "IdentificazioneFlusso"
RECORD_TYPE = {"Beneficiario": "BeneficiarioType", "SINBA": "SinbaType"}


@lru_cache(maxsize=2)
def schema_for(flow: str) -> etree.XMLSchema:
    """The official schema of ``flow`` (whole documents)."""
    name = "PS_PSA_SINA201812.xsd" if flow == "Beneficiario" else "SINBA.xsd"
    return load_schema(XSD_DIR / name)


@lru_cache(maxsize=2)
def record_schema_for(flow: str) -> etree.XMLSchema:
    """The official schema with the header and the record element declared globally,
    so each ``Beneficiario`` / ``SINBA`` is validated alone against its own rules."""
    name = "PS_PSA_SINA201812.xsd" if flow == "Beneficiario" else "SINBA.xsd"
    return element_schema(
        XSD_DIR / name, {HEADER: "IdentificazioneFlussoType", flow: RECORD_TYPE[flow]}
    )


def flow_kind(source: Source, *, max_bytes: int) -> str:
    """``Beneficiario`` or ``SINBA``; raises UnsafeOrInvalidXML otherwise."""
    kind = first_child_name(source, max_bytes=max_bytes)
    if kind not in ("Beneficiario", "SINBA"):
        raise UnsafeOrInvalidXML(
            "not a SIUSS flow: after IdentificazioneFlusso there is "
            "neither Beneficiario (PS/PSA) nor SINBA"
        )
    return kind


#: Most record elements the pipeline may read of a flow not yet read to its end (it holds
#: their records, not loading them, until the flow proves whole: :class:`RecordPart`'s
#: ``provisional``). A re-read that changed a few parts needs a single pass over the file;
#: past this many elements (a first read, a flow mostly changed) the rest of the flow is
#: checked by a pass of its own, as a first read always was, before its parts go on.
HELD_ELEMENTS = 4096


def iter_flow(
    source: Source,
    *,
    stream: str,
    unit: str,
    location_prefix: str,
    max_bytes: int = 512 * 1024 * 1024,
) -> Iterator[ReadItem]:
    """The records of one unit for ``stream`` (nothing if it is the other flow type).

    A unit that is hostile (DTD, entities), oversize, not well-formed or truncated is
    refused whole: one :class:`SourceError` and no record. The header
    (``IdentificazioneFlusso`` with its ``Ente``) is checked against the official schema
    — an invalid header refuses the unit — then each record element (``Beneficiario`` or
    ``SINBA``) alone: one that breaks the schema becomes a :class:`SourceError` at its own
    line naming the field, and the others load.

    Records come in provisional parts while the flow has not been read to its end (see
    :data:`HELD_ELEMENTS`), so a flow broken anywhere still loads nothing: its refusal
    drops them.
    """
    try:
        kind = flow_kind(source, max_bytes=max_bytes)
    except UnsafeOrInvalidXML as e:
        # Its kind unknown, a refused unit is reported once, on "ps".
        if stream == STREAM_PS:
            yield _refused(e, location_prefix)
        return
    if kind != FLOW_OF_STREAM[stream]:
        return
    try:
        if root_name(source) != "Flusso":
            raise UnsafeOrInvalidXML("not a SIUSS flow: its root element is not Flusso")
        read = yield from _records(source, kind, unit, location_prefix, stream, max_bytes)
    except UnsafeOrInvalidXML as e:
        yield _refused(e, location_prefix)
        return
    if read:
        yield UnitComplete(unit)


def _refused(e: UnsafeOrInvalidXML, prefix: str) -> SourceError:
    where = f"{prefix} line {e.line}" if e.line else prefix
    return SourceError(f"refused, nothing loaded from it: {e.reason}", where, rule="xml")


#: The namespace of both flows; once an element has passed the schema, its children's
#: tags are exactly ``{NS}Name`` (the schemas qualify local elements).
NS = "http://inps.it/Casellario"
_HEADER_TAG = f"{{{NS}}}{HEADER}"
_ENTE = f"{{{NS}}}Ente"
_ANAGRAFICA = f"{{{NS}}}Anagrafica"
_INDIRIZZO = f"{{{NS}}}Indirizzo"
_PRESTAZIONE = f"{{{NS}}}PrestazioniSociali"
_SINA = f"{{{NS}}}SINA"
_INVCIV = f"{{{NS}}}InvCiv"
_CODICE_PRESTAZIONE = f"{{{NS}}}CodicePrestazione"


def _local(el: Any, tag: str, name: str) -> str:
    """The local name of ``el``: ``name`` when its tag is ``tag`` (no QName built)."""
    return name if el.tag == tag else str(etree.QName(el).localname)


def _records(
    source: Source, kind: str, unit: str, prefix: str, stream: str, max_bytes: int
) -> Generator[ReadItem, None, bool]:
    """The header, then the unit's record elements as parts (:func:`hub.inputs.parts.in_parts`):
    a changed flow is re-read at the cost of the parts that changed. A part's digest covers
    its elements as they are written (without their line numbers, which only locate a
    record) with the stream, the flow kind and the header.

    Whether the unit was read (False: its header refused it). Raises UnsafeOrInvalidXML,
    with the words of :func:`hub.inputs.xml.validate`, if the flow breaks anywhere."""
    try:
        return (yield from _read_parts(source, kind, unit, prefix, stream, max_bytes))
    except UnsafeOrInvalidXML:
        # The pass that reads the parts met it: say it as the checking pass does (the
        # same parser fed the same blocks, so the same fault), with its line.
        validate(source, None, root="Flusso", max_bytes=max_bytes)
        raise  # pragma: no cover - validate raises the same fault


def _read_parts(
    source: Source, kind: str, unit: str, prefix: str, stream: str, max_bytes: int
) -> Generator[ReadItem, None, bool]:
    schema = record_schema_for(kind)
    kind_tag = f"{{{NS}}}{kind}"
    elements = iter_top_elements(source, {HEADER, kind}, keep=True)
    head: dict[str, str] | None = None
    seed = b""
    for el in elements:
        name = kind if el.tag == kind_tag else _local(el, _HEADER_TAG, HEADER)
        if name != HEADER:
            yield SourceError(
                f"refused, nothing loaded from it: the flow does not start with {HEADER}",
                f"{prefix} line {el.sourceline or 0}",
                rule="xsd_header",
                field=HEADER,
            )
            return False
        problems = schema_problems(schema, el)
        if problems:
            p = problems[0]
            yield SourceError(
                "refused, nothing loaded from it: the flow header does not follow the "
                f"official schema ({p.reason})",
                f"{prefix} line {p.line}",
                rule="xsd_header",
                field=p.field,
            )
            return False
        head = _header(el)
        seed = b"\x1e".join([stream.encode(), kind.encode(), _content(el)])
        break
    if head is None:
        # No element at all after the root: the pass that checks says what is wrong.
        validate(source, None, root="Flusso", max_bytes=max_bytes)
        return True
    header: dict[str, str] = head
    held = 0  # elements the pipeline read of the parts offered provisionally
    #: The checking pass found the whole flow follows the official schema: no element needs
    #: a check of its own (one pass in libxml2 costs less than a check per element).
    whole = False

    def items(els: Sequence[tuple[int, Any]]) -> Iterator[RawRecord | SourceError]:
        nonlocal held
        held += len(els)
        each = None if whole else schema
        for n, el in els:
            yield from _element_records(el, n, each, kind, kind_tag, header, unit, prefix)

    # An element is a kilobyte or two (a CSV row a tenth of that): about 64 a part. Each
    # goes with its position after the header, which locates it where lines cannot.
    parts = in_parts(
        enumerate(elements, start=1),
        unit=unit,
        seed=seed,
        content=_numbered_content,
        build=items,
        average=64,
        min_rows=16,
    )
    checked = False
    for part in parts:
        if checked:
            yield part
            continue
        yield dataclasses.replace(part, provisional=True)
        if held > HELD_ELEMENTS:
            # Too much to hold: check the rest of the flow first (a first read, a flow
            # mostly changed), and then the parts need not wait for its end. The pass checks
            # the official schema too: if the whole flow follows it, the elements still to
            # come are not checked one by one. If not, the pass that checks well-formedness
            # alone says why the flow is refused, or each element is checked alone.
            whole = conforms(source, schema_for(kind), root="Flusso", max_bytes=max_bytes)
            if not whole:
                validate(source, None, root="Flusso", max_bytes=max_bytes)
            checked = True
    return True


def _content(el: Any) -> bytes:
    """An element as written, for its part's digest: serialised as text, then UTF-8 (about
    a quarter less CPU than libxml2's serialisation to bytes, whose ASCII output writes a
    character reference for each other character; the bytes are the same for an element
    all of ASCII, so only the parts holding other characters are read again once)."""
    return str(etree.tostring(el, with_tail=False, encoding="unicode")).encode()


def _numbered_content(row: tuple[int, Any]) -> bytes:
    # Only the element: its position would change every part after an insertion.
    return _content(row[1])


#: The last line number libxml2 keeps exactly for an element (16 bits; past it, lxml's
#: ``sourceline`` of an element taken out of its document is 65,535 or a neighbour's line).
LAST_EXACT_LINE = 65_534


def _where(prefix: str, line: int | None, what: str) -> str:
    """Where a record is: its line, or (past the lines libxml2 counts exactly) ``what``, its
    position in the flow."""
    if line and line <= LAST_EXACT_LINE:
        return f"{prefix} line {line}"
    if not line:  # no line known at all
        return f"{prefix} {what}"
    return f"{prefix} {what} (past line {LAST_EXACT_LINE + 1:,})"


def _element_records(
    el: Any,
    n: int,
    schema: etree.XMLSchema | None,
    kind: str,
    kind_tag: str,
    head: dict[str, str],
    unit: str,
    prefix: str,
) -> Iterator[RawRecord | SourceError]:
    """The records of one element after the header, the ``n``-th (or why it gives none);
    ``schema``: the record schema to check it against (None: the whole flow passed the
    official one)."""
    name = kind if el.tag == kind_tag else _local(el, _HEADER_TAG, HEADER)
    if name != kind:
        yield SourceError(
            f"element skipped: {name} is not expected here (the official schema allows "
            f"only {kind} after {HEADER}); the other records of the file load",
            _where(prefix, el.sourceline, f"element {n:,} after {HEADER}"),
            rule="xsd",
            field=name,
            scope="record",
        )
        return
    problems = [] if schema is None else schema_problems(schema, el)
    if problems:
        p = problems[0]
        what = "beneficiary" if kind == "Beneficiario" else "SINBA record"
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        yield SourceError(
            f"{what} refused, the others of the file load: does not follow the official "
            f"schema ({p.reason}){more}",
            _where(prefix, p.line, f"{kind} {n:,}"),
            rule="xsd",
            field=p.field,
            scope="record",
        )
        return
    if kind == "Beneficiario":
        yield from _ps_records(el, n, head, unit, prefix)
    else:
        yield _sinba_record(el, n, head, unit, prefix)


def _header(el: Any) -> dict[str, str]:
    head = {"flow": _a(el, "Nome")}
    for child in el:
        if child.tag == _ENTE:
            head["ente"] = _a(child, "Codice")
            head["cf_operatore"] = _a(child, "CFOperatore")
    return head


def _a(el: Any, name: str) -> str:
    return str(el.get(name) or "").strip()


def _ps_records(
    el: Any, n: int, head: dict[str, str], unit: str, prefix: str
) -> Iterator[RawRecord]:
    """One record per PrestazioniSociali of a (valid, complete) Beneficiario element.

    The element has passed the schema, so its children's tags are compared as strings
    with the namespace, and each attribute is read once from the element's attributes.
    """
    person: dict[str, str] = dict(head)
    person["cf"] = (el.get("CodiceFiscale") or "").strip()
    given = 0  # PrestazioniSociali so far
    for child in el:
        tag = child.tag
        if tag == _ANAGRAFICA:
            get = child.attrib.get
            person["cognome"] = (get("Cognome") or "").strip()
            person["nome"] = (get("Nome") or "").strip()
            person["luogo_nascita"] = (get("LuogoNascita") or "").strip()
            person["anno_nascita"] = (get("AnnoNascita") or "").strip()
            person["genere"] = (get("Genere") or "").strip()
            person["cittadinanza"] = (get("CodiceCittadinanza") or "").strip()
        elif tag == _INDIRIZZO and "comune_residenza" not in person:
            person["comune_residenza"] = (child.get("CodiceComune") or "").strip()
        elif tag == _PRESTAZIONE:
            rec = person.copy()
            op = _prestazione(child, rec)
            given += 1
            yield RawRecord(
                STREAM_PS,
                rec,
                location=_where(
                    prefix, child.sourceline, f"Beneficiario {n:,}, PrestazioniSociali {given}"
                ),
                op="delete" if op == "C" else "upsert",
                unit=unit,
            )


def _prestazione(el: Any, rec: dict[str, str]) -> str:
    """Add one PrestazioniSociali's fields to ``rec``; its TipoOperazione as read."""
    get = el.attrib.get
    op = (get("TipoOperazione") or "").strip()
    erogazione = (get("DataErogazionePrestazione") or "").strip()
    rec["tipo_operazione"] = op or "I"
    rec["codice_prestazione"] = (get("CodicePrestazione") or "").strip()
    rec["area_utenza"] = (get("AreaUtenza") or "").strip()
    rec["data_inizio"] = (get("DataInizioPrestazione") or "").strip() or erogazione
    rec["data_fine"] = (get("DataFinePrestazione") or "").strip()
    rec["data_erogazione"] = erogazione
    rec["data_evento"] = (get("DataEvento") or "").strip()
    rec["importo"] = (get("ImportoPrestazione") or "").strip() or (
        get("ImportoMensile") or ""
    ).strip()
    rec["quota_utente"] = (get("ImportoQuotaUtente") or "").strip()
    rec["presa_carico"] = (get("PresaCarico") or "").strip()
    rec["protocollo"] = (get("ProtocolloDomanda") or "").strip()
    rec["carattere"] = (get("CaratterePrestazione") or "").strip()
    rec["sina"] = "N"
    rec["sina_avq"] = ""
    rec["sina_mobilita"] = ""
    rec["sina_invalidita"] = ""
    rec["sina_invciv"] = ""
    if len(el):
        for child in el:
            if child.tag != _SINA:
                continue
            codes = [str(c.text or "").strip() for c in child.iter(_INVCIV)]
            rec["sina"] = "S"
            rec["sina_avq"] = _a(child, "AttivitaVitaQuotidiana")
            rec["sina_mobilita"] = _a(child, "Mobilita")
            rec["sina_invalidita"] = "S" if codes else "N"
            rec["sina_invciv"] = "|".join(codes)
    return op


def _sinba_record(el: Any, n: int, head: dict[str, str], unit: str, prefix: str) -> RawRecord:
    codes = [str(c.text or "").strip() for c in el.iter(_CODICE_PRESTAZIONE)]
    return RawRecord(
        STREAM_SINBA,
        {
            **head,
            "id_beneficiario": _a(el, "IDBeneficiario"),
            "anno_nascita": _a(el, "AnnoNascita"),
            "disabilita": _a(el, "Disabilita"),
            "data_prima_segnalazione": _a(el, "DataPrimaSegnalazione"),
            "prestazioni": "|".join(codes),
            "cittadinanza_residenza": _a(el, "CodiceNazioneResidenza"),
            "luogo_vita": _a(el, "LuogoVita"),
        },
        location=_where(prefix, el.sourceline, f"SINBA {n:,}"),
        unit=unit,
    )
