"""Indicators computed from the registry (district planning questions)."""
