"""Every text of the web interface has an Italian translation in the catalogue."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.pofile import read_po

from hub.web import app as web_app
from hub.web import errors, intake, labels, uploads
from hub.web.i18n import catalogue_path, gettext, ngettext
from hub.web.routers import admin

WEB = Path(web_app.__file__).resolve().parent
CALL = re.compile(r"""(?:\b_|\bgettext)\(\s*(["'])(.*?)(?<!\\)\1""", re.S)


def used_messages() -> set[str]:
    found: set[str] = set()
    for path in [*WEB.rglob("*.html"), *WEB.rglob("*.py")]:
        found |= {m.group(2) for m in CALL.finditer(path.read_text(encoding="utf-8"))}
    found |= set(web_app.NEED_LABELS.values()) | set(web_app.SERVICE_LABELS.values())
    found |= set(labels.ROLE_LABELS.values()) | set(labels.ORG_KIND_LABELS.values())
    found |= set(uploads.COLUMN_LABELS.values())
    found |= {message for _, message in admin.MESSAGES}
    found |= set(errors.TITLES.values()) | set(errors.MESSAGES.values())
    found |= set(intake.IDENTIFIER_MESSAGES.values())
    found |= {intake.COMUNE_MESSAGE, intake.ENTRY_ID_MESSAGE}
    return found


def test_every_message_has_an_italian_translation() -> None:
    with catalogue_path("it").open("rb") as f:
        catalog = read_po(f, locale="it")
    translated = {m.id: m.string for m in catalog if m.id and m.string}
    used = used_messages()
    assert len(used) > 100
    missing = sorted(used - set(translated))
    assert not missing, f"add to {catalogue_path('it')}: {missing}"


def test_plurals_are_italian() -> None:
    assert ngettext("%(num)s row saved", "%(num)s rows saved", 1) % {"num": 1} == "1 riga salvata"
    assert ngettext("%(num)s row saved", "%(num)s rows saved", 2) % {"num": 2} == "2 righe salvate"
    assert ngettext("%(num)s entry", "%(num)s entries", 1) % {"num": 1} == "1 scheda"


def test_translations_are_applied() -> None:
    assert gettext("Sign in") == "Accedi"
    assert gettext(intake.IDENTIFIER_MESSAGES["cf_check"]).startswith(
        "Il codice fiscale non è corretto"
    )
