"""Shared test helpers: the throwaway PostgreSQL server, the leak scanner, workspaces, codes."""
