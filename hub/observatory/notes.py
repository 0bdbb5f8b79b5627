"""The observatory's words in Italian: table notes, the names of table dimensions, and
SIUSS prestazioni under their names.

The indicators describe their tables in English (``Table.notes``, beside the code), as
the rest of the code does; whatever leaves the hub — reports, open data, the dashboard
— speaks Italian, through this module. A note without an Italian text is left out
rather than shown in English (``tests/web/test_report_texts.py`` checks that every note
written in ``hub/observatory`` has one).
"""

from __future__ import annotations

import re
from dataclasses import replace

from hub.observatory.indicators import AREA_HEADINGS
from hub.observatory.table import Table
from hub.schema.siuss import prestazione_label

#: Each note of the indicators, and its Italian text.
NOTES_IT = {
    "Whole amount of each intervention in the period, rounded to the euro per cell.": (
        "Importo intero di ogni intervento del periodo, arrotondato all'euro in ogni cella."
    ),
    "A contact citing several codes counts under each; totals count contacts with at least "
    "one code.": (
        "Un contatto che cita più codici è contato sotto ciascuno; i totali contano i contatti "
        "con almeno un codice."
    ),
    "Organisations, not people: not subject to disclosure control.": (
        "Organizzazioni, non persone: non soggette al controllo della riservatezza."
    ),
    "Row totals are utenti (a person changing group counts in each group, once in the total); "
    "column and grand totals are the district's distinct people.": (
        "I totali di riga contano gli utenti (una persona che cambia gruppo è contata in ogni "
        "gruppo, una volta sola nel totale); i totali di colonna e il totale generale contano "
        "le persone distinte del distretto."
    ),
    "People with a presa in carico active in the period both here and in the other "
    "district (received under a convenzione); the total counts each person once.": (
        "Persone con una presa in carico attiva nel periodo sia in questo distretto sia "
        "nell'altro (dati ricevuti in base a una convenzione); il totale conta ogni persona "
        "una volta sola."
    ),
}

#: Notes with a number in them (a setting), as patterns and their Italian text.
NOTE_PATTERNS_IT = (
    (
        re.compile(
            r"A presa in carico closed in one district and opened in the other within "
            r"(?P<days>\d+) days, counted in the period of the opening; people, not transfers\."
        ),
        "Una presa in carico chiusa in un distretto e aperta nell'altro entro {days} giorni, "
        "contata nel periodo dell'apertura; si contano persone, non trasferimenti.",
    ),
)

#: What the dimension codes of a table (``row_dim``, ``col_dim``) name, in the data
#: dictionary of the open data.
DIMENSIONS_IT = {
    "area": "area di utenza",
    "area_code": "area di utenza / codice della prestazione SIUSS",
    "bisogni": "bisogno",
    "comune": "comune (codice ISTAT)",
    "enti": "tipo di ente",
    "gruppo": "gruppo di utenza",
    "mese": "mese",
    "misura": "misura",
    "org": "ente",
    "seguite_da": "seguite da",
    "servizi": "servizio dato",
    "distretto": "distretto",
    "direzione": "direzione",
    "tipo": "tipo di ente",
    "stato": "stato",
}


def italian_note(note: str) -> str:
    """The Italian text of a table's note; ``""`` for no note or an untranslated one."""
    if not note:
        return ""
    if note in NOTES_IT:
        return NOTES_IT[note]
    for pattern, text in NOTE_PATTERNS_IT:
        m = pattern.fullmatch(note)
        if m:
            return text.format(**m.groupdict())
    return ""


def dimension_name(dim: str) -> str:
    return DIMENSIONS_IT.get(dim, dim)


def with_service_names(tb: Table) -> Table:
    """Show SIUSS prestazioni as ``"A1.09 · Telesoccorso e teleassistenza (Anziani)"``:
    code first, then its name from the catalogue (:mod:`hub.schema.siuss`), the area of
    utenza last. Keys keep ``AREA/CODE``, so disclosure control is unchanged."""
    if tb.row_dim != "area_code":
        return tb
    headings = []
    for key in tb.rows:
        area, _, code = key.partition("/")
        if not code:  # a total row or a row that is not an area/code pair
            headings.append(AREA_HEADINGS.get(key, key))
            continue
        headings.append(f"{prestazione_label(code)} ({AREA_HEADINGS.get(area, area)})")
    return replace(tb, row_headings=tuple(headings), row_label="Prestazione SIUSS (area di utenza)")
