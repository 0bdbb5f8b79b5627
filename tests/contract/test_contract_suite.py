"""The contract suite passes a well-behaved test connector and catches misbehaving ones.

Each bad connector breaks one rule; running the generated class's methods
directly shows the suite notices, with a message naming the rule.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ConfigDict

from hub.connector import (
    CheckResult,
    Connector,
    ConnectorConfig,
    FieldRole,
    FieldSpec,
    RawRecord,
    ReadItem,
    StateCheckpoint,
    Stream,
)
from hub.pseudonyms import IdentifierType
from tests.contract.suite import connector_contract_tests

CF = "RSSMRA80A01H501U"  # fictitious (BLUEPRINT §10)
STREAM = Stream(
    "people",
    (FieldSpec("id"), FieldSpec("cf", FieldRole.IDENTIFIER, identifier_type=IdentifierType.CF)),
    source_key=("id",),
)


class ListConfig(ConnectorConfig):
    size: int = 20


class GoodConnector(Connector):
    """Reads a list; resumes exactly from its cursor."""

    name = "test_list"
    summary = "a list in memory"
    config_class = ListConfig
    config: ListConfig

    def check(self) -> CheckResult:
        return CheckResult(True, "always reachable")

    def streams(self) -> tuple[Stream, ...]:
        return (STREAM,)

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        start = int(state.get("next", 0))
        for i in range(start, self.config.size):
            yield RawRecord("people", {"id": str(i), "cf": CF}, f"item {i}")
            if i % 5 == 4:
                yield StateCheckpoint({"next": i + 1})
        yield StateCheckpoint({"next": max(start, self.config.size)})


class SloppyConnector(GoodConnector):
    """Resumes one record too early (duplicates) and yields an undeclared field."""

    name = "test_sloppy"

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        start = max(int(state.get("next", 0)) - 1, 0)
        for i in range(start, self.config.size):
            yield RawRecord("people", {"id": str(i), "cf": "X", "nome": "Mario"}, f"item {i}")
            if i % 5 == 4:
                yield StateCheckpoint({"next": i + 1})
        yield StateCheckpoint({"next": self.config.size})


class LeakyConnector(GoodConnector):
    """Puts the codice fiscale in the location a person reads in the quarantine."""

    name = "test_leaky"

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        for item in super().read(stream, state):
            if isinstance(item, RawRecord):
                item = RawRecord(item.stream, item.data, f"record of {CF}")
            yield item


class CFAsDataConnector(GoodConnector):
    """Declares a codice fiscale column as plain data: it would reach the registry in clear."""

    name = "test_cf_as_data"

    def streams(self) -> tuple[Stream, ...]:
        return (Stream("people", (FieldSpec("id"), FieldSpec("cf")), source_key=("id",)),)


class TypedDataConnector(GoodConnector):
    """Sets identifier_type on a DATA field, believing that makes it pseudonymised."""

    name = "test_typed_data"

    def streams(self) -> tuple[Stream, ...]:
        fields = (FieldSpec("id"), FieldSpec("tessera", identifier_type=IdentifierType.CF))
        return (Stream("people", fields, source_key=("id",)),)


class LooseConfig(ListConfig):
    model_config = ConfigDict(frozen=False, extra="ignore")
    api_token: str = "s3cret-value"


class LooseConnector(GoodConnector):
    """Mutable config that ignores unknown keys, and a token in clear."""

    name = "test_loose"
    config_class = LooseConfig


class OneCheckpointConnector(GoodConnector):
    """Only a final checkpoint: a crash always starts from scratch; resuming is untestable."""

    name = "test_one_checkpoint"

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        if not state:
            for i in range(self.config.size):
                yield RawRecord("people", {"id": str(i), "cf": CF}, f"item {i}")
        yield StateCheckpoint({"done": True})


class NoFinalCheckpointConnector(GoodConnector):
    name = "test_no_final"

    def read(self, stream: str, state: dict[str, Any]) -> Iterator[ReadItem]:
        for item in super().read(stream, state):
            if isinstance(item, RawRecord):
                yield item


def suite(connector: Connector, **kw: Any) -> Any:
    return connector_contract_tests(lambda: connector, registered=False, **kw)()


TestGoodConnector = connector_contract_tests(lambda: GoodConnector(ListConfig()), registered=False)


def test_the_suite_fails_a_sloppy_connector() -> None:
    bad = suite(SloppyConnector(ListConfig()))
    with pytest.raises(AssertionError, match=r"undeclared fields \['nome'\]"):
        bad.test_read_yields_only_contract_items()
    with pytest.raises(AssertionError, match="exactly the rest"):
        bad.test_resume_from_a_checkpoint_loses_and_repeats_nothing()
    with pytest.raises(AssertionError, match="no record"):
        bad.test_final_state_reads_nothing_new()


def test_the_suite_fails_a_connector_showing_identifiers() -> None:
    with pytest.raises(AssertionError, match="location of a record shows its cf"):
        suite(LeakyConnector(ListConfig())).test_nothing_shows_identifiers()


def test_the_suite_fails_wrong_field_declarations() -> None:
    with pytest.raises(AssertionError, match="looks like a codice fiscale"):
        suite(CFAsDataConnector(ListConfig())).test_streams_are_declared()
    with pytest.raises(AssertionError, match=r"declare it FieldRole\.IDENTIFIER"):
        suite(TypedDataConnector(ListConfig())).test_streams_are_declared()


def test_the_suite_fails_a_loose_config() -> None:
    loose = suite(LooseConnector(LooseConfig()))
    with pytest.raises(AssertionError, match="frozen"):
        loose.test_config_is_frozen_and_closed()
    with pytest.raises(AssertionError, match="api_token must be a pydantic SecretStr"):
        loose.test_secrets_are_secret()


def test_the_suite_fails_when_resuming_cannot_be_checked() -> None:
    once = suite(OneCheckpointConnector(ListConfig()))
    with pytest.raises(pytest.fail.Exception, match="resuming cannot be checked"):
        once.test_resume_from_a_checkpoint_loses_and_repeats_nothing()
    unfinished = suite(NoFinalCheckpointConnector(ListConfig()))
    with pytest.raises(AssertionError, match="must end with a StateCheckpoint"):
        unfinished.test_read_yields_only_contract_items()


def test_the_suite_stops_a_source_bigger_than_the_limit() -> None:
    big = suite(GoodConnector(ListConfig(size=11)), stream_limit=10)
    with pytest.raises(AssertionError, match="more than 10 records"):
        big.test_read_yields_only_contract_items()
    fits = suite(GoodConnector(ListConfig(size=10)), stream_limit=10)
    fits.test_read_yields_only_contract_items()


def test_the_suite_fails_an_unregistered_connector() -> None:
    registered = connector_contract_tests(lambda: GoodConnector(ListConfig()))()
    with pytest.raises(AssertionError, match="not registered"):
        registered.test_registered_through_entry_points()


CONNECTOR_INIT = """
from hub.connector import Connector
from . import helpers


class WritingConnector(Connector):
    name = "test_writing"
    summary = "imports the registry through a helper module"
"""


def test_the_suite_fails_a_connector_package_importing_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "writing_connector"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(CONNECTOR_INIT)
    (pkg / "helpers.py").write_text("from hub.registry import tables  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    module = importlib.import_module("writing_connector")
    try:
        bad = suite(module.WritingConnector(ConnectorConfig()))
        with pytest.raises(AssertionError, match=r"helpers.py imports hub.registry"):
            bad.test_never_pseudonymises_nor_writes()
        suite(GoodConnector(ListConfig())).test_never_pseudonymises_nor_writes()
    finally:
        sys.modules.pop("writing_connector.helpers", None)
        sys.modules.pop("writing_connector", None)
