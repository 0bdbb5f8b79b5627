"""``hub.sdk``: everything a connector needs, in one import — for built-in connectors and
for connectors that live in their own repository.

* the contract (BLUEPRINT §9): :class:`Connector`, :class:`ConnectorConfig`,
  :class:`Stream`, :class:`FieldSpec`, :class:`FieldRole`, the items a ``read``
  yields (:class:`RawRecord`, :class:`StateCheckpoint`, :class:`SourceError`,
  :class:`UnitComplete`, :class:`RecordPart`), :data:`WorkspacePath` / :data:`WorkspaceGlob`,
  :class:`IdentifierType`, :data:`hookimpl` to register, and
  :class:`SourceUnavailable` for a source that stops answering;
* the hardened parsers of untrusted input: CSV (:func:`open_csv`,
  :func:`iter_rows`), spreadsheets (:func:`open_spreadsheet`), XML
  (:mod:`hub.inputs.xml`), each raising an :class:`InputError` for people;
* :class:`FileInbox`: files as units with the content-hash cursor;
* :func:`in_parts`: a unit's rows as :class:`RecordPart` s, so that a changed file is
  re-read at the cost of what changed in it (:func:`expand_parts` undoes it);
* :class:`IdentifierColumn` and :func:`column_fields`: the privacy role of each column of a
  tabular source, as ``raccordo.toml`` declares it;
* :class:`ArrowBatchBuilder`: raw records into Arrow record batches.

The contract suite is :func:`hub.sdk.testing.connector_contract_tests` (needs pytest).
See docs/connectors.md and the example package in ``examples/``.
"""

from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldRole,
    FieldSpec,
    JSONState,
    RawRecord,
    ReadItem,
    RecordPart,
    SourceError,
    StateCheckpoint,
    Stream,
    UnitComplete,
    WorkspaceGlob,
    WorkspacePath,
    expand_parts,
)
from hub.errors import SourceUnavailable
from hub.hookspecs import HOOK_API_VERSION, hookimpl
from hub.inputs import InputChanged, InputError
from hub.inputs import xml as xml
from hub.inputs.csv import CSVFile, CSVInputError, CSVRow, iter_rows, open_csv
from hub.inputs.parts import in_parts
from hub.inputs.spreadsheet import SheetFile, SpreadsheetInputError, open_spreadsheet, sniff_kind
from hub.pseudonyms import IdentifierType
from hub.sdk.arrow import ArrowBatchBuilder
from hub.sdk.columns import IdentifierColumn, column_fields
from hub.sdk.inbox import FileInbox, file_digest

#: The hook API version a plugin module declares (``RACCORDO_HOOK_API = hub.sdk.HOOK_API``).
HOOK_API = HOOK_API_VERSION

__all__ = [
    "HOOK_API",
    "ArrowBatchBuilder",
    "CSVFile",
    "CSVInputError",
    "CSVRow",
    "CheckResult",
    "Connector",
    "ConnectorConfig",
    "FieldRole",
    "FieldSpec",
    "FileInbox",
    "IdentifierColumn",
    "IdentifierType",
    "InputChanged",
    "InputError",
    "JSONState",
    "RawRecord",
    "ReadItem",
    "RecordPart",
    "SheetFile",
    "SourceError",
    "SourceUnavailable",
    "SpreadsheetInputError",
    "StateCheckpoint",
    "Stream",
    "UnitComplete",
    "WorkspaceGlob",
    "WorkspacePath",
    "column_fields",
    "expand_parts",
    "file_digest",
    "hookimpl",
    "in_parts",
    "iter_rows",
    "open_csv",
    "open_spreadsheet",
    "sniff_kind",
    "xml",
]
