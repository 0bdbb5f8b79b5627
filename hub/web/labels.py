"""Labels of the closed lists and the CSV columns, as message ids (translated by the catalogue)."""

from __future__ import annotations

from hub.schema.models import Need, ServiceGiven

NEED_LABELS = {
    Need.ECONOMIC: "Economic",
    Need.HOUSING: "Housing",
    Need.WORK: "Work",
    Need.FOOD: "Food",
    Need.HEALTH: "Health",
    Need.LONELINESS: "Loneliness, relations",
    Need.FAMILY: "Family, parenting",
    Need.LEGAL: "Legal, bureaucratic",
    Need.OTHER: "Other",
}
SERVICE_LABELS = {
    ServiceGiven.FOOD_PARCEL: "Food parcel",
    ServiceGiven.CLOTHING: "Clothing",
    ServiceGiven.LISTENING: "Listening, orientation",
    ServiceGiven.HOUSING_SUPPORT: "Housing support",
    ServiceGiven.JOB_ORIENTATION: "Job orientation",
    ServiceGiven.LEGAL_HELP: "Legal, bureaucratic help",
    ServiceGiven.EDUCATIONAL: "Educational, school support",
    ServiceGiven.GOODS: "Goods donation",
    ServiceGiven.TRANSPORT: "Transport",
    ServiceGiven.OTHER: "Other",
}
ROLE_LABELS = {"admin": "Administrator", "ets": "Third Sector operator", "analyst": "Analyst"}
ORG_KIND_LABELS = {
    "ets": "Third Sector organisation",
    "ente_gestore": "Consortium (ente gestore)",
    "district": "District",
}
#: Columns of the upload file, by their internal name (also accepted as headers).
CSV_COLUMNS = (
    "tipo_identificativo",
    "identificativo",
    "comune_istat",
    "bisogni",
    "servizi",
    "data",
    "inviato_dai_servizi",
    "anno_nascita",
    "sesso",
)
