"""The progress line of a sync (direct or pushed), on standard error, gone when it ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # the CLI imports the pipeline only when a command needs it
    from hub.pipeline import RunProgress


@contextmanager
def run_progress(
    console: Console, label: str, *, quiet: bool, target: str = ""
) -> Iterator[Callable[[RunProgress], None]]:
    """A callback for :class:`RunProgress` updates that redraws one line;
    ``target`` names where the records go (e.g. ``" → hub"`` in push mode)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task(label, total=None)

        def show(p: RunProgress) -> None:
            bar.update(
                task,
                description=(
                    f"{p.connector}/{p.stream}{target}: read {p.read:,} · loaded {p.loaded:,} · "
                    f"unchanged {p.unchanged:,} · quarantined {p.quarantined:,}"
                    + (f" · duplicates {p.duplicates:,}" if p.duplicates else "")
                ),
            )

        yield show
