"""Raccordo: a plugin-based integration hub for Italian social services."""

from hub.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
