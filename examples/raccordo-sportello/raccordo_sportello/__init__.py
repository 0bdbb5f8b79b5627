"""``sportello``: a help desk's daily JSON Lines files (an example built on ``hub.sdk``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from hub.sdk import (
    HOOK_API,
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldRole,
    FieldSpec,
    FileInbox,
    IdentifierType,
    JSONState,
    RawRecord,
    ReadItem,
    SourceError,
    Stream,
    UnitComplete,
    WorkspacePath,
    hookimpl,
)

RACCORDO_HOOK_API = HOOK_API

STREAM = Stream(
    "contacts",
    fields=(
        FieldSpec("id", description="the desk's own contact number"),
        FieldSpec("cf", FieldRole.IDENTIFIER, "codice fiscale", IdentifierType.CF, optional=True),
        FieldSpec("name", FieldRole.PERSONAL, "the person's name: dropped at once"),
        FieldSpec("day", description="date of the contact, YYYY-MM-DD"),
        FieldSpec("need", description="the desk's need code"),
    ),
    source_key=("id",),
    description="One record per contact at the desk",
)


class SportelloConfig(ConnectorConfig):
    #: The folder the desk's software writes its daily files to.
    inbox: WorkspacePath
    pattern: str = "*.jsonl"


class SportelloConnector(Connector):
    name = "sportello"
    summary = "A help desk's daily JSON Lines files (example connector on hub.sdk)"
    config_class = SportelloConfig
    config: SportelloConfig

    def _inbox(self) -> FileInbox:
        return FileInbox(self.config.pattern, folder=self.config.inbox)

    def check(self) -> CheckResult:
        if not self.config.inbox.is_dir():
            return CheckResult(False, f"the folder {self.config.inbox} does not exist")
        return CheckResult(True, f"{len(self._inbox().files())} file(s) in {self.config.inbox}")

    def streams(self) -> tuple[Stream, ...]:
        return (STREAM,)

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        yield from self._inbox().read(state, self._read_file)

    def _read_file(self, path: Path) -> Iterator[ReadItem]:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path.name} line {line_no}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    # Never the line itself: it may hold a codice fiscale.
                    yield SourceError("not a JSON object", where, rule="jsonl", scope="record")
                    continue
                if not isinstance(obj, dict) or not obj.get("id"):
                    yield SourceError(
                        "a contact without its id", where, rule="jsonl", field="id", scope="record"
                    )
                    continue
                data = {f.name: str(obj.get(f.name) or "") for f in STREAM.fields}
                yield RawRecord("contacts", data, location=where, unit=path.name)
        yield UnitComplete(path.name)


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SportelloConnector)
