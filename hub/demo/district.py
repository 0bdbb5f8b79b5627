"""The demo district: three consortia of real comuni of the province of Novara.

* **CISS-BORGO** (Consorzio Intercomunale dei Servizi Sociali di Borgomanero)
  delivers a CSV export of its *cartella sociale* (the "CartellaSociale
  Esempio" layout of ``mappings/cartella-esempio.toml``). The generator makes
  people so that the registry reproduces the consortium's real published table of
  *prese in carico* at 31 October 2020–2022 (:data:`SEED_TABLE`), using the
  definitions of :mod:`hub.observatory.prese_in_carico` — including the nine
  people of 2022 who changed group during the year.
* **CBV** (Consorzio Basso Verbano, fictitious) delivers SIUSS PS/PSA/SINA XML
  files in an inbox folder, cancellations included.
* **COT** (Consorzio Ovest Ticino, fictitious) exposes the same flows through
  the WaaS e-service (a local fake server, one beneficiary per flow).

Every person is synthetic. Some share omocodic codici fiscali (different
people), some have STP codes, and a few records carry invalid codes on
purpose: they must end in quarantine, not in the tables.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from hub.demo.people import PeopleFactory, Person, with_wrong_check_character

DATA = Path(__file__).resolve().parent.parent / "data" / "comuni_novara.csv"
NS = "http://inps.it/Casellario"


@dataclass(frozen=True)
class Comune:
    istat: str
    belfiore: str
    name: str
    population: int


def load_comuni() -> dict[str, Comune]:
    """Comuni of the province of Novara by name."""
    out: dict[str, Comune] = {}
    with DATA.open(encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        for r in rows:
            c = Comune(r["istat"], r["cadastral_code"], r["municipality"], int(r["pop"]))
            out[c.name] = c
    return out


@dataclass(frozen=True)
class Consortium:
    code: str
    name: str
    comuni: tuple[str, ...]
    channel: str  # the connector type delivering its data


CONSORTIA = (
    Consortium(
        "CISS-BORGO",
        "CISS Borgomanero",
        (
            "Borgomanero",
            "Gozzano",
            "Invorio",
            "Cureggio",
            "Fontaneto d'Agogna",
            "Maggiora",
            "Bogogno",
            "Agrate Conturbia",
            "Boca",
            "Cavallirio",
            "Soriso",
            "Pogno",
            "Briga Novarese",
            "Gargallo",
            "Gattico-Veruno",
            "Ameno",
            "Armeno",
            "Orta San Giulio",
        ),
        "csv_export",
    ),
    Consortium(
        "CBV",
        "Consorzio Basso Verbano (fittizio)",
        (
            "Arona",
            "Oleggio Castello",
            "Dormelletto",
            "Castelletto sopra Ticino",
            "Meina",
            "Lesa",
            "Comignago",
            "Paruzzaro",
            "Massino Visconti",
            "Nebbiuno",
        ),
        "siuss_files",
    ),
    Consortium(
        "COT",
        "Consorzio Ovest Ticino (fittizio)",
        (
            "Oleggio",
            "Marano Ticino",
            "Mezzomerico",
            "Pombia",
            "Varallo Pombia",
            "Divignano",
            "Bellinzago Novarese",
            "Cameri",
            "Galliate",
            "Romentino",
            "Trecate",
        ),
        "siuss_waas",
    ),
)

#: CISS Borgomanero, prese in carico at 31 October (published figures).
#: minori non disabili, minori disabili, adulti non disabili, adulti disabili,
#: anziani, anziani non autosufficienti, totale utenti, totale nuclei.
SEED_TABLE: dict[int, tuple[int, int, int, int, int, int, int, int]] = {
    2020: (411, 108, 1190, 324, 249, 273, 2555, 1681),
    2021: (452, 115, 1375, 368, 276, 450, 3036, 2266),
    2022: (479, 131, 1432, 401, 288, 652, 3374, 2332),
}

# Vendor codes of the "CartellaSociale Esempio" export (see mappings/cartella-esempio.toml).
VENDOR_AREAS = {
    "minori": ("MINORI", "FAMIGLIA"),
    "disabili": ("DISABILI",),
    "adulti": ("ADULTI", "POVERTA", "IMMIGRATI", "DIPENDENZE"),
    "anziani": ("ANZIANI",),
}
VENDOR_SERVICES = {
    "MINORI": (("AFF-FAM", "Affidamento familiare"), ("EDU-DOM", "Educativa domiciliare")),
    "FAMIGLIA": (("CONTR-EC", "Contributo economico"), ("SEGR-SOC", "Segretariato sociale")),
    "DISABILI": (("CENTRO-DIURNO", "Centro diurno disabili"), ("TRASPORTO", "Trasporto sociale")),
    "ADULTI": (("CONTR-EC", "Contributo economico"), ("INS-LAV", "Inserimento lavorativo")),
    "POVERTA": (("CONTR-EC", "Contributo economico"), ("PRONTO-INT", "Pronto intervento sociale")),
    "IMMIGRATI": (("MEDIAZ", "Mediazione culturale"), ("SEGR-SOC", "Segretariato sociale")),
    "DIPENDENZE": (("SEGR-SOC", "Segretariato sociale"), ("INS-LAV", "Inserimento lavorativo")),
    "ANZIANI": (
        ("SAD", "Assistenza domiciliare"),
        ("TELESOCC", "Telesoccorso"),
        ("PASTI", "Pasti a domicilio"),
    ),
}
CSV_COLUMNS = (
    "ID_CARTELLA",
    "TIPO_DOCUMENTO",
    "CODICE_FISCALE",
    "COGNOME",
    "NOME",
    "ANNO_NASCITA",
    "SESSO",
    "COMUNE_RESIDENZA_ISTAT",
    "ID_NUCLEO",
    "AREA",
    "DATA_PRESA_IN_CARICO",
    "DATA_CHIUSURA",
    "COD_INTERVENTO",
    "DESCRIZIONE_INTERVENTO",
    "DATA_INIZIO",
    "DATA_FINE",
    "IMPORTO",
    "INVALIDITA",
    "NON_AUTOSUFFICIENTE",
    "DATA_VALUTAZIONE",
    "NOTE",
)


@dataclass
class Truth:
    """What the generator planted, for tests and for the leak scanner."""

    identifiers: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    invalid_records: dict[str, int] = field(default_factory=dict)  # consortium -> count
    omocodic_pairs: int = 0
    stp_people: int = 0

    def remember(self, p: Person) -> None:
        self.identifiers.add(p.identifier)
        self.names.update({p.surname, p.name})


def _it_date(d: dt.date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else ""


def _it_amount(cents: int) -> str:
    euros, c = divmod(cents, 100)
    return f"{euros:,}".replace(",", ".") + f",{c:02d}"


def _rand_date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randint(0, (end - start).days))


def _weighted_comuni(comuni: Iterable[Comune]) -> tuple[list[Comune], list[int]]:
    cs = list(comuni)
    return cs, [c.population for c in cs]


# ----------------------------------------------------------------------------
# CISS Borgomanero: CSV export reproducing the seed table
# ----------------------------------------------------------------------------


def write_ciss_csv(
    path: Path, rng: random.Random, factory: PeopleFactory, comuni: list[Comune], truth: Truth
) -> int:
    """Write the CartellaSociale export; returns the number of data rows."""
    cs, weights = _weighted_comuni(comuni)
    rows: list[dict[str, str]] = []
    cartella = iter(range(100_001, 10**7))
    for year, (m_nd, m_d, a_nd, a_d, anz, anz_nss, total, nuclei) in SEED_TABLE.items():
        changed = m_nd + m_d + a_nd + a_d + anz + anz_nss - total
        plan = (
            [("minori", False, "none")] * m_nd
            + [("minori", True, "none")] * m_d
            + [("adulti", False, "none")] * a_nd
            + [("adulti", True, "none")] * a_d
            + [("anziani", False, "none")] * (anz - changed)
            + [("anziani", False, "nss")] * (anz_nss - changed)
            + [("anziani", False, "becomes_nss")] * changed
        )
        rng.shuffle(plan)
        assert len(plan) == total
        ref = dt.date(year, 10, 31)
        households: list[str] = []
        people: list[Person] = []
        for i, (group, disabled, nss) in enumerate(plan):
            lo, hi = {"minori": (0, 17), "adulti": (18, 64), "anziani": (65, 98)}[group]
            birth_year = year - rng.randint(lo, hi)
            stp = group == "adulti" and not disabled and rng.random() < 0.03
            if i % 97 == 5 and people and people[-1].id_type == "CF" and not stp:
                # An omocodic "twin": same name codes, date and place, a different person.
                twin_of = people[-1]
                person = factory.omocodic_twin(twin_of)
                birth_year = twin_of.birth_year
                if year - birth_year < lo or year - birth_year > hi:
                    person = factory.person(year - rng.randint(lo, hi))
                else:
                    truth.omocodic_pairs += 1
            else:
                person = factory.person(birth_year, stp=stp)
            truth.stp_people += person.id_type == "STP"
            people.append(person)
            truth.remember(person)
            # Households: the first `nuclei` people found one each, the others join one.
            if len(households) < nuclei:
                households.append(f"N{year}{len(households):05d}")
                household = households[-1]
            else:
                household = rng.choice(households)
            comune = rng.choices(cs, weights)[0]
            area = rng.choice(VENDOR_AREAS["disabili" if disabled else group])
            opened = _rand_date(rng, dt.date(year, 1, 1), ref - dt.timedelta(days=1))
            closed = _rand_date(rng, opened, dt.date(year, 12, 31))
            base = {
                "ID_CARTELLA": str(next(cartella)),
                "TIPO_DOCUMENTO": person.id_type,
                "CODICE_FISCALE": person.identifier,
                "COGNOME": person.surname,
                "NOME": person.name,
                "ANNO_NASCITA": str(person.birth_year),
                "SESSO": person.sex,
                "COMUNE_RESIDENZA_ISTAT": comune.istat,
                "ID_NUCLEO": household,
                "AREA": area,
                "DATA_PRESA_IN_CARICO": _it_date(opened),
                "DATA_CHIUSURA": _it_date(closed),
                "INVALIDITA": "",
                "NON_AUTOSUFFICIENTE": "",
                "DATA_VALUTAZIONE": "",
                "NOTE": "",
            }
            before = _rand_date(rng, dt.date(year - 3, 1, 1), dt.date(year - 1, 12, 31))
            if disabled:
                base.update(INVALIDITA="S", DATA_VALUTAZIONE=_it_date(before))
            elif nss == "nss":
                base.update(NON_AUTOSUFFICIENTE="S", DATA_VALUTAZIONE=_it_date(before))
            elif nss == "becomes_nss":
                base.update(NON_AUTOSUFFICIENTE="N", DATA_VALUTAZIONE=_it_date(before))
            elif rng.random() < 0.2:
                base.update(
                    INVALIDITA="N", NON_AUTOSUFFICIENTE="N", DATA_VALUTAZIONE=_it_date(before)
                )
            if rng.random() < 0.02:
                base["NOTE"] = f"Colloquio con {person.name} {person.surname};\nrichiamare"
            n_services = 2 if nss == "becomes_nss" else rng.choice((1, 1, 1, 2))
            for k, (code, descr) in enumerate(rng.sample(VENDOR_SERVICES[area], n_services)):
                row = dict(
                    base,
                    COD_INTERVENTO=code,
                    DESCRIZIONE_INTERVENTO=descr,
                    DATA_INIZIO=_it_date(opened),
                    DATA_FINE=_it_date(closed),
                    IMPORTO=_it_amount(rng.randint(2_000, 180_000)) if code == "CONTR-EC" else "",
                )
                if k == 1 and nss == "becomes_nss":
                    # Assessed non self-sufficient during the year: counted in both groups.
                    row.update(
                        NON_AUTOSUFFICIENTE="S",
                        DATA_VALUTAZIONE=_it_date(
                            _rand_date(rng, dt.date(year, 2, 1), dt.date(year, 9, 30))
                        ),
                    )
                rows.append(row)
        rows.extend(_ciss_noise(year, rng, factory, cs, weights, cartella, truth))
    with path.open("w", encoding="cp1252", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, delimiter=";", lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _ciss_noise(
    year: int,
    rng: random.Random,
    factory: PeopleFactory,
    cs: list[Comune],
    weights: list[int],
    cartella: Iterable[int],
    truth: Truth,
) -> list[dict[str, str]]:
    """Rows that must not change the table: late cases, and bad records for the quarantine."""
    out = []
    ids = iter(cartella)
    for i in range(30):
        person = factory.person(year - rng.randint(20, 80))
        truth.remember(person)
        opened = _rand_date(rng, dt.date(year, 11, 2), dt.date(year, 12, 20))
        ident = person.identifier
        code, descr = "SAD", "Assistenza domiciliare"
        if i < 4:  # wrong check character: quarantined, never loaded
            ident = with_wrong_check_character(ident)
            truth.identifiers.add(ident)
        elif i < 6:  # a code the vendor mapping does not know: quarantined
            code, descr = "BONUS-X", "Bonus sperimentale comunale"
        out.append(
            {
                "ID_CARTELLA": str(next(ids)),
                "TIPO_DOCUMENTO": "CF",
                "CODICE_FISCALE": ident,
                "COGNOME": person.surname,
                "NOME": person.name,
                "ANNO_NASCITA": str(person.birth_year),
                "SESSO": person.sex,
                "COMUNE_RESIDENZA_ISTAT": rng.choices(cs, weights)[0].istat,
                "ID_NUCLEO": f"L{year}{i:04d}",
                "AREA": "ADULTI",
                "DATA_PRESA_IN_CARICO": _it_date(opened),
                "DATA_CHIUSURA": _it_date(_rand_date(rng, opened, dt.date(year, 12, 31))),
                "COD_INTERVENTO": code,
                "DESCRIZIONE_INTERVENTO": descr,
                "DATA_INIZIO": _it_date(opened),
                "DATA_FINE": "",
                "IMPORTO": "",
                "INVALIDITA": "",
                "NON_AUTOSUFFICIENTE": "",
                "DATA_VALUTAZIONE": "",
                "NOTE": "",
            }
        )
    truth.invalid_records["CISS-BORGO"] = truth.invalid_records.get("CISS-BORGO", 0) + 6
    return out


# ----------------------------------------------------------------------------
# SIUSS PS/PSA/SINA flows (XML) for the other two consortia
# ----------------------------------------------------------------------------

SIUSS_SERVICES = (
    ("A1.16", "Contributi economici per servizio trasporto e mobilità", "2"),
    ("A2.16", "Interventi di supporto per reperimento alloggi", "3"),
    ("A1.09", "Telesoccorso e teleassistenza", "2"),
    ("A1.02", "Contributi economici a integrazione del reddito familiare", "3"),
    ("A2.06", "Sostegno socio-educativo domiciliare per minori", "1"),
)


@dataclass(frozen=True)
class Prestazione:
    person: Person
    comune: Comune
    code: str
    description: str
    area: str
    start: dt.date
    end: dt.date | None
    protocol: str
    presa_carico: bool
    sina: tuple[str, str] | None  # (AttivitaVitaQuotidiana, InvCiv code or "")
    cancel: bool = False


def plan_siuss(
    consortium: Consortium,
    comuni: dict[str, Comune],
    rng: random.Random,
    factory: PeopleFactory,
    people: int,
    truth: Truth,
) -> list[Prestazione]:
    cs, weights = _weighted_comuni(comuni[n] for n in consortium.comuni)
    out: list[Prestazione] = []
    for i in range(people):
        age = rng.choice((rng.randint(0, 17), rng.randint(18, 64), rng.randint(65, 95)))
        start = _rand_date(rng, dt.date(2020, 1, 1), dt.date(2022, 12, 15))
        person = factory.person(start.year - age)
        truth.remember(person)
        comune = rng.choices(cs, weights)[0]
        for k in range(rng.choice((1, 1, 2))):
            code, descr, area = rng.choice(SIUSS_SERVICES)
            s = start + dt.timedelta(days=60 * k)
            sina = None
            if age >= 65 and rng.random() < 0.5:
                sina = (rng.choice("123"), rng.choice(("", "1", "2")))
            out.append(
                Prestazione(
                    person,
                    comune,
                    code,
                    descr,
                    area,
                    s,
                    s + dt.timedelta(days=rng.randint(30, 300)),
                    f"{consortium.code}-{i:05d}-{k}",
                    rng.random() < 0.8,
                    sina,
                )
            )
    # A few prestazioni inserted by mistake and cancelled later (TipoOperazione="C").
    for p in rng.sample(out, k=max(1, len(out) // 100)):
        out.append(Prestazione(**{**p.__dict__, "cancel": True}))
    # A few beneficiaries whose CF has a wrong check character.
    for i in range(3):
        p = rng.choice(out)
        bad = Person(
            p.person.surname,
            p.person.name,
            p.person.sex,
            p.person.birth,
            p.person.belfiore,
            with_wrong_check_character(p.person.identifier),
            "CF",
        )
        truth.identifiers.add(bad.identifier)
        out.append(
            Prestazione(**{**p.__dict__, "person": bad, "protocol": f"BAD-{i}", "cancel": False})
        )
    truth.invalid_records[consortium.code] = 3
    return out


def siuss_flow_xml(
    ente: str, ente_belfiore: str, flow_name: str, items: list[Prestazione], operator_cf: str
) -> bytes:
    """A PS/PSA/SINA flow as the SIUSS XSD describes it (valid against it)."""
    root = etree.Element(f"{{{NS}}}Flusso", nsmap={None: NS})
    ident = etree.SubElement(root, f"{{{NS}}}IdentificazioneFlusso", Nome=flow_name)
    etree.SubElement(
        ident,
        f"{{{NS}}}Ente",
        Codice=ente,
        Denominazione=ente,
        CFOperatore=operator_cf,
        Indirizzo=ente_belfiore,
    )
    by_person: dict[str, list[Prestazione]] = {}
    for it in items:
        by_person.setdefault(it.person.identifier, []).append(it)
    for cf, its in by_person.items():
        p = its[0].person
        b = etree.SubElement(root, f"{{{NS}}}Beneficiario", CodiceFiscale=cf)
        etree.SubElement(
            b,
            f"{{{NS}}}Anagrafica",
            Cognome=p.surname.upper(),
            Nome=p.name.upper(),
            AnnoNascita=str(p.birth_year),
            LuogoNascita=p.belfiore,
            Genere="2" if p.sex == "F" else "1",
            CodiceCittadinanza="380",
        )
        etree.SubElement(
            b,
            f"{{{NS}}}Indirizzo",
            CodiceComune=its[0].comune.istat,
            CodiceNazione="380",
            CodiceRegione="01",
        )
        for it in its:
            attrs = {
                "TipoOperazione": "C" if it.cancel else "I",
                "PresenzaProvaMezzi": "1",
                "CaratterePrestazione": "1",
                "CodicePrestazione": it.code,
                "DenominazionePrestazione": it.description,
                "ProtocolloDomanda": it.protocol,
                "DataInizioPrestazione": it.start.isoformat(),
                "PresaCarico": "1" if it.presa_carico else "2",
                "AreaUtenza": it.area,
                "ImportoMensile": "150.00",
            }
            if it.end:
                attrs["DataFinePrestazione"] = it.end.isoformat()
            ps = etree.SubElement(b, f"{{{NS}}}PrestazioniSociali", **attrs)
            if it.sina:
                avq, invciv = it.sina
                sina = etree.SubElement(
                    ps,
                    f"{{{NS}}}SINA",
                    Mobilita="2",
                    AttivitaVitaQuotidiana=avq,
                    DisturbiComportamentali="1",
                    AreaReddituale="2",
                    AreaSupporto="1",
                    FonteDerivazioneValutazione="1",
                    StrumentoValutazione="1",
                )
                if invciv:
                    inv = etree.SubElement(sina, f"{{{NS}}}InvaliditaCivile")
                    etree.SubElement(inv, f"{{{NS}}}InvCiv").text = invciv
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return xml


def write_siuss_inbox(
    inbox: Path,
    consortium: Consortium,
    items: list[Prestazione],
    comuni: dict[str, Comune],
    operator_cf: str,
) -> list[Path]:
    """One flow file per quarter of the start date; cancellations in a last file."""
    inbox.mkdir(parents=True, exist_ok=True)
    seat = comuni[consortium.comuni[0]].belfiore
    groups: dict[str, list[Prestazione]] = {}
    for it in items:
        key = "9999Z" if it.cancel else f"{it.start.year}Q{(it.start.month - 1) // 3 + 1}"
        groups.setdefault(key, []).append(it)
    paths = []
    for n, key in enumerate(sorted(groups), start=1):
        name = f"{seat}.PS.{key}.{n:07d}"
        p = inbox / f"{name}.xml"
        p.write_bytes(siuss_flow_xml(consortium.code, seat, name, groups[key], operator_cf))
        paths.append(p)
    return paths


def write_waas_flows(
    folder: Path,
    consortium: Consortium,
    items: list[Prestazione],
    comuni: dict[str, Comune],
    operator_cf: str,
) -> list[Path]:
    """One flow per prestazione (as in *cooperazione applicativa*), in delivery order."""
    folder.mkdir(parents=True, exist_ok=True)
    seat = comuni[consortium.comuni[0]].belfiore
    ordered = sorted(items, key=lambda it: (it.cancel, it.start))
    paths = []
    for n, it in enumerate(ordered, start=1):
        name = f"{seat}.PS.{it.start:%Y%m%d}.{n:07d}"
        p = folder / f"{n:06d}_{name}.xml"
        p.write_bytes(siuss_flow_xml(consortium.code, seat, name, [it], operator_cf))
        paths.append(p)
    return paths


def build_sources(directory: Path, *, seed: int = 2026) -> Truth:
    """Write every source of the demo district under ``directory``; deterministic for a seed."""
    rng = random.Random(seed)
    comuni = load_comuni()
    birthplaces = (*tuple(c.belfiore for c in comuni.values()), "H501", "F205", "L219")
    factory = PeopleFactory(rng, birthplaces)
    truth = Truth()
    operator = factory.person(1975)
    truth.remember(operator)
    ciss, cbv, cot = CONSORTIA
    directory.mkdir(parents=True, exist_ok=True)
    write_ciss_csv(
        directory / "ciss-borgomanero.csv", rng, factory, [comuni[n] for n in ciss.comuni], truth
    )
    write_siuss_inbox(
        directory / "cbv-inbox",
        cbv,
        plan_siuss(cbv, comuni, rng, factory, 700, truth),
        comuni,
        operator.identifier,
    )
    write_waas_flows(
        directory / "cot-waas",
        cot,
        plan_siuss(cot, comuni, rng, factory, 250, truth),
        comuni,
        operator.identifier,
    )
    return truth
