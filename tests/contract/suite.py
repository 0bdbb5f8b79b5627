"""The connector contract suite (BLUEPRINT §9): every connector passes it with one line.

    TestMine = connector_contract_tests(lambda: MyConnector(MyConfig(...)))

Like the Singer SDK's ``get_tap_test_class``: the returned class holds one
test per rule of the contract.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from hub.connector import (
    CheckResult,
    Connector,
    RawRecord,
    SourceError,
    StateCheckpoint,
    UnitComplete,
)
from hub.plugins import get_plugins

FORBIDDEN_IMPORTS = ("hub.pipeline", "hub.registry", "hub.pseudonyms.pseudonymiser")
SECRET_WORDS = ("token", "password", "secret", "passphrase")


def connector_contract_tests(
    factory: Callable[[], Connector], *, stream_limit: int = 500, registered: bool = True
) -> type:
    """A pytest test class checking the connector that ``factory`` builds."""

    def read_all(conn: Connector, stream: str, state: dict[str, Any]) -> list[Any]:
        return list(itertools.islice(conn.read(stream, state), stream_limit * 10))

    class ConnectorContract:
        def test_identity(self) -> None:
            conn = factory()
            assert conn.name, "set a connector name (the `type` used in raccordo.toml)"
            assert conn.summary, "set a one-line summary (shown by `raccordo connectors list`)"
            assert conn.config_class is not None

        def test_config_is_frozen_and_closed(self) -> None:
            conn = factory()
            data = conn.config.model_dump()
            with pytest.raises(ValidationError):
                conn.config_class.model_validate({**data, "no_such_setting_xyz": 1})
            first = next(iter(type(conn.config).model_fields), None)
            if first is not None:
                with pytest.raises(ValidationError):
                    setattr(conn.config, first, getattr(conn.config, first))

        def test_secrets_are_secret(self) -> None:
            conn = factory()
            for name, f in type(conn.config).model_fields.items():
                if any(w in name.lower() for w in SECRET_WORDS):
                    assert f.annotation is not None and "SecretStr" in str(f.annotation), (
                        f"{name} must be a SecretStr"
                    )
                    value = getattr(conn.config, name)
                    if isinstance(value, SecretStr) and value.get_secret_value():
                        assert value.get_secret_value() not in repr(conn.config)

        def test_check_answers(self) -> None:
            result = factory().check()
            assert isinstance(result, CheckResult) and result.message

        def test_streams_are_declared(self) -> None:
            streams = factory().streams()
            assert streams, "a connector reads at least one stream"
            names = [s.name for s in streams]
            assert len(names) == len(set(names)), "stream names must be unique"
            for s in streams:
                fields = {f.name for f in s.fields}
                assert len(fields) == len(s.fields), f"{s.name}: duplicate field names"
                assert s.source_key and set(s.source_key) <= fields, (
                    f"{s.name}: source key fields must be declared fields"
                )

        def test_read_yields_only_contract_items(self) -> None:
            conn = factory()
            for stream in conn.streams():
                declared = {f.name for f in stream.fields}
                items = read_all(conn, stream.name, {})
                assert items, f"{stream.name}: nothing read"
                assert isinstance(items[-1], StateCheckpoint), (
                    f"{stream.name}: reading must end with a StateCheckpoint"
                )
                for item in items:
                    assert isinstance(
                        item, RawRecord | StateCheckpoint | SourceError | UnitComplete
                    ), f"unexpected item {type(item).__name__}"
                    if isinstance(item, RawRecord):
                        assert item.stream == stream.name
                        assert set(item.data) <= declared, (
                            f"undeclared fields {set(item.data) - declared}"
                        )
                        if item.key is None:
                            assert all(k in item.data for k in stream.source_key)
                        assert "data=" not in repr(item)

        def test_resume_from_a_checkpoint_loses_and_repeats_nothing(self) -> None:
            conn = factory()
            for stream in conn.streams():
                items = read_all(conn, stream.name, {})
                keys = [_key(stream.source_key, i) for i in items if isinstance(i, RawRecord)]
                cut = [n for n, i in enumerate(items) if isinstance(i, StateCheckpoint)]
                if len(cut) < 2:
                    continue  # a single final checkpoint: nothing to resume from
                mid = cut[len(cut) // 2 - 1] if len(cut) > 2 else cut[0]
                state = items[mid].state
                before = [
                    _key(stream.source_key, i) for i in items[:mid] if isinstance(i, RawRecord)
                ]
                after = [
                    _key(stream.source_key, i)
                    for i in read_all(conn, stream.name, state)
                    if isinstance(i, RawRecord)
                ]
                assert before + after == keys, "resuming must yield exactly the rest"

        def test_final_state_reads_nothing_new(self) -> None:
            conn = factory()
            for stream in conn.streams():
                items = read_all(conn, stream.name, {})
                final = items[-1].state
                again = [i for i in read_all(conn, stream.name, final) if isinstance(i, RawRecord)]
                assert again == [], "reading from the final state must yield no record"

        def test_never_pseudonymises_nor_writes(self) -> None:
            module = inspect.getmodule(type(factory()))
            assert module is not None
            tree = ast.parse(inspect.getsource(module))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for n in names:
                    assert not n.startswith(FORBIDDEN_IMPORTS), (
                        f"a connector must not import {n}: the pipeline pseudonymises and writes"
                    )

        def test_registered_through_entry_points(self) -> None:
            conn = factory()
            assert get_plugins().connectors().get(conn.name) is type(conn), (
                f"{conn.name} is not registered in the entry-point group raccordo.plugins"
            )

    if not registered:  # a connector defined inside a test module, not an installed plugin
        del ConnectorContract.test_registered_through_entry_points
    return ConnectorContract


def _key(source_key: tuple[str, ...], record: RawRecord) -> str:
    if record.key is not None:
        return record.key
    return "|".join(str(record.data.get(k, "")) for k in source_key)
