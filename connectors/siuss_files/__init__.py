"""``siuss_files``: SIUSS PS/PSA/SINA and SINBA XML files dropped in an inbox folder.

Every cartella sociale already produces these flows for INPS, so reading them
bridges Raccordo to any existing software with no work from its vendor.
Each file is a unit: validated against the official XSD before anything is
read from it, skipped when unchanged (SHA-256 in the state), read again and
its effects replaced when it changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from connectors.siuss.flows import STREAMS, iter_flow
from hub import hookimpl
from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    JSONState,
    ReadItem,
    SourceError,
    StateCheckpoint,
    Stream,
    WorkspacePath,
)
from hub.sdk.inbox import FileInbox

RACCORDO_HOOK_API = 1


class SiussFilesConfig(ConnectorConfig):
    #: Folder where the cartella software (or a person) drops the flow files.
    inbox: WorkspacePath
    pattern: str = "*.xml"
    max_file_mb: Annotated[int, Field(ge=1, le=4096)] = 512
    flows: tuple[Literal["ps", "sinba"], ...] = ("ps", "sinba")


class SiussFilesConnector(Connector):
    name = "siuss_files"
    summary = "SIUSS flows (PS/PSA/SINA, SINBA) as XML files in an inbox folder"
    config_class = SiussFilesConfig
    default_mapping: ClassVar[dict[str, str]] = {"ps": "siuss_ps.toml", "sinba": "siuss_sinba.toml"}
    config: SiussFilesConfig

    def _inbox(self) -> FileInbox:
        return FileInbox(self.config.pattern, folder=self.config.inbox)

    def _files(self) -> list[Path]:
        return self._inbox().files()

    def check(self) -> CheckResult:
        inbox = self.config.inbox
        if not inbox.is_dir():
            return CheckResult(False, f"the inbox folder {inbox} does not exist")
        try:
            files = self._files()
        except OSError as e:
            return CheckResult(False, f"cannot list {inbox}: {e.strerror}")
        return CheckResult(True, f"{len(files)} file(s) matching {self.config.pattern} in {inbox}")

    def streams(self) -> tuple[Stream, ...]:
        return tuple(STREAMS[f] for f in self.config.flows)

    def read(self, stream: str, state: JSONState) -> Iterator[ReadItem]:
        self.stream(stream)
        done: dict[str, str] = dict(state.get("files", {}))
        if not self.config.inbox.is_dir():
            yield SourceError(
                f"the inbox folder {self.config.inbox} does not exist",
                str(self.config.inbox),
                rule="inbox",
            )
            yield StateCheckpoint({"files": done})
            return
        max_bytes = self.config.max_file_mb * 1024 * 1024
        yield from self._inbox().read(
            state,
            lambda path: iter_flow(
                path,
                stream=stream,
                unit=path.name,
                location_prefix=path.name,
                max_bytes=max_bytes,
            ),
        )


@hookimpl
def raccordo_register_connectors(register: Callable[[type[Connector]], None]) -> None:
    register(SiussFilesConnector)
