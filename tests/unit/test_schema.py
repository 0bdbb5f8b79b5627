"""The common schema refuses what it should and publishes its JSON Schema."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from hub.schema import Assessment, CaseEpisode, Intervention, NeedSignal, Subject, model_for
from hub.schema.publish import DEFAULT_DIR, render

P = "1.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_models_are_strict_and_closed() -> None:
    with pytest.raises(ValidationError, match="valid integer"):
        Subject(org="X", subject=P, birth_year="1980")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Subject.model_validate({"org": "X", "subject": P, "name": "Mario"})
    with pytest.raises(ValidationError, match="valid date"):
        CaseEpisode.model_validate(
            {"org": "X", "subject": P, "area": "FAM", "opened_on": "2020-01-01"}
        )


def test_strings_are_bounded_and_shaped() -> None:
    with pytest.raises(ValidationError):
        Subject(org="X", subject="RSSMRA80A01H501U with spaces")
    with pytest.raises(ValidationError):
        Subject(org="X" * 41, subject=P)
    with pytest.raises(ValidationError):
        Intervention(
            org="X",
            subject=P,
            service_code="A" * 21,
            area="FAM",  # type: ignore[arg-type]
            started_on=dt.date(2020, 1, 1),
        )
    with pytest.raises(ValidationError):
        Subject(org="X", subject=P, residence_comune_istat="3024")


def test_dates_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="closed_on is before opened_on"):
        CaseEpisode(
            org="X",
            subject=P,
            area="FAM",  # type: ignore[arg-type]
            opened_on=dt.date(2021, 1, 1),
            closed_on=dt.date(2020, 1, 1),
        )
    with pytest.raises(ValidationError, match="assessment must state"):
        Assessment(org="X", subject=P, assessed_on=dt.date(2021, 1, 1))


def test_need_signal_allows_anonymous_contacts_but_needs_a_need() -> None:
    ok = NeedSignal.model_validate(
        {"org": "ETS1", "needs": ("food",), "comune_istat": "003024", "on": dt.date(2024, 5, 1)}
    )
    assert ok.subject is None
    with pytest.raises(ValidationError):
        NeedSignal.model_validate(
            {"org": "ETS1", "needs": (), "comune_istat": "003024", "on": dt.date(2024, 5, 1)}
        )
    with pytest.raises(ValidationError):
        NeedSignal.model_validate(
            {
                "org": "ETS1",
                "needs": ("bingo",),
                "comune_istat": "003024",
                "on": dt.date(2024, 5, 1),
            }
        )


def test_unknown_model_names_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="case_episode"):
        model_for("presa_in_carico")


def test_published_json_schema_is_up_to_date() -> None:
    for name, text in render().items():
        path = DEFAULT_DIR / name
        assert path.is_file(), f"{path} missing: run python -m hub.schema.publish"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale: run python -m hub.schema.publish"
        )
