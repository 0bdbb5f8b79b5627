"""SIUSS flows → raw records, through the hardened XML entry point.

Both flows have the root ``Flusso`` in the namespace ``http://inps.it/Casellario``;
the first element after ``IdentificazioneFlusso`` tells which: ``Beneficiario``
(PS/PSA with the nested SINA assessment) or ``SINBA`` (child protection).
A unit (a file, a WaaS flow) is validated against its XSD in a first pass; if
anything is wrong, the unit yields one :class:`SourceError` and no record.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from hub.inputs.xml import (
    Source,
    UnsafeOrInvalidXML,
    first_child_name,
    iter_elements,
    load_schema,
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


@lru_cache(maxsize=2)
def schema_for(flow: str) -> etree.XMLSchema:
    name = "PS_PSA_SINA201812.xsd" if flow == "Beneficiario" else "SINBA.xsd"
    return load_schema(XSD_DIR / name)


def flow_kind(source: Source, *, max_bytes: int) -> str:
    """``Beneficiario`` or ``SINBA``; raises UnsafeOrInvalidXML otherwise."""
    kind = first_child_name(source, max_bytes=max_bytes)
    if kind not in ("Beneficiario", "SINBA"):
        raise UnsafeOrInvalidXML(
            "not a SIUSS flow: after IdentificazioneFlusso there is "
            "neither Beneficiario (PS/PSA) nor SINBA"
        )
    return kind


def iter_flow(
    source: Source,
    *,
    stream: str,
    unit: str,
    location_prefix: str,
    max_bytes: int = 512 * 1024 * 1024,
) -> Iterator[ReadItem]:
    """The records of one unit for ``stream`` (nothing if it is the other flow type)."""
    try:
        kind = flow_kind(source, max_bytes=max_bytes)
        if kind != FLOW_OF_STREAM[stream]:
            return
        validate(source, schema_for(kind), root="Flusso", max_bytes=max_bytes)
    except UnsafeOrInvalidXML as e:
        # Report a refused unit once: on the stream its kind belongs to, or on "ps".
        if stream == STREAM_PS:
            where = f"{location_prefix} line {e.line}" if e.line else location_prefix
            yield SourceError(f"refused, nothing loaded from it: {e.reason}", where, rule="xml")
        return
    reader = _ps_records if kind == "Beneficiario" else _sinba_records
    try:
        yield from reader(source, unit, location_prefix)
    except UnsafeOrInvalidXML as e:  # pragma: no cover - validated just before
        yield SourceError(f"refused while reading: {e.reason}", location_prefix, rule="xml")
        return
    yield UnitComplete(unit)


def _a(el: Any, name: str) -> str:
    return str(el.get(name) or "").strip()


def _ps_records(source: Source, unit: str, prefix: str) -> Iterator[RawRecord]:
    head: dict[str, str] = {}
    person: dict[str, str] = {}
    tags = {
        "IdentificazioneFlusso",
        "Ente",
        "Beneficiario",
        "Anagrafica",
        "Indirizzo",
        "PrestazioniSociali",
    }
    for ev, el in iter_elements(source, tags, events=("start", "end")):
        name = etree.QName(el).localname
        if ev == "start":
            if name == "Beneficiario":
                person = {"cf": _a(el, "CodiceFiscale")}
            continue
        if name == "IdentificazioneFlusso":
            head["flow"] = _a(el, "Nome")
        elif name == "Ente":
            head["ente"] = _a(el, "Codice")
            head["cf_operatore"] = _a(el, "CFOperatore")
        elif name == "Anagrafica":
            person.update(
                cognome=_a(el, "Cognome"),
                nome=_a(el, "Nome"),
                luogo_nascita=_a(el, "LuogoNascita"),
                anno_nascita=_a(el, "AnnoNascita"),
                genere=_a(el, "Genere"),
                cittadinanza=_a(el, "CodiceCittadinanza"),
            )
        elif name == "Indirizzo" and "comune_residenza" not in person:
            person["comune_residenza"] = _a(el, "CodiceComune")
        elif name == "PrestazioniSociali":
            yield RawRecord(
                STREAM_PS,
                {**head, **person, **_prestazione(el)},
                location=f"{prefix} line {el.sourceline}",
                op="delete" if _a(el, "TipoOperazione") == "C" else "upsert",
                unit=unit,
            )


def _prestazione(el: Any) -> dict[str, str]:
    rec = {
        "tipo_operazione": _a(el, "TipoOperazione") or "I",
        "codice_prestazione": _a(el, "CodicePrestazione"),
        "area_utenza": _a(el, "AreaUtenza"),
        "data_inizio": _a(el, "DataInizioPrestazione") or _a(el, "DataErogazionePrestazione"),
        "data_fine": _a(el, "DataFinePrestazione"),
        "data_erogazione": _a(el, "DataErogazionePrestazione"),
        "data_evento": _a(el, "DataEvento"),
        "importo": _a(el, "ImportoPrestazione") or _a(el, "ImportoMensile"),
        "quota_utente": _a(el, "ImportoQuotaUtente"),
        "presa_carico": _a(el, "PresaCarico"),
        "protocollo": _a(el, "ProtocolloDomanda"),
        "carattere": _a(el, "CaratterePrestazione"),
        "sina": "N",
        "sina_avq": "",
        "sina_mobilita": "",
        "sina_invalidita": "",
        "sina_invciv": "",
    }
    for child in el:
        if etree.QName(child).localname != "SINA":
            continue
        codes = [
            str(c.text or "").strip() for c in child.iter() if etree.QName(c).localname == "InvCiv"
        ]
        rec.update(
            sina="S",
            sina_avq=_a(child, "AttivitaVitaQuotidiana"),
            sina_mobilita=_a(child, "Mobilita"),
            sina_invalidita="S" if codes else "N",
            sina_invciv="|".join(codes),
        )
    return rec


def _sinba_records(source: Source, unit: str, prefix: str) -> Iterator[RawRecord]:
    head: dict[str, str] = {}
    for _ev, el in iter_elements(source, {"IdentificazioneFlusso", "Ente", "SINBA"}):
        name = etree.QName(el).localname
        if name == "IdentificazioneFlusso":
            head["flow"] = _a(el, "Nome")
        elif name == "Ente":
            head["ente"] = _a(el, "Codice")
            head["cf_operatore"] = _a(el, "CFOperatore")
        else:
            codes = [
                str(c.text or "").strip()
                for c in el.iter()
                if etree.QName(c).localname == "CodicePrestazione"
            ]
            yield RawRecord(
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
                location=f"{prefix} line {el.sourceline}",
                unit=unit,
            )
