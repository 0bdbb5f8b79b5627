"""The contract suite passes a well-behaved test connector and catches a misbehaving one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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
            yield RawRecord("people", {"id": str(i), "cf": "RSSMRA80A01H501U"}, f"item {i}")
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


TestGoodConnector = connector_contract_tests(lambda: GoodConnector(ListConfig()), registered=False)


def test_the_suite_fails_a_sloppy_connector() -> None:
    suite = connector_contract_tests(lambda: SloppyConnector(ListConfig()), registered=False)()
    with pytest.raises(AssertionError, match="undeclared fields"):
        suite.test_read_yields_only_contract_items()
    with pytest.raises(AssertionError, match="exactly the rest"):
        suite.test_resume_from_a_checkpoint_loses_and_repeats_nothing()
    with pytest.raises(AssertionError, match="no record"):
        suite.test_final_state_reads_nothing_new()
    registered = connector_contract_tests(lambda: SloppyConnector(ListConfig()))()
    with pytest.raises(AssertionError, match="not registered"):
        registered.test_registered_through_entry_points()
