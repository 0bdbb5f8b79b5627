"""``raccordo connectors list``: every plugin, including the ones that failed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hub.plugins import get_plugins

STYLE = {"loaded": "green", "failed": "red", "incompatible": "yellow", "disabled": "dim"}


def list_connectors(console: Console) -> int:
    """Print the plugin table; exit code 0 even when a plugin failed (it is reported)."""
    plugins = get_plugins().plugins()
    table = Table(title="Connector plugins (entry-point group raccordo.plugins)")
    for col in ("plugin", "status", "connector types", "distribution", "error"):
        table.add_column(col, overflow="fold")
    for p in plugins:
        table.add_row(
            p.name,
            f"[{STYLE[p.status]}]{p.status}[/]",
            ", ".join(p.connectors),
            f"{p.distribution} {p.version}",
            p.error or "",
        )
    console.print(table)
    connectors = get_plugins().connectors()
    if connectors:
        console.print("Connector types:")
        for name, cls in sorted(connectors.items()):
            console.print(f"  [bold]{name}[/bold]: {cls.summary}")
    bad = [p for p in plugins if p.status in ("failed", "incompatible")]
    if bad:
        console.print(f"{len(bad)} plugin(s) not loaded: see the error column.")
    return 0
