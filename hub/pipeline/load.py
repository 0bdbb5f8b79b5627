"""Stage 4, ``load``: one batch into the registry, with its quarantine, counters and cursor.

Everything of a batch is written in the sync's :class:`hub.registry.LoadTransaction`
(:meth:`hub.registry.Registry.commit_batch`): records, cancellations, quarantine
entries, run counters and the connector's cursor are committed together or not at all;
the ids of the source records found unchanged are listed for the run (``run_unchanged``),
their rows are not rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hub.connector import SourceError
from hub.pipeline.context import RunContext
from hub.pipeline.transform import Transformed
from hub.registry import LoadTransaction, PartChanges, QuarantineEntry, Registry


def source_quarantine(errors: Sequence[SourceError]) -> list[QuarantineEntry]:
    """What the connector refused by itself: whole units it could not read (``scope="unit"``)
    and single records it found broken (``scope="record"``); no payload either way."""
    return [
        QuarantineEntry(
            kind="source" if e.scope == "unit" else "record",
            location=e.location,
            rule=e.rule,
            reason=e.reason,
            payload={},
            field=e.field,
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
    unchanged: Sequence[int],
    errors: Sequence[SourceError],
    units: Sequence[str],
    state: dict[str, Any] | None,
    parts: PartChanges | None = None,
    made_pseudonyms: Mapping[str, tuple[int, bytes]] | None = None,
) -> None:
    """``made_pseudonyms``: those the pseudonymise stage made for the batch (stored without
    decoding their text again)."""
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
        unchanged=unchanged,
        completed_units=list(units),
        tx=tx,
        parts=parts,
        made_pseudonyms=made_pseudonyms,
        columns=result.columns,
    )
    registry.add_warnings(
        run_id=ctx.run_id,
        connector=ctx.connector,
        stream=ctx.stream.name,
        org=org,
        warnings=result.warnings,
        retention=ctx.retention,
        tx=tx,
    )
