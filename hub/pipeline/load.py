"""Stage 4, ``load``: one batch into the registry, with its quarantine, counters and cursor.

Everything of a batch is written in the sync's :class:`hub.registry.LoadTransaction`
(:meth:`hub.registry.Registry.commit_batch`): records, cancellations, quarantine
entries, run counters and the connector's cursor are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.connector import SourceError
from hub.pipeline.context import RunContext
from hub.pipeline.transform import Transformed
from hub.registry import LoadTransaction, QuarantineEntry, Registry


def source_quarantine(errors: Sequence[SourceError]) -> list[QuarantineEntry]:
    """Units the connector could not read at all (no record, so no payload)."""
    return [
        QuarantineEntry(
            kind="source", location=e.location, rule=e.rule, reason=e.reason, payload={}
        )
        for e in errors
    ]


def load(
    registry: Registry,
    tx: LoadTransaction,
    ctx: RunContext,
    org: str,
    result: Transformed,
    *,
    errors: Sequence[SourceError],
    units: Sequence[str],
    state: dict[str, Any] | None,
) -> None:
    registry.commit_batch(
        run_id=ctx.run_id,
        connector=ctx.connector,
        stream=ctx.stream.name,
        org=org,
        changes=list(result.changes.values()),
        quarantine=source_quarantine(errors) + result.quarantine,
        counts=result.counts,
        state=state,
        retention=ctx.retention,
        unchanged=result.unchanged,
        completed_units=list(units),
        tx=tx,
    )
