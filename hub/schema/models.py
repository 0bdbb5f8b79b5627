"""Pydantic v2 models of the common schema (BLUEPRINT §6).

Every model is strict, forbids unknown fields and bounds every string, so a
mapping mistake surfaces as a validation error with a location instead of a
silently stored value.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: A pseudonym as produced by :class:`hub.pseudonyms.Pseudonymiser`.
Pseudonym = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{8,80}$")]
#: Code of an organisation (ente gestore, ETS, district) inside this hub.
OrgCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
#: Six-digit ISTAT municipality code.
ComuneIstat = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
#: SIUSS prestazione code (e.g. ``A1.16``) or a local code.
ServiceCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,20}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Year = Annotated[int, Field(ge=1890, le=2100)]

# Enums accept their string value (mapping files and JSON carry codes as text);
# everything else is strict: no "1980" for 1980, no "2020-01-01" for a date.
SexCode = Annotated["Sex", Field(strict=False)]
AreaCode = Annotated["Area", Field(strict=False)]
NeedCode = Annotated["Need", Field(strict=False)]
ServiceGivenCode = Annotated["ServiceGiven", Field(strict=False)]
KindCode = Annotated["OrganisationKind", Field(strict=False)]

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=False)


class Sex(StrEnum):
    F = "F"
    M = "M"


class Area(StrEnum):
    """ISTAT *aree di utenza* of the social-services survey."""

    FAM = "FAM"  # famiglia e minori
    DIS = "DIS"  # disabili
    ADD = "ADD"  # dipendenze
    ELD = "ELD"  # anziani
    IMMNOM = "IMMNOM"  # immigrati e nomadi
    POV = "POV"  # povertà, disagio adulti, senza dimora
    MULBEN = "MULBEN"  # multiutenza


class OrganisationKind(StrEnum):
    ENTE_GESTORE = "ente_gestore"
    ETS = "ets"
    DISTRICT = "district"


class Need(StrEnum):
    """Closed list of needs a Third Sector operator can signal."""

    ECONOMIC = "economic"
    HOUSING = "housing"
    WORK = "work"
    FOOD = "food"
    HEALTH = "health"
    LONELINESS = "loneliness"
    FAMILY = "family"
    LEGAL = "legal"
    OTHER = "other"


class ServiceGiven(StrEnum):
    """Closed list of services a Third Sector entity gives."""

    FOOD_PARCEL = "food_parcel"
    CLOTHING = "clothing"
    LISTENING = "listening"
    HOUSING_SUPPORT = "housing_support"
    JOB_ORIENTATION = "job_orientation"
    LEGAL_HELP = "legal_help"
    EDUCATIONAL = "educational"
    GOODS = "goods"
    TRANSPORT = "transport"
    OTHER = "other"


class Provenance(BaseModel):
    """Where a record came from. The source key is stored only keyed-hashed."""

    model_config = STRICT

    connector: OrgCode
    run_id: Annotated[int, Field(ge=1)]
    mapping: Annotated[str, StringConstraints(max_length=80)]
    mapping_version: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    source_key_hash: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{16,100}$")]


class Record(BaseModel):
    """Base of the registry records: each belongs to the organisation that supplied it."""

    model_config = STRICT
    #: Name used in mapping files (``model = "subject"``) and as registry table stem.
    kind: ClassVar[str] = ""

    org: OrgCode


class Subject(Record):
    """A person served (*utente*), as known to one organisation."""

    kind: ClassVar[str] = "subject"

    subject: Pseudonym
    household: Pseudonym | None = None
    birth_year: Year | None = None
    sex: SexCode | None = None
    residence_comune_istat: ComuneIstat | None = None
    #: ISO 3166-1 numeric country code.
    citizenship: Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")] | None = None


class Assessment(Record):
    """A dated assessment of disability and/or non-self-sufficiency.

    Status holds from ``assessed_on`` until the next assessment of the same
    subject (or ``valid_until``), so a person whose status changes during a
    year belongs to each target group they were in during that year.
    """

    kind: ClassVar[str] = "assessment"

    subject: Pseudonym
    assessed_on: dt.date
    valid_until: dt.date | None = None
    disability: bool | None = None
    non_self_sufficient: bool | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Assessment:
        if self.valid_until is not None and self.valid_until < self.assessed_on:
            raise ValueError("valid_until is before assessed_on")
        if self.disability is None and self.non_self_sufficient is None:
            raise ValueError("an assessment must state disability or non_self_sufficient")
        return self


class CaseEpisode(Record):
    """A *presa in carico*: the social service takes a person in charge."""

    kind: ClassVar[str] = "case_episode"

    subject: Pseudonym
    area: AreaCode
    opened_on: dt.date
    closed_on: dt.date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> CaseEpisode:
        if self.closed_on is not None and self.closed_on < self.opened_on:
            raise ValueError("closed_on is before opened_on")
        return self


Amount = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]


class Intervention(Record):
    """A *prestazione* / *intervento* delivered to a person."""

    kind: ClassVar[str] = "intervention"

    subject: Pseudonym
    service_code: ServiceCode
    area: AreaCode
    started_on: dt.date
    ended_on: dt.date | None = None
    amount: Amount | None = None
    amount_co_paid: Amount | None = None
    comune_istat: ComuneIstat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Intervention:
        if self.ended_on is not None and self.ended_on < self.started_on:
            raise ValueError("ended_on is before started_on")
        return self


class NeedSignal(Record):
    """A Third Sector entry: needs seen and services given to someone.

    ``subject`` is ``None`` for anonymous contacts, which still count.
    """

    kind: ClassVar[str] = "need_signal"

    subject: Pseudonym | None = None
    needs: Annotated[tuple[NeedCode, ...], Field(min_length=1, max_length=len(Need))]
    services_given: Annotated[
        tuple[ServiceGivenCode, ...], Field(max_length=len(ServiceGiven))
    ] = ()
    comune_istat: ComuneIstat
    on: dt.date
    referred_by_social_services: bool = False
    birth_year: Year | None = None
    sex: SexCode | None = None


class Organisation(BaseModel):
    model_config = STRICT

    code: OrgCode
    name: ShortText
    kind: KindCode
    district: OrgCode | None = None
    #: Codice fiscale *of the organisation* (a public registry datum, not personal).
    tax_code: Annotated[str, StringConstraints(pattern=r"^[0-9]{11}$")] | None = None


class District(BaseModel):
    model_config = STRICT

    code: OrgCode
    name: ShortText
    region: Literal["Piemonte"] | ShortText = "Piemonte"
    comuni_istat: tuple[ComuneIstat, ...] = ()


MODELS: dict[str, type[Record]] = {
    m.kind: m for m in (Subject, Assessment, CaseEpisode, Intervention, NeedSignal)
}


def model_for(kind: str) -> type[Record]:
    """The record model named ``kind`` in mapping files; KeyError names the valid ones."""
    try:
        return MODELS[kind]
    except KeyError:
        raise KeyError(f"unknown model {kind!r}; expected one of {', '.join(MODELS)}") from None


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every model, as published in ``docs/schema/``."""
    out: dict[str, Any] = {}
    models: tuple[type[BaseModel], ...] = (*MODELS.values(), Organisation, District, Provenance)
    for model in models:
        out[model.__name__] = model.model_json_schema(mode="validation")
    return out
