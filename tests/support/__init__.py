"""Test utilities: a throwaway PostgreSQL server and the leak scanner."""
