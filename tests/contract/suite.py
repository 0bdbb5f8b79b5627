"""The contract suite now ships in the package as :mod:`hub.sdk.testing` (so a connector in
its own repository runs it in one line); this module keeps the old import path working."""

from hub.sdk.testing import (
    FORBIDDEN_IMPORTS,
    MIN_LEAK_LEN,
    RESUME_POINTS,
    SECRET_WORDS,
    connector_contract_tests,
)

__all__ = [
    "FORBIDDEN_IMPORTS",
    "MIN_LEAK_LEN",
    "RESUME_POINTS",
    "SECRET_WORDS",
    "connector_contract_tests",
]
