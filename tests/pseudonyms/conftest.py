"""The end-to-end workspace fixture (SQLite and PostgreSQL) for the pseudonym tests."""

from tests.e2e.conftest import make_workspace

__all__ = ["make_workspace"]
