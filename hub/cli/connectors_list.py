"""``raccordo connectors list``: every plugin, including the ones that did not load.

IT staff run it when a connector type is "not installed": the table says
which plugin failed and why, in one line, without a traceback.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.plugins import GROUP, get_plugins

STYLE = {"loaded": "green", "failed": "red", "incompatible": "yellow", "disabled": "dim"}


def list_connectors(console: Console) -> int:
    """Print the plugin table and the connector types; 0 even when a plugin failed
    (a broken plugin is reported, it is not an error of this command)."""
    plugins = get_plugins().plugins()
    table = Table(title=f"Connector plugins (entry-point group {GROUP})")
    for col in ("plugin", "status", "connector types", "module", "distribution", "error"):
        table.add_column(col, overflow="fold")
    for p in plugins:
        table.add_row(
            escape(p.name),
            f"[{STYLE[p.status]}]{p.status}[/]",
            escape(", ".join(p.connectors)),
            escape(p.module),
            escape(f"{p.distribution} {p.version}".strip()),
            escape(p.error or ""),
        )
    console.print(table)
    connectors = get_plugins().connectors()
    if connectors:
        console.print("Connector types:")
        for name, cls in sorted(connectors.items()):
            console.print(f"  [bold]{escape(name)}[/bold]: {escape(cls.summary)}")
    else:
        console.print("No connector type is available.")
    bad = [p for p in plugins if p.status in ("failed", "incompatible")]
    if bad:
        console.print(f"{len(bad)} plugin(s) not loaded: see the error column.")
    return 0
