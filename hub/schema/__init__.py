"""Common schema v1: the minimal records every source is mapped to.

Minimal by construction: a field exists only if an indicator or a legal flow
needs it. No names, no birthplace, no full birth date, and never a clear
identifier: people appear only as pseudonyms (see :mod:`hub.pseudonyms`).
"""

from hub.schema.models import (
    MODELS,
    Area,
    Assessment,
    CaseEpisode,
    District,
    Intervention,
    Need,
    NeedSignal,
    Organisation,
    OrganisationKind,
    Provenance,
    Record,
    ServiceGiven,
    Sex,
    Subject,
    model_for,
)

__all__ = [
    "MODELS",
    "Area",
    "Assessment",
    "CaseEpisode",
    "District",
    "Intervention",
    "Need",
    "NeedSignal",
    "Organisation",
    "OrganisationKind",
    "Provenance",
    "Record",
    "ServiceGiven",
    "Sex",
    "Subject",
    "model_for",
]
