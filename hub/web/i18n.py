"""Translations of the web interface (gettext catalogues under ``locale/``).

Message ids are English; the catalogue ``locale/it/LC_MESSAGES/messages.po``
holds the Italian texts operators see. Catalogues are compiled in memory at
start-up with Babel, so translators edit only the ``.po`` file.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT_LANGUAGE = "it"


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


@cache
def translations(language: str = DEFAULT_LANGUAGE) -> NullTranslations:
    path = catalogue_path(language)
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as f:
        catalog = read_po(f, locale=language)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


def gettext(message: str, language: str = DEFAULT_LANGUAGE) -> str:
    return translations(language).gettext(message)


def ngettext(singular: str, plural: str, n: int, language: str = DEFAULT_LANGUAGE) -> str:
    return translations(language).ngettext(singular, plural, n)
