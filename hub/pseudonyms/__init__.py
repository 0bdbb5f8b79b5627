"""Pseudonymisation: typed identifiers, keyed pseudonyms, the keyring.

The only component that ever sees a clear identifier. See
``docs/pseudonymisation.md`` for the scheme.
"""

from hub.pseudonyms.identifiers import (
    Identifier,
    IdentifierType,
    InvalidIdentifier,
    cf_birth_year_and_sex,
    parse_identifier,
)
from hub.pseudonyms.keyring import KeyMaterial, Keyring, KeyringStatus, KeySource
from hub.pseudonyms.pseudonymiser import (
    Pseudonymiser,
    is_v2_text,
    open_pseudonymiser,
    parse_pseudonym_text,
    pseudonym_text,
)

__all__ = [
    "Identifier",
    "IdentifierType",
    "InvalidIdentifier",
    "KeyMaterial",
    "KeySource",
    "Keyring",
    "KeyringStatus",
    "Pseudonymiser",
    "cf_birth_year_and_sex",
    "is_v2_text",
    "open_pseudonymiser",
    "parse_identifier",
    "parse_pseudonym_text",
    "pseudonym_text",
]
